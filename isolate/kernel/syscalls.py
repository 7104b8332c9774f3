"""The seccomp vocabulary profiles are written in, and what it means to this kernel:
actions (parse_action, format_action), socket families, ioctl requests, the clone
flags of namespaces, and syscall names -> numbers per architecture (libseccomp's
tables, plus the syscalls newer than it on x86-64); @groups are syscall_groups.py.

The profile validates names against this; isolate.plan.seccomp compiles them."""

from __future__ import annotations

import errno as _errno
from typing import Iterable

import pyseccomp as seccomp

from . import constants
from .syscall_groups import GROUPS

# ---------------------------------------------------------------------------
# actions
# ---------------------------------------------------------------------------

_ACTION_WORDS = {
    "allow": seccomp.ALLOW,
    "kill": seccomp.KILL_PROCESS,
    "kill-process": seccomp.KILL_PROCESS,
    "kill-thread": seccomp.KILL_THREAD,
    "log": seccomp.LOG,
    "trap": seccomp.TRAP,
}

_ACCEPTED_ACTIONS = (
    "allow, kill (= kill-process), kill-process, kill-thread, log, trap, "
    "errno:NAME (e.g. errno:EPERM), errno:N (0..4095), trace:N (0..65535)"
)

_RET_ACTION_MASK = 0xFFFF0000
_RET_DATA_MASK = 0x0000FFFF
_RET_ERRNO = 0x00050000
_RET_TRACE = 0x7FF00000


def parse_action(text: str) -> int:
    """Action text -> libseccomp action value ("errno:EPERM" -> SCMP_ACT_ERRNO(1))."""
    if not isinstance(text, str):
        raise ValueError(f"invalid seccomp action {text!r}: expected a string, one of: {_ACCEPTED_ACTIONS}")
    word = text.strip().lower()
    if word in _ACTION_WORDS:
        return _ACTION_WORDS[word]
    kind, sep, arg = word.partition(":")
    arg = arg.strip()
    if sep and kind == "errno" and arg:
        if arg.isdigit():
            n = int(arg)
            if n <= 4095:
                return seccomp.ERRNO(n)
        else:
            n = getattr(_errno, arg.upper(), None)
            if isinstance(n, int) and arg.upper().startswith("E") and 0 <= n <= 4095:
                return seccomp.ERRNO(n)
    if sep and kind == "trace" and arg.isdigit() and int(arg) <= 0xFFFF:
        return seccomp.TRACE(int(arg))
    raise ValueError(f"invalid seccomp action {text!r}: expected one of: {_ACCEPTED_ACTIONS}")


def format_action(value: int) -> str:
    """libseccomp action value -> canonical text accepted by parse_action."""
    if value == seccomp.ALLOW:
        return "allow"
    if value == seccomp.KILL_PROCESS:
        return "kill-process"
    if value == seccomp.KILL_THREAD:
        return "kill-thread"
    if value == seccomp.LOG:
        return "log"
    if value == seccomp.TRAP:
        return "trap"
    data = value & _RET_DATA_MASK
    if value & _RET_ACTION_MASK == _RET_ERRNO:
        return f"errno:{_errno.errorcode.get(data, data)}"
    if value & _RET_ACTION_MASK == _RET_TRACE:
        return f"trace:{data}"
    return f"action:{value:#x}"


def severity(action: int) -> int:
    """Kernel precedence of actions for stacked filters; lower = more restrictive."""
    if action == seccomp.KILL_PROCESS:
        return 0
    if action == seccomp.KILL_THREAD:
        return 1
    kind = action & _RET_ACTION_MASK
    return {0x00030000: 2, _RET_ERRNO: 3, 0x7FC00000: 4, _RET_TRACE: 5, seccomp.LOG: 6}.get(kind, 7)


# ---------------------------------------------------------------------------
# socket families, ioctls, clone flags
# ---------------------------------------------------------------------------

# <linux/socket.h>; AF_MAX is 46 on Linux 6.18.
SOCKET_FAMILIES: dict[str, int] = {
    "unspec": 0, "unix": 1, "local": 1, "inet": 2, "ax25": 3, "ipx": 4, "appletalk": 5,
    "netrom": 6, "bridge": 7, "atmpvc": 8, "x25": 9, "inet6": 10, "rose": 11, "decnet": 12,
    "netbeui": 13, "security": 14, "key": 15, "netlink": 16, "route": 16, "packet": 17,
    "ash": 18, "econet": 19, "atmsvc": 20, "rds": 21, "sna": 22, "irda": 23, "pppox": 24,
    "wanpipe": 25, "llc": 26, "ib": 27, "mpls": 28, "can": 29, "tipc": 30, "bluetooth": 31,
    "iucv": 32, "rxrpc": 33, "isdn": 34, "phonet": 35, "ieee802154": 36, "caif": 37,
    "alg": 38, "nfc": 39, "vsock": 40, "kcm": 41, "qipcrtr": 42, "smc": 43, "xdp": 44,
    "mctp": 45,
}
AF_MAX = 46


def socket_family(name: str | int) -> int:
    """"inet6" / "AF_INET6" / "af_inet6" / 10 -> 10; ValueError otherwise."""
    if isinstance(name, int) and not isinstance(name, bool):
        if 0 <= name <= 0xFFFF:
            return name
        raise ValueError(f"socket family number {name} out of range")
    if isinstance(name, str):
        key = name.strip().lower()
        if key.startswith("af_"):
            key = key[3:]
        if key in SOCKET_FAMILIES:
            return SOCKET_FAMILIES[key]
    known = ", ".join(sorted(SOCKET_FAMILIES))
    raise ValueError(f"unknown socket family {name!r} (known: {known})")


# ioctl request numbers (x86-64 / asm-generic values).
IOCTLS: dict[str, int] = {
    "TCGETS": 0x5401,
    "TCSETS": 0x5402,
    "TIOCSCTTY": 0x540E,
    "TIOCSPGRP": 0x5410,
    "TIOCSTI": 0x5412,        # push a byte into a terminal's input queue
    "TIOCGWINSZ": 0x5413,
    "TIOCSWINSZ": 0x5414,
    "FIONREAD": 0x541B,
    "TIOCLINUX": 0x541C,      # console ioctls, incl. selection paste (TIOCL_PASTESEL)
    "TIOCCONS": 0x541D,       # redirect console output
    "FIONBIO": 0x5421,
    "TIOCNOTTY": 0x5422,
    "TIOCSETD": 0x5423,       # set line discipline
    "TIOCSSERIAL": 0x541F,    # set a serial line's port, IRQ, divisor, ...
    "TIOCVHANGUP": 0x5437,    # hang up the terminal (vhangup() on one fd)
    "FIONCLEX": 0x5450,
    "FIOCLEX": 0x5451,
    "TIOCSIG": 0x40045436,
    "FICLONE": 0x40049409,
}


def ioctl_request(item: str | int) -> int:
    """IOCTLS name or number -> the 32-bit request number; ValueError otherwise."""
    if isinstance(item, int) and not isinstance(item, bool):
        if 0 <= item <= 0xFFFFFFFF:
            return item
        raise ValueError(f"ioctl request {item:#x} out of range (the kernel uses 32 bits)")
    if isinstance(item, str) and item.strip().upper() in IOCTLS:
        return IOCTLS[item.strip().upper()]
    raise ValueError(f"unknown ioctl {item!r} (known: {', '.join(sorted(IOCTLS))}, or a number)")


# <linux/sched.h>.  CLONE_NEWTIME (0x80) overlaps the exit-signal byte of clone(2);
# no valid signal has that bit, so denying it there costs nothing.
CLONE_NAMESPACE_FLAGS: dict[str, int] = {
    name: getattr(constants, name) for name in (
        "CLONE_NEWTIME", "CLONE_NEWNS", "CLONE_NEWCGROUP", "CLONE_NEWUTS", "CLONE_NEWIPC", "CLONE_NEWUSER",
        "CLONE_NEWPID", "CLONE_NEWNET")
}

# ---------------------------------------------------------------------------
# syscall names
# ---------------------------------------------------------------------------

# Syscalls newer than libseccomp 2.5.4 (it resolves them to -1).  Their x86-64
# numbers (arch/x86/entry/syscalls/syscall_64.tbl) are used when compiling for
# x86-64, so that e.g. denying @mount also covers open_tree_attr on new kernels.
EXTRA_X86_64_SYSCALLS: dict[str, int] = {
    "uretprobe": 335,
    "statmount": 457,
    "listmount": 458,
    "lsm_get_self_attr": 459,
    "lsm_set_self_attr": 460,
    "lsm_list_modules": 461,
    "mseal": 462,
    "setxattrat": 463,
    "getxattrat": 464,
    "listxattrat": 465,
    "removexattrat": 466,
    "open_tree_attr": 467,
    "file_getattr": 468,
    "file_setattr": 469,
}

NATIVE_ARCH = seccomp.system_arch()
_OTHER_ARCHES = (seccomp.Arch.X86_64, seccomp.Arch.X86, seccomp.Arch.AARCH64, seccomp.Arch.ARM)
_SCMP_ERROR = -1


def _resolve(arch: int, name: str) -> int:
    try:
        return int(seccomp.resolve_syscall(arch, name))
    except Exception:  # pragma: no cover - defensive (odd names, ctypes errors)
        return _SCMP_ERROR


def native_nr(name: str) -> int | None:
    """Syscall number on the native arch, or None if it has none here."""
    nr = _resolve(seccomp.Arch.NATIVE, name)
    if nr >= 0:
        return nr
    if nr == _SCMP_ERROR and NATIVE_ARCH == seccomp.Arch.X86_64:
        return EXTRA_X86_64_SYSCALLS.get(name)
    return None  # pseudo-number: known to libseccomp, absent on this arch


def _known_anywhere(name: str) -> bool:
    nr = _resolve(seccomp.Arch.NATIVE, name)
    if nr >= 0 or name in EXTRA_X86_64_SYSCALLS:
        return True
    # Negative on native: not a syscall here.  libseccomp answers a pseudo-number
    # (<= -10000) for names it knows from other architectures, -1 for unknown ones;
    # ask a few other architectures too, to be sure.
    return nr != _SCMP_ERROR or any(_resolve(arch, name) >= 0 for arch in _OTHER_ARCHES)


def check_syscall_name(name: str) -> None:
    """Accept a syscall name libseccomp knows on some architecture, or a known "@group"."""
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"invalid syscall name {name!r}")
    if name.startswith("@"):
        if name not in GROUPS:
            raise ValueError(f"unknown syscall group {name!r} (known: {', '.join(sorted(GROUPS))})")
        return
    if not _known_anywhere(name):
        raise ValueError(f"unknown syscall {name!r}")


def expand(names: Iterable[str]) -> list[str]:
    """Expand "@groups" recursively; sorted, unique plain names.  Unknown groups: ValueError."""
    if isinstance(names, str):
        names = [names]
    out: set[str] = set()
    seen: set[str] = set()

    def walk(item: str) -> None:
        if item.startswith("@"):
            if item not in GROUPS:
                check_syscall_name(item)  # raises with the list of known groups
            if item in seen:
                return
            seen.add(item)
            for member in GROUPS[item]:
                walk(member)
        else:
            out.add(item)

    for name in names:
        if not isinstance(name, str):
            raise ValueError(f"invalid syscall name {name!r}")
        walk(name)
    return sorted(out)


def native_syscalls(names: Iterable[str]) -> dict[int, str]:
    """names/groups -> {native nr: name}.  Explicit unknown names raise; members of
    groups that libseccomp does not know, and anything absent on this arch, are skipped."""
    result: dict[int, str] = {}
    for name in names:
        check_syscall_name(name)
        members = expand([name]) if name.startswith("@") else [name]
        for member in members:
            nr = native_nr(member)
            if nr is not None:
                result.setdefault(nr, member)
    return result
