"""Host ids reserved for sandboxed programs started by root.

When the caller is root and the profile does not map ids itself, the program must not
be host root (it would own every root-owned host inode the view binds in). It runs as
an unprivileged host uid/gid from this range instead. No host account may use it:
`isolate doctor` checks /etc/passwd, /etc/group and /etc/sub{u,g}id against it.

The range sits in 0x70000000-0x7fffffff, which systemd's uid conventions leave unused
(below 2^31, so no signedness trouble; above the container ranges nspawn hands out;
outside systemd's "foreign" range 0x7ffe0000-0x7ffeffff).
"""

from __future__ import annotations

BASE = 2_000_000_000   # first reserved host uid (and gid)
COUNT = 65536          # how many: one per sandbox running at once
