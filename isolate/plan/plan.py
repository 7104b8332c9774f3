"""The Plan: a compiled profile, ready to launch many times (isolate.plan.compile makes
one; isolate.launch.plans adds the kernel objects it holds and caches it), and what
its fd table needs of RLIMIT_NOFILE."""

from __future__ import annotations

import dataclasses
import fnmatch
import os
import types
from typing import Mapping

from ..errors import ProfileError
from ..kernel.constants import RLIM_INFINITY, RLIMIT_NOFILE


@dataclasses.dataclass(frozen=True, eq=False)
class Plan:
    """A compiled profile, ready to launch many times."""

    key: str                      # cache key: profile hash + caller-dependent inputs
    profile_name: str
    profile_hash: str
    clone_flags: int
    use_init: bool
    pidns: bool
    die_with_parent: bool
    uid_map: str | None
    gid_map: str | None
    inside_uid: int
    inside_gid: int
    hostname: str | None
    rlimits: tuple                # ((resource, soft, hard), ...)
    keep_caps: tuple
    cwd: str
    env_clear: bool
    env_set: tuple                # ((name, value), ...)
    env_keep: tuple               # names or globs
    stdio: tuple                  # (stdin, stdout, stderr) profile values
    pass_fds: tuple
    bpf: bytes | None
    mount_ops: tuple
    capsule: object = dataclasses.field(repr=False)
    bpf_fd: int = -1              # sealed memfd holding bpf, for the sandbox's pid 1
    netns_fd: int = -1            # network namespace joined around the clone (mode "netns")
    mntns_fd: int = -1            # template mount namespace the launcher joins around the clone
    # With a view template (mntns_fd is the view itself, plan.fs.view_template): the launch
    # child's plan that makes only what each launch needs, and per op of it the index of
    # the mount_ops entry it comes from (for op fds and error messages). None: no view template.
    view_capsule: object = dataclasses.field(default=None, repr=False)
    view_index: tuple = ()
    # Root caller without identity.uid_map/gid_map: the program runs as a host uid/gid of
    # its own (hostids.allocate per launch), mapped "inside_uid S 1" / "inside_gid S 1".
    host_ids: bool = False
    idmap_binds: tuple = ()       # ((op index, host source, why it cannot be idmapped or ""), ...)
    network_mode: str = "none"
    netns_pool: bool = False       # take the namespace from net.pool() at launch
    enforcement: str = "namespaces"  # how the filesystem view is enforced
    landlock_rules: tuple = ()
    # [cgroup]: the limits set ({"memory_max": bytes, "pids_max": n}, only the set keys),
    # how they are enforced ("v2" | "v1" | "rlimits" | None = no limits) and, for
    # v2/v1, controller -> the directory whose isolate/ subdirectory holds the cgroups.
    cgroup: Mapping = dataclasses.field(default_factory=lambda: types.MappingProxyType({}))
    cgroup_mode: str | None = None
    cgroup_dirs: tuple = ()
    pty: bool = False             # fds.pty: 0/1/2 are a fresh pty, the program's controlling terminal
    shell: str = "/bin/sh"        # process.shell: what Popen(shell=True) runs as SHELL -c COMMAND

    def environment(self, caller_env: Mapping[str, str] | None = None, extra: Mapping[str, str] | None = None) -> dict:
        """The program's environment: cleared (or the caller's), + kept names, + set, + extra."""
        caller_env = os.environ if caller_env is None else caller_env
        env = {} if self.env_clear else dict(caller_env)
        for pattern in self.env_keep:
            if not any(c in pattern for c in "*?["):  # a plain name: one lookup, not a scan
                if pattern in caller_env:
                    env[pattern] = caller_env[pattern]
                continue
            for name, value in caller_env.items():
                if fnmatch.fnmatchcase(name, pattern):
                    env[name] = value
        env.update(self.env_set)
        if extra:
            env.update(extra)
        return env

    def __del__(self):
        for fd in (self.bpf_fd, self.netns_fd, self.mntns_fd):
            if fd >= 0:
                try:
                    os.close(fd)
                except OSError:
                    pass


def nofile_needed(plan: "Plan", pass_fds=(), warm: bool = False) -> int:
    """The lowest RLIMIT_NOFILE soft limit with which a launch of `plan` can start a
    program whose fd table is 0, 1, 2 and `pass_fds` (0 = no constraint).

    The limit is set in the launch child after the program's table and the private
    fds are in place (at fixed slots right after the table, PRIV_* in _launch.c);
    what has to be opened after that must get a number below it. Every new fd takes
    the lowest free number, so this replays those allocations:
      * the launch child (with Landlock): the ruleset and one O_PATH fd at a time;
      * isolate-init: its signalfd and the pipe to the program (the seccomp memfd is
        closed by then, its own binary's fd closed by its exec);
      * a warm isolate-init (the table arrives with the task, under the limit): the
        received fds, its own fds moved above the table, the table itself, the pipe.
    """
    fds = {0, 1, 2} | {int(f) for f in pass_fds}
    top = max(fds) + 1
    held: set = set()
    high = [0]

    def alloc(lowest: int = 0) -> int:
        fd = lowest
        while fd in held:
            fd += 1
        held.add(fd)
        high[0] = max(high[0], fd + 1)
        return fd

    cgroup_fd = plan.use_init and not plan.pidns and plan.die_with_parent and plan.cgroup_mode in ("v1", "v2")
    landlock = plan.enforcement != "namespaces"

    def start(table: set, first: int) -> dict:
        """The table after the launch child's fd step, and the private slots in use."""
        held.clear()
        held.update(table)
        slots = {"status": first}
        if plan.use_init:
            slots.update(init=first + 4)
            if plan.die_with_parent:
                slots["pidfd"] = first + 1
            if plan.bpf_fd >= 0:
                slots["bpf"] = first + 2
            if cgroup_fd:
                slots["cgroup"] = first + 3
        held.update(slots.values())
        return slots

    def child_and_init_start(table: set, first: int) -> dict:
        slots = start(table, first)
        if landlock:  # in the launch child, after its rlimits
            rs = alloc()
            held.discard(alloc())
            held.discard(rs)
        if plan.use_init:  # isolate-init's exec closed its binary's fd; it reads and closes the memfd
            held.discard(slots.pop("init"))
            held.discard(slots.pop("bpf", -1))
        return slots

    if not warm:
        high[0] = 0
        child_and_init_start(fds, top)
        if plan.use_init:
            alloc(), alloc(), alloc()  # signalfd, pipe2
        return high[0]
    # Warm: launched with the table 0, 1, 2 (the task socket, /dev/null); the task's
    # own table is laid out later by isolate-init, under the limit.
    slots = child_and_init_start({0, 1, 2}, 3)
    own = [slots[k] for k in ("status", "cgroup", "pidfd") if k in slots]
    own.append(alloc())  # signalfd
    received = [alloc() for _ in fds]
    for fd in own + received:  # move_up(fd, top): a copy at >= top, then the old one goes
        alloc(top)
        held.discard(fd)
    for fd in list(held):
        if fd < top:
            held.discard(fd)
    held.update(fds)
    high[0] = max(high[0], top)  # dup2 onto the table's numbers
    alloc(), alloc()  # pipe2
    return high[0]


def check_nofile(plan: "Plan", pass_fds=(), warm: bool = False, file=None, what: str = "") -> None:
    """ProfileError naming rlimits.nofile when its soft limit is below nofile_needed()."""
    soft = next((s for r, s, _h in plan.rlimits if r == RLIMIT_NOFILE), None)
    if soft is None or soft == RLIM_INFINITY or soft < 0:
        return
    need = nofile_needed(plan, pass_fds, warm)
    if soft >= need:
        return
    passed = sorted({int(f) for f in pass_fds})
    table = "0-2" + (f" and {', '.join(map(str, passed))}" if passed else "")
    init = " plus isolate-init's private fds" if plan.use_init else " plus the status pipe"
    raise ProfileError(f"{soft} is below what the launch needs: at least {need} (the program's fds {table}{init}"
                       f"{', in a warm sandbox' if warm else ''}){what}", file=file, key="rlimits.nofile")
