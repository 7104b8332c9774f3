"""Refusals of the profile's seccomp filter, reported by isolate-agentd with their arguments.

A session whose plan allows it runs with the filter's notify variant
(isolate.kernel.seccomp_notify): each call the profile refuses with an errno is
handed to isolate-agentd, which answers it with that errno and reports it (R_DENIED)
with the call's arguments. The report names the argument that decided where one did:
the socket family, the ioctl request, the namespace flags, the mode bits.

The notifications are answered by a process of agentd's (its parent, not dumpable: the
session's processes can take neither its fds nor its memory), itself under the filter:
`usable(plan)` is True only when the filter lets every call that process, and agentd
before it, makes (AGENTD_CALLS, with the arguments they use) through; otherwise the
session keeps the audit-record path (no arguments).
"""

from __future__ import annotations

import errno as errno_mod
import fcntl
import signal
import struct
import threading
import weakref

from ..kernel import seccomp_notify as sn
from ..kernel.syscalls import CLONE_NAMESPACE_FLAGS, IOCTLS, SOCKET_FAMILIES, native_nr

# struct after struct amsg: u32 arch, u32 pad, u64 args[6], char comm[16] (_agentd.c)
PAYLOAD = struct.Struct("=II6Q16s")

_SECCOMP_IOCTL_NOTIF_RECV = 0xC0502100
_SECCOMP_IOCTL_NOTIF_SEND = 0xC0182101
_SECCOMP_IOCTL_NOTIF_ID_VALID = 0x40082102
_F_DUPFD_CLOEXEC = 1030

# The calls made under the filter before anyone answers its notifications, and by the
# one process that answers them (they would wait for themselves), with the arguments that
# matter to a filter: isolate-init's program process after loading the filter, agentd's
# start until it forks the notifier (_agentd.c main), agentd after the fork (before the
# notifier could be gone), and the notifier itself (notifier, on_notify, report_connect).
AGENTD_CALLS = (
    # isolate-init's program process: the listener kept across the exec, the exec, its error
    ("fcntl", (0, fcntl.F_SETFD, 0)), ("execve", ()), ("write", ()), ("exit_group", ()),
    # agentd's start (musl): the program fd, the listener found in /proc/self/fd, the fork
    ("arch_prctl", (0x1002,)), ("set_tid_address", ()), ("close", ()), ("fstat", ()), ("brk", ()),
    ("mmap", ()), ("pread64", ()), ("open", ()), ("fcntl", (0, fcntl.F_SETFD, fcntl.FD_CLOEXEC)),
    ("getdents64", ()), ("readlink", ()), ("fcntl", (0, _F_DUPFD_CLOEXEC, 266)), ("getpid", ()),
    ("rt_sigprocmask", ()), ("fork", ()),
    # agentd after the fork
    ("prctl", (1, signal.SIGKILL)), ("getppid", ()),
    # the notifier
    ("pidfd_open", ()), ("fcntl", (0, _F_DUPFD_CLOEXEC, 100)), ("prctl", (4, 0)), ("dup2", ()),
    ("close_range", ()), ("poll", ()), ("ioctl", (3, _SECCOMP_IOCTL_NOTIF_RECV)),
    ("ioctl", (3, _SECCOMP_IOCTL_NOTIF_SEND)), ("ioctl", (3, _SECCOMP_IOCTL_NOTIF_ID_VALID)), ("read", ()),
    ("sendto", (0, 0, 0, 0x4000)), ("kill", ()),
)

_usable: dict = {}
_lock = threading.Lock()


def usable(plan) -> bool:
    """Can sessions of `plan` run with the notify variant of its filter (see the module doc)?"""
    key = id(plan)
    ok = _usable.get(key)
    if ok is None:
        ok = _check(plan)
        with _lock:
            if key not in _usable:
                _usable[key] = ok
                weakref.finalize(plan, _usable.pop, key, None)
    return ok


def _check(plan) -> bool:
    if not plan.bpf or not plan.use_init:
        return False
    try:
        sn.notify_variant(plan.bpf)
    except ValueError:
        return False
    for name, args in AGENTD_CALLS:
        nr = native_nr(name)
        if nr is None:
            continue
        if sn.evaluate(plan.bpf, nr, args) & sn.RET_ACTION != sn.RET_ALLOW:
            return False
    return True


_FAMILIES = {v: k for k, v in reversed(list(SOCKET_FAMILIES.items()))}
_IOCTLS = {v: k for k, v in IOCTLS.items()}
_ERRNO_RESULT = "an error"


def _flags(value: int, names: dict) -> str:
    set_ = [n for n, bit in names.items() if value & bit == bit]
    return "|".join(set_) if set_ else "0"


def argument(name: str, args) -> str | None:
    """The argument that decides this syscall's refusal in isolate's filters, as text."""
    a = list(args) + [0] * 6
    if name in ("socket", "socketpair"):
        fam = a[0] & 0xFFFFFFFF
        kind = a[1] & 0xF
        label = _FAMILIES.get(fam)
        what = f"AF_{label.upper()}" if label else str(fam)
        types = {1: "SOCK_STREAM", 2: "SOCK_DGRAM", 3: "SOCK_RAW", 5: "SOCK_SEQPACKET"}
        return f"family {what} ({fam}), type {types.get(kind, kind)}"
    if name == "ioctl":
        req = a[1] & 0xFFFFFFFF
        label = _IOCTLS.get(req)
        return f"request {label} ({req:#x})" if label else f"request {req:#x}"
    if name in ("clone", "unshare"):
        return f"flags {_flags(a[0], CLONE_NAMESPACE_FLAGS)}" if a[0] & sum(CLONE_NAMESPACE_FLAGS.values()) \
            else f"flags {a[0]:#x}"
    if name == "setns":
        return f"namespace type {_flags(a[1], CLONE_NAMESPACE_FLAGS) if a[1] else '0 (any)'}"
    if name in ("chmod", "fchmod"):
        return f"mode {a[1] & 0o7777:#o}"
    if name in ("fchmodat", "fchmodat2"):
        return f"mode {a[2] & 0o7777:#o}"
    if name in ("prctl", "personality"):
        return f"option {a[0]}" if name == "prctl" else f"persona {a[0]:#x}"
    return None


def event(syscall_name, pid: int, nr: int, ret: int, payload: bytes, labels: dict) -> dict:
    """The violation of one R_DENIED report (the same keys as an audit-record one, and
    `errno`, `args` and, where one decided, `argument`)."""
    arch, _pad, *rest = PAYLOAD.unpack_from(payload)
    args, comm = rest[:6], rest[6].split(b"\0", 1)[0].decode("utf-8", "replace")
    ret &= 0xFFFFFFFF
    name = syscall_name(nr) if arch == sn.AUDIT_ARCH_X86_64 else f"syscall {nr} (arch {arch:#x})"
    ev = {"kind": "syscall", "syscall": name, "program": comm or "?", "pid": pid,
          "reason": labels.get(name, "denied by the profile's seccomp filter"), "args": [hex(x) for x in args]}
    if ret & sn.RET_ACTION == sn.RET_ERRNO:
        e = ret & sn.RET_DATA
        ev["result"] = _ERRNO_RESULT
        ev["errno"] = errno_mod.errorcode.get(e, str(e))
    else:
        ev["result"] = "killed"
    arg = argument(name, args) if arch == sn.AUDIT_ARCH_X86_64 else None
    if arg is not None:
        ev["argument"] = arg
    return ev

