"""The host ids reserved for sandboxed programs started by root (see isolate.launch.hostids,
which hands them out per launch).

The range sits in 0x70000000-0x7fffffff, which systemd's uid conventions leave unused
(below 2^31, so no signedness trouble; above the container ranges nspawn hands out;
outside systemd's "foreign" range 0x7ffe0000-0x7ffeffff).
"""

BASE = 2_000_000_000   # first reserved host uid (and gid)
COUNT = 65536          # how many: one per sandbox running at once
# The first two are the static ids of Landlock modes (compile._base_map maps a root
# caller's program to BASE, and inside uid 0 to BASE + 1 where it is not the program's):
# never handed out per launch, so no allocated sandbox shares them.
SHARED = frozenset({BASE, BASE + 1})
