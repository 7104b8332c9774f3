"""Seccomp: syscall names, systemd-style groups and actions -> BPF bytes via libseccomp.

CONTRACT (other modules code against these names; keep the signatures):

    parse_action(text) -> int          libseccomp action value; ValueError on bad text
    check_syscall_name(name) -> None   name or "@group"; ValueError naming it otherwise
    expand(names) -> list[str]         groups expanded, sorted, unique
    compile_filter(spec) -> bytes      BPF program (array of struct sock_filter)
    describe(spec) -> str              readable form of the same filter

`spec` is the normalized [seccomp] section of a profile (see isolate/profile.py).

Also public: SOCKET_FAMILIES, IOCTLS, CLONE_NAMESPACE_FLAGS, EXTRA_X86_64_SYSCALLS,
format_action(value) -> str, socket_family(name) -> int, ioctl_request(item) -> int,
CACHE (compile results by spec).

Docker / OCI seccomp profiles (JSON; see the section at the end of this file):
    load_oci(path) / parse_oci(bytes, path) -> OciProfile   ProfileError naming the file
                                       and the JSON path ("syscalls[12].action")
    oci_translate(profile, caps) -> (default_action, allow, rules)
    oci_spec(spec, caps, ctx, file) -> spec   `oci` replaced by what the file says
    oci_digest(spec, ctx) -> sha256 of the file now (for caches keyed on the profile)
A spec with `oci` set may also be given to compile_filter/describe directly (no
capabilities kept then).  With an OCI profile, `socket_families` only denies.

Semantics of a compiled filter, per syscall made through the native ABI:

  1. the syscall is in `deny` (after group expansion): `deny_action`, whatever its
     arguments (argument rules for it are ignored);
  2. otherwise, if argument rules exist for it (`rules`, `socket_families`,
     `deny_ioctls`, `deny_namespace_flags`, `restrict_suid_sgid`) and the
     conditions of at least one match: that rule's action.  When several match,
     the most restrictive action wins, in the kernel's order for stacked filters
     (kill-process > kill-thread > trap > errno > trace > log > allow); between
     equally restrictive actions the rule listed first wins (user `rules` first,
     then namespace flags, ioctls, socket families, restrict_suid_sgid);
  3. otherwise ALLOW if the syscall is in `allow`;
  4. otherwise `default_action`.
  Syscalls made through another ABI (x86 `int 0x80`, x32) get `other_arches`.

libseccomp cannot express that directly: it drops every conditional rule of a
syscall that also has an unconditional one, keeps only the shorter of two rules
when one's comparisons extend the other's, refuses two rules with identical
comparisons but different actions (EEXIST), refuses two comparisons of the same
argument in one rule (EINVAL), and refuses rules whose action is the default
action (EACCES).  So the compiler below computes, per syscall, the exact region
of argument space that gets each action (disjoint unions of per-argument ranges
and mask/value "cubes") and hands libseccomp only rules whose regions do not
overlap unless their actions are equal, never an unconditional rule next to
conditional ones of another action, and never a rule for the default action.

libseccomp 2.5.4 also has bugs of its own here (an endless loop and lost rules
with range comparisons followed by further arguments, a wrong jump in its binary
tree mode; see _NATIVE_NOTE and _generate).  Every program is therefore checked
by symbolic execution against the computed regions before it is returned
(_verify), and regenerated in a more conservative form if the check fails.
"""

from __future__ import annotations

import errno as _errno
import io
import json
import os
import select
import signal
import struct
import tempfile
import time
from dataclasses import dataclass, field
from typing import Iterable

import pyseccomp as seccomp

from .plan import compile as _compile  # the CLONE_NEW* constants live there
from .syscall_groups import DESCRIPTIONS as GROUP_DESCRIPTIONS
from .syscall_groups import GROUPS

__all__ = [
    "CACHE",
    "CLONE_NAMESPACE_FLAGS",
    "EXTRA_X86_64_SYSCALLS",
    "GROUPS",
    "GROUP_DESCRIPTIONS",
    "IOCTLS",
    "OCI_ACTIONS",
    "OCI_ARCHES",
    "OCI_FLAGS",
    "OCI_OPS",
    "OciEntry",
    "OciProfile",
    "SOCKET_FAMILIES",
    "arch_names",
    "check_syscall_name",
    "compile_filter",
    "describe",
    "expand",
    "format_action",
    "ioctl_request",
    "load_oci",
    "oci_digest",
    "oci_included",
    "oci_spec",
    "oci_translate",
    "parse_action",
    "parse_oci",
    "read_oci_file",
    "socket_family",
]

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


def _severity(action: int) -> int:
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
    name: getattr(_compile, name) for name in (
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

_NATIVE_ARCH = seccomp.system_arch()
_OTHER_ARCHES = (seccomp.Arch.X86_64, seccomp.Arch.X86, seccomp.Arch.AARCH64, seccomp.Arch.ARM)
_SCMP_ERROR = -1


def _resolve(arch: int, name: str) -> int:
    try:
        return int(seccomp.resolve_syscall(arch, name))
    except Exception:  # pragma: no cover - defensive (odd names, ctypes errors)
        return _SCMP_ERROR


def _native_nr(name: str) -> int | None:
    """Syscall number on the native arch, or None if it has none here."""
    nr = _resolve(seccomp.Arch.NATIVE, name)
    if nr >= 0:
        return nr
    if nr == _SCMP_ERROR and _NATIVE_ARCH == seccomp.Arch.X86_64:
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


def _native_syscalls(names: Iterable[str]) -> dict[int, str]:
    """names/groups -> {native nr: name}.  Explicit unknown names raise; members of
    groups that libseccomp does not know, and anything absent on this arch, are skipped."""
    result: dict[int, str] = {}
    for name in names:
        check_syscall_name(name)
        members = expand([name]) if name.startswith("@") else [name]
        for member in members:
            nr = _native_nr(member)
            if nr is not None:
                result.setdefault(nr, member)
    return result


# ---------------------------------------------------------------------------
# argument-space algebra
#
# A region of the six-argument space is a list of *terms* (their union); a term is
# a tuple of six argument sets (their product); an argument set is a list of
# disjoint *atoms* over 0..2**64-1, each expressible as one libseccomp
# comparison, or a few for a bounded range:
#     ("r", lo, hi)     lo <= x <= hi     (EQ, LE, GE, NE for two ranges around a
#                                          hole; else MASKED_EQ per aligned block)
#     ("c", mask, val)  x & mask == val   (MASKED_EQ)
# ---------------------------------------------------------------------------

_U64 = (1 << 64) - 1
_U32 = 0xFFFFFFFF
_MAX_RULES = 1024          # libseccomp rules for one syscall
_MAX_PIECES = 20000        # intermediate atoms/terms while computing one syscall

Atom = tuple[str, int, int]
ArgSet = list[Atom]
Term = tuple[ArgSet, ...]

_FULL: Atom = ("r", 0, _U64)
_ALL: ArgSet = [_FULL]
_EVERYTHING: Term = (_ALL,) * 6

_OPS = {
    "eq": seccomp.EQ, "ne": seccomp.NE, "lt": seccomp.LT, "le": seccomp.LE,
    "gt": seccomp.GT, "ge": seccomp.GE, "masked_eq": seccomp.MASKED_EQ,
}


class _TooComplex(Exception):
    pass


def _cube(mask: int, value: int) -> Atom:
    if mask == 0:
        return _FULL
    if mask == _U64:
        return ("r", value, value)
    return ("c", mask, value)


def _blocks(lo: int, hi: int) -> list[tuple[int, int]]:
    """lo..hi as aligned power-of-two blocks (mask, value); at most 128."""
    out = []
    while lo <= hi:
        size = lo & -lo if lo else 1 << 64
        while lo + size - 1 > hi:
            size >>= 1
        out.append((_U64 & ~(size - 1), lo))
        lo += size
    return out


def _cube_isect(a: tuple[int, int], b: tuple[int, int]) -> tuple[int, int] | None:
    (ma, va), (mb, vb) = a, b
    if (va ^ vb) & ma & mb:
        return None
    return (ma | mb, va | vb)


def _cube_minus(a: tuple[int, int], b: tuple[int, int]) -> list[tuple[int, int]]:
    """a - b as disjoint cubes, one per bit that b fixes and a does not (high bits first)."""
    (ma, va), (mb, vb) = a, b
    if (va ^ vb) & ma & mb:
        return [a]
    free = mb & ~ma
    out = []
    m, v = ma, va
    while free:
        bit = 1 << (free.bit_length() - 1)
        free ^= bit
        out.append((m | bit, v | (~vb & bit)))
        m |= bit
        v |= vb & bit
    return out


def _cube_in_range(mask: int, value: int, lo: int, hi: int) -> list[tuple[int, int]]:
    """The cube ∩ lo..hi as few disjoint cubes.  Ordered by value, a cube's members are
    its free bits counting up, so the intersection is an interval of that count and
    splits into at most two aligned blocks per free bit (as in a segment tree)."""
    out = []
    todo = [(mask, value)]
    while todo:
        m, v = todo.pop()
        top = v | (~m & _U64)
        if top < lo or v > hi:
            continue
        if lo <= v and top <= hi:
            out.append((m, v))
            continue
        bit = 1 << ((~m & _U64).bit_length() - 1)
        todo.append((m | bit, v | bit))
        todo.append((m | bit, v))
    return out


def _atom_isect(a: Atom, b: Atom) -> ArgSet:
    if a[0] == "r" and b[0] == "r":
        lo, hi = max(a[1], b[1]), min(a[2], b[2])
        return [("r", lo, hi)] if lo <= hi else []
    if a == _FULL:
        return [b]
    if b == _FULL:
        return [a]
    if a[0] == "c" and b[0] == "c":
        z = _cube_isect((a[1], a[2]), (b[1], b[2]))
        return [_cube(*z)] if z is not None else []
    c, r = (a, b) if a[0] == "c" else (b, a)
    return [_cube(*z) for z in _cube_in_range(c[1], c[2], r[1], r[2])]


def _atom_minus(a: Atom, b: Atom) -> ArgSet:
    if not _atoms_meet(a, b):
        return [a]
    if a[0] == "r" and b[0] == "r":
        out = []
        if a[1] < b[1]:
            out.append(("r", a[1], b[1] - 1))
        if b[2] < a[2]:
            out.append(("r", b[2] + 1, a[2]))
        return out
    if b == _FULL:
        return []
    if b[0] == "r":
        # a (a cube) outside the range b
        return [z for r in _atom_minus(_FULL, b) for z in _atom_isect(a, r)]
    if a[0] == "c":
        return [_cube(*z) for z in _cube_minus((a[1], a[2]), (b[1], b[2]))]
    # a range minus a cube: the range ∩ (the complement of b, as cubes)
    rest = _cube_minus((0, 0), (b[1], b[2]))
    return [z for c in rest for z in _atom_isect(a, _cube(*c))]


def _check(n: int) -> None:
    if n > _MAX_PIECES:
        raise _TooComplex


def _simplify(s: ArgSet) -> ArgSet:
    """Same set, fewer atoms: aligned-block cubes become ranges, touching ranges
    join, and cubes that differ in one fixed bit merge."""
    ranges: list[tuple[int, int]] = []
    cubes: set[tuple[int, int]] = set()
    for a in s:
        if a[0] == "r":
            ranges.append((a[1], a[2]))
        else:
            low = ~a[1] & _U64
            if low & (low + 1) == 0:  # mask = bits k..63: the block value..value+low
                ranges.append((a[2], a[2] | low))
            else:
                cubes.add((a[1], a[2]))
    merged = True
    while merged and len(cubes) > 1:
        merged = False
        for m, v in sorted(cubes):
            bits = m
            while bits:
                bit = bits & -bits
                bits ^= bit
                other = (m, v ^ bit)
                if other in cubes and (m, v) in cubes:
                    cubes.discard(other)
                    cubes.discard((m, v))
                    cubes.add((m & ~bit, v & ~bit))
                    merged = True
                    break
    out: ArgSet = []
    for lo, hi in sorted(ranges):
        if out and lo <= out[-1][2] + 1:
            out[-1] = ("r", out[-1][1], max(out[-1][2], hi))
        else:
            out.append(("r", lo, hi))
    out.extend(_cube(m, v) for m, v in sorted(cubes))
    return out


def _set_isect(a: ArgSet, b: ArgSet) -> ArgSet:
    if b == _ALL:
        return a
    if a == _ALL:
        return b
    out = [z for x in a for y in b for z in _atom_isect(x, y)]
    _check(len(out))
    return _simplify(out)


def _set_minus(a: ArgSet, b: ArgSet) -> ArgSet:
    for y in b:
        a = [z for x in a for z in _atom_minus(x, y)]
        _check(len(a))
    return _simplify(a)


def _cube_range_meets(mask: int, value: int, lo: int, hi: int) -> bool:
    """Is there x with x & mask == value and lo <= x <= hi?"""
    todo = [(mask, value)]
    while todo:
        m, v = todo.pop()
        top = v | (~m & _U64)
        if top < lo or v > hi:
            continue
        if lo <= v or top <= hi:  # its smallest or its largest member is in the range
            return True
        bit = 1 << ((~m & _U64).bit_length() - 1)
        todo.append((m | bit, v | bit))
        todo.append((m | bit, v))
    return False


def _atoms_meet(a: Atom, b: Atom) -> bool:
    if a[0] == "r" and b[0] == "r":
        return max(a[1], b[1]) <= min(a[2], b[2])
    if a[0] == "c" and b[0] == "c":
        return not (a[2] ^ b[2]) & a[1] & b[1]
    c, r = (a, b) if a[0] == "c" else (b, a)
    return _cube_range_meets(c[1], c[2], r[1], r[2])


def _terms_meet(t: Term, r: Term) -> bool:
    for x, y in zip(t, r):
        if x is y or y == _ALL or x == _ALL:
            continue
        if not any(_atoms_meet(a, b) for a in x for b in y):
            return False
    return True


def _term_minus(t: Term, r: Term) -> list[Term]:
    """t - r as disjoint terms: for each argument k that r constrains, the part of t
    that fails r on k and satisfies it on the arguments after k.  (Going from the last
    argument down puts the complements, which take more atoms, on high arguments,
    where _argset_comparisons can use NE/LT/GT-style comparisons.)"""
    if not _terms_meet(t, r):
        return [t]
    out = []
    prefix = list(t)
    for k in reversed(range(6)):
        if r[k] == _ALL:
            continue
        miss = _set_minus(prefix[k], r[k])
        if miss:
            piece = list(prefix)
            piece[k] = miss
            out.append(tuple(piece))
        prefix[k] = _set_isect(prefix[k], r[k])
    return out


def _region_minus(region: list[Term], remove: Iterable[Term]) -> list[Term]:
    for r in remove:
        region = [p for t in region for p in _term_minus(t, r)]
        _check(len(region))
    return _merge_terms(region)


def _merge_terms(region: list[Term]) -> list[Term]:
    """Join disjoint terms that differ in one argument only (their union is a term)."""
    merged = True
    while merged and len(region) > 1:
        merged = False
        for i in range(len(region)):
            for j in range(i + 1, len(region)):
                a, b = region[i], region[j]
                diff = [k for k in range(6) if a[k] != b[k]]
                if len(diff) == 1:
                    k = diff[0]
                    joined = list(a)
                    joined[k] = _simplify(a[k] + b[k])
                    region[i] = tuple(joined)
                    del region[j]
                    merged = True
                    break
            if merged:
                break
    return region


def _argset_comparisons(index: int, s: ArgSet, native: bool) -> list[tuple[int, int, int, int] | None]:
    """Alternatives (their union is s) as single comparisons; None = no comparison needed.

    native=False uses EQ and MASKED_EQ only (ranges become aligned blocks): libseccomp
    turns those into plain chains.  native=True also uses NE/LE/GE, which libseccomp
    2.5.4 turns into small graphs whose branches share the next argument's node;
    see _NATIVE_NOTE for why rules using them are compiled with care."""
    if s == _ALL:
        return [None]
    if (native and len(s) == 2 and s[0][0] == s[1][0] == "r" and s[0][1] == 0
            and s[1][2] == _U64 and s[0][2] + 2 == s[1][1]):
        return [(index, seccomp.NE, s[0][2] + 1, 0)]
    out: list[tuple[int, int, int, int] | None] = []
    for a in s:
        if a == _FULL:
            out.append(None)
        elif a[0] == "c":
            out.append((index, seccomp.MASKED_EQ, a[1], a[2]))
        elif a[1] == a[2]:
            out.append((index, seccomp.EQ, a[1], 0))
        elif native and a[1] == 0:
            out.append((index, seccomp.LE, a[2], 0))
        elif native and a[2] == _U64:
            out.append((index, seccomp.GE, a[1], 0))
        else:
            for m, v in _blocks(a[1], a[2]):
                out.append((index, seccomp.EQ, v, 0) if m == _U64 else (index, seccomp.MASKED_EQ, m, v))
    return out


# How rules are written for libseccomp (see _NATIVE_NOTE), most compact first.
_ANYWHERE, _LAST_ONLY, _PLAIN = "anywhere", "last-only", "plain"


def _term_rules(t: Term, mode: str) -> list[tuple[tuple[int, int, int, int], ...]]:
    constrained = [k for k in range(6) if t[k] != _ALL]
    combos: list[tuple] = [()]
    for index in constrained:
        native = mode == _ANYWHERE or (mode == _LAST_ONLY and index == constrained[-1])
        alts = _argset_comparisons(index, t[index], native)
        combos = [c + ((x,) if x is not None else ()) for c in combos for x in alts]
        if len(combos) > _MAX_RULES:
            raise _TooComplex
    return combos


_NATIVE_OPS = (seccomp.NE, seccomp.LT, seccomp.LE, seccomp.GT, seccomp.GE)

# _NATIVE_NOTE
# libseccomp 2.5.4 builds an NE/LT/LE/GT/GE comparison of a 64-bit argument as two or
# three nodes whose true and false branches both lead to the node that follows (the
# next argument's).  Merging further rules through such a shared level goes wrong:
# when a new node sorts before the level's head, _db_tree_add() relinks the level
# through one parent only and then loops forever ("a0 >= 10, a1 == 0x5414" followed
# by "a0 >= 10, a1 == 0x100005414"), and other combinations silently drop rules.
# EQ/MASKED_EQ are plain chains and merge correctly.  So the rules are written in up
# to three forms, most compact first, and _generate uses the first whose program
# passes _verify:
#   anywhere:  NE/LE/GE wherever useful, rules added in descending order of
#              libseccomp's node ordering (every insertion is then an append, which
#              avoids the loop above); built in a forked child with a time limit when
#              such an operator is followed by another argument, in case it loops;
#   last-only: NE/LE/GE only on the last argument a rule compares (nothing follows
#              them, nothing is shared);
#   plain:     EQ/MASKED_EQ only (ranges as aligned blocks; largest).
# A form identical to the one before it is skipped.


def _node_keys(cmp: tuple[int, int, int, int]) -> tuple:
    """libseccomp's sort keys (_db_chain_lt) of the nodes one comparison becomes."""
    arg, op, a, b = cmp
    hi_arg, lo_arg = 2 * arg + 1, 2 * arg
    if op in (seccomp.EQ, seccomp.NE):
        return ((hi_arg, 3, a >> 32), (lo_arg, 3, a & _U32))
    if op == seccomp.MASKED_EQ:
        return ((hi_arg, 3, (b & a) >> 32), (lo_arg, 3, b & a & _U32))
    if op in (seccomp.GT, seccomp.GE):
        return ((hi_arg, 1, a >> 32), (hi_arg, 1, a >> 32), (lo_arg, 1, a & _U32))
    return ((hi_arg, 2, -(a >> 32)), (hi_arg, 2, -(a >> 32)), (lo_arg, 2, -(a & _U32)))


def _rule_key(rule: tuple[int, tuple]) -> tuple:
    return tuple(k for cmp in rule[1] for k in _node_keys(cmp))


def _cond_argset(op: str, value: int, mask: int | None) -> ArgSet:
    if op == "eq":
        return [("r", value, value)]
    if op == "ne":
        return [r for r in (("r", 0, value - 1), ("r", value + 1, _U64)) if r[1] <= r[2]]
    if op == "lt":
        return [("r", 0, value - 1)] if value else []
    if op == "le":
        return [("r", 0, value)]
    if op == "gt":
        return [("r", value + 1, _U64)] if value < _U64 else []
    if op == "ge":
        return [("r", value, _U64)]
    return [_cube(mask, value)]  # masked_eq


def _term(**constraints: ArgSet) -> Term:
    t = list(_EVERYTHING)
    for key, s in constraints.items():
        t[int(key[1:])] = s
    return tuple(t)


# ---------------------------------------------------------------------------
# compiling a spec
# ---------------------------------------------------------------------------


@dataclass
class _ArgRule:
    action: int
    terms: list[Term]
    order: int
    origin: str


@dataclass
class _SyscallPlan:
    name: str
    nr: int
    fallback: int                       # action when no argument rule matches
    denied: bool = False
    arg_rules: list[_ArgRule] = field(default_factory=list)
    # computed by _solve: action -> region (terms) getting it; the default's is left out
    regions: dict[int, list[Term]] = field(default_factory=dict)


@dataclass
class _Plan:
    default: int
    badarch: int
    syscalls: dict[int, _SyscallPlan]


def _as_u64(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{what}: expected an integer, got {value!r}")
    if -(1 << 63) <= value < 0:
        value += 1 << 64
    if not 0 <= value <= _U64:
        raise ValueError(f"{what}: {value} does not fit in 64 bits")
    return value


def _user_rule(rule: dict, i: int) -> tuple[list[str], int, list[Term]]:
    where = f"seccomp.rules[{i}]"
    if not isinstance(rule, dict):
        raise ValueError(f"{where}: expected a table, got {rule!r}")
    syscall = rule.get("syscall")
    if not isinstance(syscall, str):
        raise ValueError(f"{where}.syscall: expected a syscall name, got {syscall!r}")
    check_syscall_name(syscall)
    action = parse_action(rule.get("action", ""))
    args = rule.get("args") or []
    if not isinstance(args, (list, tuple)):
        raise ValueError(f"{where}.args: expected a list, got {args!r}")
    t = list(_EVERYTHING)
    for j, cond in enumerate(args):
        cw = f"{where}.args[{j}]"
        if not isinstance(cond, dict):
            raise ValueError(f"{cw}: expected a table, got {cond!r}")
        index = cond.get("index")
        if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index <= 5:
            raise ValueError(f"{cw}.index: expected 0..5, got {index!r}")
        op = cond.get("op")
        if op not in _OPS:
            raise ValueError(f"{cw}.op: expected one of {', '.join(_OPS)}, got {op!r}")
        value = _as_u64(cond.get("value"), f"{cw}.value")
        mask = None
        if op == "masked_eq":
            mask = _as_u64(cond.get("mask"), f"{cw}.mask")
            if value & ~mask:
                raise ValueError(f"{cw}: value {value:#x} has bits outside mask {mask:#x}; it could never match")
        t[index] = _set_isect(t[index], _cond_argset(op, value, mask))
    terms = [] if any(not s for s in t) else [tuple(t)]  # [] = can never match
    members = expand([syscall]) if syscall.startswith("@") else [syscall]
    return members, action, terms


def _low32(values: Iterable[int]) -> ArgSet:
    return [("c", _U32, v) for v in sorted(set(values))]


S_ISUID = 0o4000
S_ISGID = 0o2000
O_CREAT = 0o100
O_TMPFILE_BIT = 0o20000000  # __O_TMPFILE: O_TMPFILE is this | O_DIRECTORY
# syscall -> (index of its mode argument, index of its open flags or None)
SUID_SGID_MODE_ARGS: dict[str, tuple[int, int | None]] = {
    "chmod": (1, None), "fchmod": (1, None), "fchmodat": (2, None), "fchmodat2": (2, None),
    "mkdir": (1, None), "mkdirat": (2, None), "mknod": (1, None), "mknodat": (2, None),
    "creat": (1, None), "open": (2, 1), "openat": (3, 2),
}


def _suid_sgid_terms() -> dict[str, list[Term]]:
    """syscall -> the terms matching a mode with S_ISUID or S_ISGID; for open/openat
    only with O_CREAT or O_TMPFILE in the flags (else the kernel ignores the mode).
    Masked comparisons on single bits: the high 32 bits do not matter."""
    out: dict[str, list[Term]] = {}
    for name, (mode, flags) in SUID_SGID_MODE_ARGS.items():
        terms = out.setdefault(name, [])
        for bit in (S_ISUID, S_ISGID):
            if flags is None:
                terms.append(_term(**{f"a{mode}": [_cube(bit, bit)]}))
                continue
            for create in (O_CREAT, O_TMPFILE_BIT):
                terms.append(_term(**{f"a{mode}": [_cube(bit, bit)], f"a{flags}": [_cube(create, create)]}))
    return out


def _plan(spec: dict) -> _Plan:
    if not isinstance(spec, dict):
        raise ValueError(f"seccomp spec must be a table, got {type(spec).__name__}")
    default = parse_action(spec.get("default_action", "allow"))
    deny_action = parse_action(spec.get("deny_action", "errno:EPERM"))
    badarch = parse_action(spec.get("other_arches", "kill"))

    def names(key: str) -> list[str]:
        value = spec.get(key) or []
        if isinstance(value, str) or not isinstance(value, (list, tuple)):
            raise ValueError(f"seccomp.{key}: expected a list of syscall names, got {value!r}")
        return list(value)

    denied = _native_syscalls(names("deny"))
    allowed = _native_syscalls(names("allow"))
    plans: dict[int, _SyscallPlan] = {}

    def plan_for(nr: int, name: str) -> _SyscallPlan:
        if nr not in plans:
            if nr in denied:
                plans[nr] = _SyscallPlan(name, nr, deny_action, denied=True)
            else:
                plans[nr] = _SyscallPlan(name, nr, seccomp.ALLOW if nr in allowed else default)
        return plans[nr]

    for nr, name in denied.items():
        plan_for(nr, name)
    for nr, name in allowed.items():
        plan_for(nr, name)

    order = 0

    def add(name: str, action: int, terms: list[Term], origin: str) -> None:
        nonlocal order
        nr = _native_nr(name)
        if nr is None:
            return
        order += 1
        plan_for(nr, name).arg_rules.append(_ArgRule(action, terms, order, origin))

    # 1. explicit argument rules
    rules = spec.get("rules") or []
    if not isinstance(rules, (list, tuple)):
        raise ValueError(f"seccomp.rules: expected a list, got {rules!r}")
    for i, rule in enumerate(rules):
        try:
            members, action, terms = _user_rule(rule, i)
        except _TooComplex:
            raise ValueError(f"seccomp.rules[{i}]: conditions too complex to compile") from None
        origin = rule.get("origin") if isinstance(rule.get("origin"), str) else f"rules[{i}]"
        for member in members:
            add(member, action, terms, origin)

    # 2. namespaces: one rule per clone flag, (flags & FLAG) == FLAG
    if spec.get("deny_namespace_flags"):
        for flag_name, flag in CLONE_NAMESPACE_FLAGS.items():
            add("clone", deny_action, [_term(a0=[("c", flag, flag)])], flag_name)
        add("unshare", deny_action, [_EVERYTHING], "deny_namespace_flags")
        add("setns", deny_action, [_EVERYTHING], "deny_namespace_flags")
        # clone3 passes its flags in a struct seccomp cannot read; ENOSYS makes
        # libc fall back to clone(), whose flags are checked above.
        add("clone3", seccomp.ERRNO(_errno.ENOSYS), [_EVERYTHING], "deny_namespace_flags")

    # 3. ioctls: the kernel truncates the request to 32 bits, so compare only those
    deny_ioctls = spec.get("deny_ioctls") or []
    if not isinstance(deny_ioctls, (list, tuple)):
        raise ValueError(f"seccomp.deny_ioctls: expected a list, got {deny_ioctls!r}")
    requests = [ioctl_request(item) for item in deny_ioctls]
    if requests:
        add("ioctl", deny_action, [_term(a1=_low32(requests))], "deny_ioctls")

    # 4. socket families: the listed ones are allowed, every other one gets deny_action
    #    (compared on the low 32 bits too: the kernel reads an int)
    families = spec.get("socket_families")
    if families is not None:
        if isinstance(families, str) or not isinstance(families, (list, tuple)):
            raise ValueError(f"seccomp.socket_families: expected a list, got {families!r}")
        listed = _low32(socket_family(f) for f in families)
        others = _set_minus(list(_ALL), listed)
        # With an OCI profile (oci_source) the list only denies: the listed families
        # are left to the file's policy, which isolate's protections never loosen.
        grant = spec.get("oci_source") is None
        for call in ("socket", "socketpair"):
            if listed and grant:
                add(call, seccomp.ALLOW, [_term(a0=listed)], "socket_families")
            add(call, deny_action, [_term(a0=others)], "socket_families (other families)")

    # 5. no setuid/setgid files: deny_action where the mode given to chmod or to a
    #    call that creates a file or directory has S_ISUID or S_ISGID (systemd's
    #    RestrictSUIDSGID=). openat2 passes mode and flags in a struct seccomp cannot
    #    read: it gets ENOSYS, as in systemd, and callers fall back to openat.
    if spec.get("restrict_suid_sgid"):
        for name, terms in _suid_sgid_terms().items():
            add(name, deny_action, terms, "restrict_suid_sgid")
        add("openat2", seccomp.ERRNO(_errno.ENOSYS), [_EVERYTHING], "restrict_suid_sgid (mode unreadable)")

    for p in plans.values():
        try:
            _solve(p, default)
        except _TooComplex:
            raise ValueError(
                f"seccomp argument rules for syscall {p.name!r} are too complex to compile "
                "(simplify overlapping conditions)") from None
    return _Plan(default, badarch, plans)


def _solve(p: _SyscallPlan, default: int) -> None:
    """Fill p.regions: the part of argument space that gets each non-default action.
    Regions of different actions never overlap."""
    regions: dict[int, list[Term]] = {}
    if p.denied or not p.arg_rules:
        if p.fallback != default:
            regions[p.fallback] = [_EVERYTHING]
        p.regions = regions
        return
    ordered = sorted(p.arg_rules, key=lambda r: (_severity(r.action), r.order))
    for i, rule in enumerate(ordered):
        if rule.action == default:
            continue  # its region falls to the default action anyway
        higher = [t for other in ordered[:i] if other.action != rule.action for t in other.terms]
        regions.setdefault(rule.action, []).extend(_region_minus(list(rule.terms), higher))
    if p.fallback != default:
        rest = _region_minus([_EVERYTHING], [t for r in ordered for t in r.terms])
        regions.setdefault(p.fallback, []).extend(rest)
    p.regions = {a: _merge_terms(ts) for a, ts in regions.items() if ts}


def _emit(p: _SyscallPlan, mode: str) -> list[tuple[int, tuple]]:
    """libseccomp rules (action, comparisons) for one syscall, in the order to add them."""
    emit: list[tuple[int, tuple]] = []
    for action, terms in p.regions.items():
        for t in terms:
            emit.extend((action, r) for r in _term_rules(t, mode))
            if len(emit) > _MAX_RULES:
                raise _TooComplex
    for action, args in emit:
        if args == ():
            # an unconditional rule would make libseccomp drop the conditional ones
            # of this syscall; regions are disjoint, so it is alone in its syscall
            if any(a != action for a, _ in emit):  # pragma: no cover - would be a bug
                raise RuntimeError(f"overlapping seccomp regions for {p.name}")
            return [(action, ())]
    emit = list(dict.fromkeys(emit))
    emit.sort(key=_rule_key, reverse=True)
    return emit


def _rules(plan: _Plan, mode: str) -> dict[int, list[tuple[int, tuple]]]:
    out = {}
    for nr, p in sorted(plan.syscalls.items()):
        try:
            out[nr] = _emit(p, mode)
        except _TooComplex:
            raise ValueError(
                f"seccomp argument rules for syscall {p.name!r} are too complex to compile "
                "(simplify overlapping conditions)") from None
    return out


def _build(plan: _Plan, rules: dict[int, list[tuple[int, tuple]]], tree: bool = True) -> seccomp.SyscallFilter:
    f = seccomp.SyscallFilter(plan.default)
    f.set_attr(seccomp.Attr.CTL_NNP, 0)  # the launcher sets no_new_privs itself
    f.set_attr(seccomp.Attr.ACT_BADARCH, plan.badarch)
    if tree and sum(map(len, rules.values())) >= 8:
        # binary tree over syscall numbers (CTL_OPTIMIZE=2).  Not for tiny filters: with
        # no rules at all, libseccomp <= 2.5.3 loses the default action in this mode
        # (seccomp/libseccomp#370).  And see _generate: in this mode 2.5.4 can also
        # emit a wrong program, which _verify catches.
        try:
            f.set_attr(seccomp.Attr.CTL_OPTIMIZE, 2)
        except OSError:  # pragma: no cover - libseccomp < 2.5
            pass
    # x32 note (libseccomp 2.5.4, x86-64): the native-arch filter it generates begins
    #     if (arch != AUDIT_ARCH_X86_64) -> bad-arch action
    #     if (nr >= 0x40000000 && nr != 0xffffffff) -> bad-arch action
    # so x32 calls (nr | 0x40000000, same AUDIT_ARCH) already get other_arches, and
    # nr -1 (used by tracers to skip a call) goes through the normal rules.  Nothing
    # to add here; tests/test_seccomp.py checks it in the BPF and in the kernel.
    for nr, emit in rules.items():
        for action, args in emit:
            cmps = [seccomp.Arg(i, op, a, b) for i, op, a, b in args]
            try:
                f.add_rule_exactly(action, nr, *cmps)
            except OSError as exc:
                raise ValueError(
                    f"libseccomp refused rule {format_action(action)} for syscall "
                    f"{plan.syscalls[nr].name!r} {args}: {exc.strerror}"
                ) from exc
    return f


# ---------------------------------------------------------------------------
# checking libseccomp's output
# ---------------------------------------------------------------------------

_MAX_PATHS = 200000


class _Unsupported(Exception):
    pass


_HIGH = _U64 & ~_U32
_WORD: ArgSet = [("r", 0, _U32)]


def _word_set(kind: str, k: int, mask: int, taken: bool) -> ArgSet:
    """The 32-bit words w for which a BPF test of (w & mask) holds (or, if not taken,
    fails): kind "eq" ((w & mask) == k), "gt", "ge", "set" ((w & mask & k) != 0).
    Atoms over 0..2**32-1 (cubes keep the upper 32 bits fixed at 0)."""
    if kind == "set":
        kind, mask, k, taken = "eq", mask & k, 0, not taken
    if kind == "eq":
        if k & ~mask:  # can never be equal
            return [] if taken else list(_WORD)
        if taken:
            return [_cube(_HIGH | mask, k)]
        return [_cube(*c) for c in _cube_minus((_HIGH, 0), (_HIGH | mask, k))]
    if mask != _U32:
        raise _Unsupported("range test of a masked word")
    lo, hi = (k + 1, _U32) if kind == "gt" else (k, _U32)
    if not taken:
        lo, hi = 0, lo - 1
    return [("r", lo, hi)] if lo <= hi else []


def _word_cubes(a: Atom) -> list[tuple[int, int]]:
    """A word atom as 32-bit cubes (mask, value)."""
    if a[0] == "c":
        return [(a[1] & _U32, a[2])]
    return [(m & _U32, v) for m, v in _blocks(a[1], a[2])]


def _arg_from_words(hi: ArgSet, lo: ArgSet) -> ArgSet:
    """64-bit values whose upper half is in `hi` and lower half in `lo`."""
    if hi == _WORD and lo == _WORD:
        return _ALL
    out: ArgSet = []
    for h in hi:
        for low in lo:
            if h[0] == "r" and h[1] == h[2] and low[0] == "r":
                out.append(("r", (h[1] << 32) | low[1], (h[1] << 32) | low[2]))
            elif h[0] == "r" and low == _WORD[0]:
                out.append(("r", h[1] << 32, (h[2] << 32) | _U32))
            else:
                for hm, hv in _word_cubes(h):
                    for lm, lv in _word_cubes(low):
                        out.append(_cube((hm << 32) | lm, (hv << 32) | lv))
    _check(len(out))
    return _simplify(out)


def _paths(insns: list[tuple[int, int, int, int]], nr: int) -> list[tuple[Term, int]]:
    """(region, action) for every path of the program for syscall nr on the native arch."""
    out: list[tuple[Term, int]] = []
    arch = _NATIVE_ARCH  # seccomp_arch_native() is the AUDIT_ARCH_* value seccomp_data carries
    # state: pc, A (("c", value) or ("w", word, mask)), constraints per word
    # (word 2*arg+1 = upper half of argument arg, 2*arg = lower half)
    todo = [(0, ("c", 0), (_WORD,) * 12)]
    while todo:
        pc, a, words = todo.pop()
        while True:
            if pc >= len(insns):
                raise _Unsupported("runs off the end")
            code, jt, jf, k = insns[pc]
            if code == 0x06:  # RET K
                term = tuple(_arg_from_words(words[2 * i + 1], words[2 * i]) for i in range(6))
                out.append((term, k))
                if len(out) > _MAX_PATHS:
                    raise _Unsupported("too many paths")
                break
            if code == 0x20:  # LD W ABS
                if k == 0:
                    a = ("c", nr & _U32)
                elif k == 4:
                    a = ("c", arch)
                elif 16 <= k < 64 and k % 4 == 0:
                    a = ("w", 2 * ((k - 16) // 8) + (k % 8 == 4), _U32)
                else:
                    raise _Unsupported(f"load of offset {k}")
                pc += 1
                continue
            if code == 0x54:  # ALU AND K
                a = ("c", a[1] & k) if a[0] == "c" else ("w", a[1], a[2] & k)
                pc += 1
                continue
            if code == 0x05:  # JA
                pc += 1 + k
                continue
            kind = {0x15: "eq", 0x25: "gt", 0x35: "ge", 0x45: "set"}.get(code)
            if kind is None:
                raise _Unsupported(f"instruction {code:#x}")
            if a[0] == "c":
                v = a[1]
                cond = {"eq": v == k, "gt": v > k, "ge": v >= k, "set": bool(v & k)}[kind]
                pc += 1 + (jt if cond else jf)
                continue
            w, mask = a[1], a[2]
            for taken, nxt in ((True, pc + 1 + jt), (False, pc + 1 + jf)):
                narrowed = _set_isect(words[w], _word_set(kind, k, mask, taken))
                if narrowed:
                    todo.append((nxt, a, words[:w] + (narrowed,) + words[w + 1:]))
            break
    return out


def _covered(term: Term, region: list[Term]) -> bool:
    """Is term a subset of the union of region's terms?"""
    meeting = [r for r in region if _terms_meet(term, r)]
    for r in meeting:  # usually one term holds it all
        if all(r[k] == _ALL or term[k] is r[k] or not _set_minus(term[k], r[k]) for k in range(6)):
            return True
    return not _region_minus([term], meeting)


def _verify(bpf: bytes, plan: _Plan) -> bool:
    """Does the program give every syscall (on the native ABI) exactly the planned
    actions, for every argument value?"""
    insns = [struct.unpack_from("<HBBI", bpf, i) for i in range(0, len(bpf), 8)]
    numbers = set(plan.syscalls) | set(range(0, 512))
    try:
        for nr in sorted(numbers):
            p = plan.syscalls.get(nr)
            regions = p.regions if p is not None else {}
            for term, action in _paths(insns, nr):
                if action == plan.default:
                    if any(_terms_meet(term, t) for ts in regions.values() for t in ts):
                        return False
                elif action not in regions or not _covered(term, regions[action]):
                    return False
    except (_Unsupported, _TooComplex):
        return False
    return True


_CHILD_TIMEOUT = 5.0
_BPF_MAXINSNS = 4096  # the kernel's limit for one program


class _FdFile:
    def __init__(self, fd: int):
        self._fd = fd

    def fileno(self) -> int:
        return self._fd


def _export_in_child(plan: _Plan, rules: dict, tree: bool, method: str, timeout: float) -> bytes | None:
    """Export ("export_bpf"/"export_pfc") of the rules, built by libseccomp in a forked
    child that writes straight into a pipe; None if the child fails or is still busy
    after `timeout` seconds."""
    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        code = 1
        try:
            os.close(rfd)
            getattr(_build(plan, rules, tree), method)(_FdFile(wfd))
            code = 0
        except BaseException:
            pass
        finally:
            os._exit(code)
    os.close(wfd)
    chunks = []
    deadline = time.monotonic() + timeout
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([rfd], [], [], left)[0]:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                return None
            chunk = os.read(rfd, 1 << 16)
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(rfd)
    _, status = os.waitpid(pid, 0)
    return b"".join(chunks) if status == 0 else None


def _inner_native(rules: dict[int, list[tuple[int, tuple]]]) -> bool:
    """Does some rule use NE/LE/GE on an argument other than its last one?"""
    return any(op in _NATIVE_OPS for emit in rules.values() for _, args in emit for _, op, _, _ in args[:-1])


def _generate(plan: _Plan, method: str) -> bytes:
    """Run libseccomp over the plan, check the program, export ("export_bpf"/"export_pfc").

    Candidates, best first: each form of the rules (see _NATIVE_NOTE), first with the
    binary syscall tree, then without.  libseccomp 2.5.4's binary-tree mode can emit a
    wrong program: after a failed argument comparison it jumps into a block that ANDs
    a mask onto the accumulator as if it still held the previous argument word (seen
    with socketpair family masks next to a rule on the type argument).  Whatever the
    cause, a candidate is only used if _verify accepts it."""
    forms: list[dict] = []
    too_complex: ValueError | None = None
    for mode in (_ANYWHERE, _LAST_ONLY, _PLAIN):
        try:
            rules = _rules(plan, mode)
        except ValueError as exc:
            too_complex = too_complex or exc
            continue
        if not forms or rules != forms[-1]:
            forms.append(rules)
    too_long = 0
    for rules in forms:
        for tree in (True, False):
            if _inner_native(rules):
                bpf = _export_in_child(plan, rules, tree, "export_bpf", _CHILD_TIMEOUT)
                if bpf is None or not _verify(bpf, plan):
                    continue
                if len(bpf) > 8 * _BPF_MAXINSNS:
                    too_long = too_long or len(bpf) // 8
                    continue
                if method == "export_bpf":
                    return bpf
                out = _export_in_child(plan, rules, tree, method, _CHILD_TIMEOUT)
                if out is None:  # pragma: no cover - it just worked for the BPF
                    continue
                return out
            f = _build(plan, rules, tree)
            bpf = _export(f, "export_bpf")
            if len(bpf) > 8 * _BPF_MAXINSNS:
                too_long = too_long or len(bpf) // 8
                continue
            if _verify(bpf, plan):
                return bpf if method == "export_bpf" else _export(f, method)
    if too_long:
        raise ValueError(f"seccomp filter too long: {too_long} instructions "
                         f"(kernel limit {_BPF_MAXINSNS})")
    if too_complex is not None:
        raise too_complex
    raise RuntimeError("libseccomp generated a filter that does not match the seccomp rules; "
                       "please report this profile")


def _export(f: seccomp.SyscallFilter, method: str) -> bytes:
    with tempfile.TemporaryFile() as tmp:
        getattr(f, method)(tmp)
        tmp.seek(0)
        return tmp.read()


def _cache_key(spec: dict) -> str:
    return json.dumps(spec, sort_keys=True, default=repr)


# compile_filter results: cache key (canonical JSON of the spec) -> BPF bytes
CACHE: dict[str, bytes] = {}


def compile_filter(spec: dict) -> bytes:
    """The [seccomp] spec -> BPF program (struct sock_filter[]) for the native arch.
    A spec naming an OCI profile in `oci` is translated first (oci_spec, no
    capabilities kept); the cache key is the translated spec, file hash included."""
    if isinstance(spec, dict) and spec.get("oci") is not None:
        spec = oci_spec(spec)
    key = _cache_key(spec)
    cached = CACHE.get(key)
    if cached is not None:
        return cached
    bpf = _generate(_plan(spec), "export_bpf")
    if not bpf or len(bpf) % 8:
        raise RuntimeError(f"libseccomp produced a malformed BPF program ({len(bpf)} bytes)")
    CACHE[key] = bpf
    return bpf


def describe(spec: dict) -> str:
    """Readable form: effective action per syscall, then libseccomp's pseudo-filter code.
    A spec naming an OCI profile in `oci` is translated first, as by compile_filter."""
    if isinstance(spec, dict) and spec.get("oci") is not None:
        spec = oci_spec(spec)
    plan = _plan(spec)
    out = io.StringIO()
    source = spec.get("oci_source")
    if isinstance(source, dict):
        out.write(f"# OCI seccomp profile: {source.get('path')} (sha256 {source.get('sha256')})\n")
    out.write(f"# default action: {format_action(plan.default)}\n")
    out.write(f"# other architectures (x86 int 0x80, x32): {format_action(plan.badarch)}\n")
    rows = sorted(plan.syscalls.values(), key=lambda p: p.name)
    width = max((len(p.name) for p in rows), default=0)
    for p in rows:
        if p.denied or not p.arg_rules:
            text = format_action(p.fallback)
            if p.denied and p.arg_rules:
                text += " (deny overrides its argument rules)"
        else:
            groups: dict[int, list[str]] = {}
            for r in sorted(p.arg_rules, key=lambda r: (_severity(r.action), r.order)):
                groups.setdefault(r.action, []).append(r.origin)
            parts = [f"{format_action(a)} [{', '.join(origins)}]" for a, origins in groups.items()]
            text = "by arguments: " + "; ".join(parts) + f"; otherwise {format_action(p.fallback)}"
        out.write(f"#   {p.name:<{width}}  {text}\n")
    out.write(_generate(plan, "export_pfc").decode(errors="replace"))
    return out.getvalue()


# ---------------------------------------------------------------------------
# Docker / OCI seccomp profiles (JSON) -> the same spec
#
# The OCI runtime-spec `linux.seccomp` object, and Docker's profile format on top of
# it (`archMap`, `name`, `comment`, `includes`/`excludes`), are read into plain data
# (load_oci), then translated (oci_translate) into the spec keys this module already
# compiles: default_action, allow, rules.  oci_spec() does both for a [seccomp]
# spec that names a file in `oci`.  The translation follows what Docker (moby
# profiles/seccomp) and runc + libseccomp do with such a file:
#   * includes/excludes are resolved first: `caps` against the capabilities kept
#     (includes: all of them kept; excludes: any of them kept), `arches` against the
#     native architecture, `minKernel` ("X.Y") against the running kernel;
#   * an entry whose action is the default action is skipped (runc does, libseccomp
#     refuses such rules);
#   * names unknown here, or without a number on the native architecture, are
#     skipped (Docker's profile lists calls of every architecture and kernel);
#   * per syscall, an entry without args makes the whole syscall get its action and
#     drops the syscall's entries with args; if there are several, the first one
#     counts (libseccomp keeps only the first unconditional rule of a syscall);
#   * the args of one entry are ANDed (one rule); if two of them compare the same
#     argument, each becomes a rule of its own, ORed (runc does this, libseccomp
#     refuses two comparisons of one argument in a rule); entries are ORed;
#   * where entries with args overlap with different actions, the usual precedence
#     of `rules` applies (most restrictive wins, then the first listed);
#   * SCMP_CMP_MASKED_EQ is (arg & value) == valueTwo; a valueTwo with bits outside
#     value can never match and its rule is dropped;
#   * SCMP_ACT_KILL is libseccomp's SCMP_ACT_KILL_THREAD; SCMP_ACT_ERRNO and
#     SCMP_ACT_TRACE take errnoRet (defaultErrnoRet for the default action), EPERM
#     if absent; SCMP_ACT_NOTIFY is refused;
#   * architectures, archMap, flags and listenerPath/listenerMetadata are checked
#     but not used: the filter is for the native ABI, every other ABI gets
#     `other_arches`.
# ---------------------------------------------------------------------------

OCI_ACTIONS: dict[str, str] = {
    "SCMP_ACT_ALLOW": "allow",
    "SCMP_ACT_ERRNO": "errno",             # errnoRet, else EPERM
    "SCMP_ACT_KILL": "kill-thread",        # libseccomp: SCMP_ACT_KILL == SCMP_ACT_KILL_THREAD
    "SCMP_ACT_KILL_THREAD": "kill-thread",
    "SCMP_ACT_KILL_PROCESS": "kill-process",
    "SCMP_ACT_TRAP": "trap",
    "SCMP_ACT_LOG": "log",
    "SCMP_ACT_TRACE": "trace",             # errnoRet = the tracer's message, else EPERM (runc)
}
_OCI_UNSUPPORTED_ACTIONS = {
    "SCMP_ACT_NOTIFY": "SCMP_ACT_NOTIFY is not supported (isolate has no seccomp agent to notify)",
}
OCI_OPS: dict[str, str] = {
    "SCMP_CMP_NE": "ne", "SCMP_CMP_LT": "lt", "SCMP_CMP_LE": "le", "SCMP_CMP_EQ": "eq",
    "SCMP_CMP_GE": "ge", "SCMP_CMP_GT": "gt", "SCMP_CMP_MASKED_EQ": "masked_eq",
}
OCI_FLAGS = ("SECCOMP_FILTER_FLAG_TSYNC", "SECCOMP_FILTER_FLAG_LOG", "SECCOMP_FILTER_FLAG_SPEC_ALLOW",
             "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV")

_AUDIT_ARCH_LOONGARCH64 = 0xC0000102
# AUDIT_ARCH value -> what an OCI/Docker file may call it: the OCI name first, then the
# names Docker uses in includes/excludes.arches (libseccomp's), then common aliases.
_ARCH_NAMES: dict[int, tuple[str, ...]] = {
    int(seccomp.Arch.X86_64): ("SCMP_ARCH_X86_64", "amd64", "x86_64"),
    int(seccomp.Arch.X86): ("SCMP_ARCH_X86", "x86", "386", "i386", "i686"),
    int(seccomp.Arch.X32): ("SCMP_ARCH_X32", "x32"),
    int(seccomp.Arch.AARCH64): ("SCMP_ARCH_AARCH64", "arm64", "aarch64"),
    int(seccomp.Arch.ARM): ("SCMP_ARCH_ARM", "arm"),
    int(seccomp.Arch.MIPS): ("SCMP_ARCH_MIPS", "mips"),
    int(seccomp.Arch.MIPS64): ("SCMP_ARCH_MIPS64", "mips64"),
    int(seccomp.Arch.MIPS64N32): ("SCMP_ARCH_MIPS64N32", "mips64n32"),
    int(seccomp.Arch.MIPSEL): ("SCMP_ARCH_MIPSEL", "mipsel", "mipsle"),
    int(seccomp.Arch.MIPSEL64): ("SCMP_ARCH_MIPSEL64", "mipsel64", "mips64le"),
    int(seccomp.Arch.MIPSEL64N32): ("SCMP_ARCH_MIPSEL64N32", "mipsel64n32", "mips3l64n32"),
    int(seccomp.Arch.PPC): ("SCMP_ARCH_PPC", "ppc"),
    int(seccomp.Arch.PPC64): ("SCMP_ARCH_PPC64", "ppc64"),
    int(seccomp.Arch.PPC64LE): ("SCMP_ARCH_PPC64LE", "ppc64le"),
    int(seccomp.Arch.S390): ("SCMP_ARCH_S390", "s390"),
    int(seccomp.Arch.S390X): ("SCMP_ARCH_S390X", "s390x"),
    int(seccomp.Arch.PARISC): ("SCMP_ARCH_PARISC", "parisc"),
    int(seccomp.Arch.PARISC64): ("SCMP_ARCH_PARISC64", "parisc64"),
    int(seccomp.Arch.RISCV64): ("SCMP_ARCH_RISCV64", "riscv64"),
    _AUDIT_ARCH_LOONGARCH64: ("SCMP_ARCH_LOONGARCH64", "loong64", "loongarch64"),
}
OCI_ARCHES = frozenset([names[0] for names in _ARCH_NAMES.values()]
                       + ["SCMP_ARCH_M68K", "SCMP_ARCH_SH", "SCMP_ARCH_SHEB"])

_OCI_TOP_KEYS = ("defaultAction", "defaultErrnoRet", "architectures", "archMap", "flags",
                 "listenerPath", "listenerMetadata", "syscalls")
_OCI_SYSCALL_KEYS = ("names", "name", "action", "errnoRet", "args", "includes", "excludes", "comment")
_OCI_ARG_KEYS = ("index", "value", "valueTwo", "op")
_OCI_FILTER_KEYS = ("caps", "arches", "minKernel")
_OCI_ARCHMAP_KEYS = ("architecture", "subArchitectures")
_OCI_REPLACES = ("default_action", "allow", "rules")


def arch_names(arch: int | None = None) -> tuple[str, ...]:
    """What OCI/Docker files may call `arch` (an AUDIT_ARCH value; default: the native one)."""
    return _ARCH_NAMES.get(int(_NATIVE_ARCH if arch is None else arch), ())


@dataclass(frozen=True)
class OciEntry:
    """One entry of `syscalls`, checked: names as given, action as isolate action text,
    args as isolate conditions ({index, op, value, mask}), includes/excludes as
    {"caps": (...), "arches": (...), "min_kernel": (major, minor) or None}."""

    position: int
    names: tuple[str, ...]
    action: str
    args: tuple[dict, ...]
    includes: dict
    excludes: dict


@dataclass(frozen=True)
class OciProfile:
    """A checked OCI/Docker seccomp profile: its file, the sha256 of its bytes, the
    default action (isolate action text) and its entries."""

    path: str
    sha256: str
    default_action: str
    entries: tuple[OciEntry, ...]


class _OciInvalid(Exception):
    def __init__(self, message: str, path: tuple = ()):
        super().__init__(message)
        self.message = message
        self.path = path


def _json_path(path: Iterable) -> str:
    out = ""
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else ("." if out else "") + str(p)
    return out


def _json_describe(v: object) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return f"boolean {'true' if v else 'false'}"
    if isinstance(v, (int, float)):
        text = repr(v)
        return f"number {text if len(text) <= 40 else text[:37] + '...'}"
    if isinstance(v, str):
        text = repr(v)
        return f"string {text if len(text) <= 60 else text[:56] + '...'}"
    if isinstance(v, list):
        return f"array of {len(v)} item{'' if len(v) == 1 else 's'}"
    return "object"


def _oci_expected(what: str, v: object, path: tuple) -> _OciInvalid:
    return _OciInvalid(f"expected {what}, got {_json_describe(v)}", path)


def _oci_object(v: object, path: tuple, keys: tuple[str, ...]) -> dict:
    if not isinstance(v, dict):
        raise _oci_expected("an object", v, path)
    for k in v:
        if k not in keys:
            import difflib

            close = difflib.get_close_matches(k, keys, n=1, cutoff=0.6)
            hint = f"; did you mean '{close[0]}'?" if close else f" (known: {', '.join(keys)})"
            raise _OciInvalid(f"unknown key '{k}'{hint}", path + (k,))
    return v


def _oci_uint(v: object, path: tuple, hi: int, what: str) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= hi:
        raise _oci_expected(what, v, path)
    return v


def _oci_str(v: object, path: tuple, what: str = "a string") -> str:
    if not isinstance(v, str):
        raise _oci_expected(what, v, path)
    return v


def _oci_strings(v: object, path: tuple, what: str = "an array of strings", empty: bool = True) -> tuple[str, ...]:
    if v is None:
        return ()
    if not isinstance(v, list) or (not empty and not v):
        raise _oci_expected(what, v, path)
    return tuple(_oci_str(x, path + (i,), "a string") for i, x in enumerate(v))


def _oci_action(obj: dict, path: tuple, key: str, ret_key: str) -> str:
    act = obj.get(key)
    if isinstance(act, str) and act in _OCI_UNSUPPORTED_ACTIONS:
        raise _OciInvalid(_OCI_UNSUPPORTED_ACTIONS[act], path + (key,))
    if not isinstance(act, str) or act not in OCI_ACTIONS:
        if act is None and key not in obj:
            raise _OciInvalid(f"missing required key '{key}'", path)
        raise _oci_expected("one of " + ", ".join(OCI_ACTIONS), act, path + (key,))
    kind = OCI_ACTIONS[act]
    ret = obj.get(ret_key)
    if ret is not None:
        _oci_uint(ret, path + (ret_key,), _U64, "a non-negative integer")
    if kind == "errno":
        n = _errno.EPERM if ret is None else _oci_uint(ret, path + (ret_key,), 4095, "an errno number 0..4095")
        return format_action(seccomp.ERRNO(n))
    if kind == "trace":
        n = _errno.EPERM if ret is None else _oci_uint(ret, path + (ret_key,), 0xFFFF, "a number 0..65535")
        return format_action(seccomp.TRACE(n))
    return kind


def _oci_filter(v: object, path: tuple) -> dict:
    out = {"caps": (), "arches": (), "min_kernel": None}
    if v is None:
        return out
    obj = _oci_object(v, path, _OCI_FILTER_KEYS)
    out["caps"] = _oci_strings(obj.get("caps"), path + ("caps",))
    out["arches"] = _oci_strings(obj.get("arches"), path + ("arches",))
    mk = obj.get("minKernel")
    if mk is not None and mk != "":
        import re

        m = re.fullmatch(r"(\d{1,3})\.(\d{1,3})", mk) if isinstance(mk, str) else None
        if m is None or (int(m.group(1)), int(m.group(2))) == (0, 0) or max(map(int, m.groups())) > 255:
            raise _oci_expected('a kernel version "<kernel>.<major>" like "4.8"', mk, path + ("minKernel",))
        out["min_kernel"] = (int(m.group(1)), int(m.group(2)))
    return out


def _oci_arg(v: object, path: tuple) -> dict:
    obj = _oci_object(v, path, _OCI_ARG_KEYS)
    for k in ("index", "value", "op"):
        if k not in obj:
            raise _OciInvalid(f"missing required key '{k}'", path)
    index = _oci_uint(obj["index"], path + ("index",), 5, "an argument index 0..5")
    value = _oci_uint(obj["value"], path + ("value",), _U64, "an integer 0..2**64-1")
    two = obj.get("valueTwo")
    two = 0 if two is None else _oci_uint(two, path + ("valueTwo",), _U64, "an integer 0..2**64-1")
    op = obj["op"]
    if not isinstance(op, str) or op not in OCI_OPS:
        raise _oci_expected("one of " + ", ".join(OCI_OPS), op, path + ("op",))
    if OCI_OPS[op] == "masked_eq":  # libseccomp: (arg & value) == valueTwo
        return {"index": index, "op": "masked_eq", "value": two, "mask": value}
    return {"index": index, "op": OCI_OPS[op], "value": value, "mask": None}


def _oci_entry(v: object, i: int) -> OciEntry:
    path = ("syscalls", i)
    obj = _oci_object(v, path, _OCI_SYSCALL_KEYS)
    names = obj.get("names")
    name = obj.get("name")
    single = name is not None and name != ""
    if single:
        if names:
            raise _OciInvalid("both 'name' and 'names' are given; use one of them", path + ("name",))
        names_t = (_oci_str(name, path + ("name",), "a syscall name"),)
    else:
        if names is None:
            raise _OciInvalid("missing required key 'names' (an array of syscall names)", path)
        names_t = _oci_strings(names, path + ("names",), "a non-empty array of syscall names", empty=False)
    for j, n in enumerate(names_t):
        if not n or "\0" in n:
            raise _oci_expected("a syscall name", n, path + (("name",) if single else ("names", j)))
    action = _oci_action(obj, path, "action", "errnoRet")
    args = obj.get("args")
    if args is not None and not isinstance(args, list):
        raise _oci_expected("an array of {index, value, valueTwo, op}", args, path + ("args",))
    if obj.get("comment") is not None:
        _oci_str(obj["comment"], path + ("comment",))
    return OciEntry(
        position=i,
        names=names_t,
        action=action,
        args=tuple(_oci_arg(a, path + ("args", j)) for j, a in enumerate(args or ())),
        includes=_oci_filter(obj.get("includes"), path + ("includes",)),
        excludes=_oci_filter(obj.get("excludes"), path + ("excludes",)),
    )


def _oci_arch(v: object, path: tuple) -> str:
    if not isinstance(v, str) or v not in OCI_ARCHES:
        raise _oci_expected("an architecture (" + ", ".join(sorted(OCI_ARCHES)) + ")", v, path)
    return v


def _oci_document(doc: object) -> tuple[str, tuple[OciEntry, ...]]:
    top = _oci_object(doc, (), _OCI_TOP_KEYS)
    if "defaultAction" not in top:
        raise _OciInvalid("missing required key 'defaultAction'")
    default = _oci_action(top, (), "defaultAction", "defaultErrnoRet")
    arches = top.get("architectures")
    if arches is not None:
        if not isinstance(arches, list):
            raise _oci_expected("an array of architectures", arches, ("architectures",))
        for i, a in enumerate(arches):
            _oci_arch(a, ("architectures", i))
    amap = top.get("archMap")
    if amap is not None:
        if not isinstance(amap, list):
            raise _oci_expected("an array of {architecture, subArchitectures}", amap, ("archMap",))
        if arches:
            raise _OciInvalid("both 'architectures' and 'archMap' are given; use one of them", ("archMap",))
        for i, m in enumerate(amap):
            obj = _oci_object(m, ("archMap", i), _OCI_ARCHMAP_KEYS)
            _oci_arch(obj.get("architecture"), ("archMap", i, "architecture"))
            subs = obj.get("subArchitectures")
            if subs is not None and not isinstance(subs, list):
                raise _oci_expected("an array of architectures", subs, ("archMap", i, "subArchitectures"))
            for j, a in enumerate(subs or ()):
                _oci_arch(a, ("archMap", i, "subArchitectures", j))
    for i, flag in enumerate(_oci_strings(top.get("flags"), ("flags",))):
        if flag not in OCI_FLAGS:
            raise _oci_expected("one of " + ", ".join(OCI_FLAGS), flag, ("flags", i))
    if top.get("listenerPath") is not None:
        _oci_str(top["listenerPath"], ("listenerPath",))
    if top.get("listenerMetadata") is not None:
        _oci_str(top["listenerMetadata"], ("listenerMetadata",))
    calls = top.get("syscalls")
    if calls is not None and not isinstance(calls, list):
        raise _oci_expected("an array of syscall entries", calls, ("syscalls",))
    return default, tuple(_oci_entry(v, i) for i, v in enumerate(calls or ()))


def parse_oci(blob: bytes, path: str) -> OciProfile:
    """The bytes of an OCI/Docker seccomp profile -> OciProfile; ProfileError naming
    `path`, the JSON path (e.g. "syscalls[12].action") and what was expected."""
    import hashlib

    from .errors import ProfileError

    digest = hashlib.sha256(blob).hexdigest()
    try:
        text = blob.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise ProfileError(f"not valid UTF-8 (byte {e.start}); expected a JSON seccomp profile",
                           file=path) from None
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        raise ProfileError(f"invalid JSON at line {e.lineno}, column {e.colno}: {e.msg}", file=path) from None
    except (RecursionError, ValueError) as e:
        raise ProfileError(f"invalid JSON: {e}", file=path) from None
    try:
        default, entries = _oci_document(doc)
    except _OciInvalid as e:
        raise ProfileError(e.message, file=path, key=_json_path(e.path) or None) from None
    return OciProfile(path=path, sha256=digest, default_action=default, entries=entries)


OCI_MAX_BYTES = 16 << 20


def read_oci_file(path: str) -> bytes:
    """The bytes of a regular file of at most OCI_MAX_BYTES (never blocks on a FIFO or
    a device); OSError or ValueError (e.g. a path that cannot be encoded) otherwise."""
    import stat

    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOCTTY | os.O_NONBLOCK)
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            raise IsADirectoryError(_errno.EISDIR, "is a directory, expected a JSON file")
        if not stat.S_ISREG(st.st_mode):
            raise OSError(_errno.EINVAL, "not a regular file")
        if st.st_size > OCI_MAX_BYTES:
            raise OSError(_errno.EFBIG, f"larger than {OCI_MAX_BYTES >> 20} MiB")
        chunks, total = [], 0
        while chunk := os.read(fd, 1 << 20):
            chunks.append(chunk)
            total += len(chunk)
            if total > OCI_MAX_BYTES:
                raise OSError(_errno.EFBIG, f"larger than {OCI_MAX_BYTES >> 20} MiB")
        return b"".join(chunks)
    finally:
        os.close(fd)


def load_oci(path: str, *, file: str | None = None, key: str | None = None) -> OciProfile:
    """Read and check an OCI/Docker seccomp profile.  A file that cannot be read is a
    ProfileError on (file, key) when given (the profile naming it), else on path."""
    from .errors import ProfileError

    try:
        blob = read_oci_file(path)
    except (OSError, ValueError) as e:
        reason = getattr(e, "strerror", None) or str(e)
        where = {"file": file, "key": key} if file else {"file": path}
        raise ProfileError(f"cannot read the OCI seccomp profile {path}: {reason}", **where) from None
    return parse_oci(blob, path)


def _kernel_version(release: str | None = None) -> tuple[int, int]:
    import re

    m = re.match(r"(\d+)\.(\d+)", os.uname().release if release is None else release)
    return (int(m.group(1)), int(m.group(2))) if m else (0, 0)


def _cap_name(name: str) -> str:
    name = name.strip().upper()
    return name if name.startswith("CAP_") else "CAP_" + name


def oci_included(entry: OciEntry, caps: Iterable[str] = (), arch: int | None = None,
                 kernel: tuple[int, int] | None = None) -> bool:
    """Do the entry's includes/excludes keep it (as Docker decides)?"""
    kept = {_cap_name(c) for c in caps}
    here = {n.lower() for n in arch_names(arch)}
    kernel = _kernel_version() if kernel is None else kernel
    ex, inc = entry.excludes, entry.includes
    if ex["arches"] and here & {a.lower() for a in ex["arches"]}:
        return False
    if ex["caps"] and any(_cap_name(c) in kept for c in ex["caps"]):
        return False
    if ex["min_kernel"] is not None and kernel >= ex["min_kernel"]:
        return False
    if inc["arches"] and not here & {a.lower() for a in inc["arches"]}:
        return False
    if inc["caps"] and not all(_cap_name(c) in kept for c in inc["caps"]):
        return False
    if inc["min_kernel"] is not None and kernel < inc["min_kernel"]:
        return False
    return True


def oci_translate(profile: OciProfile, caps: Iterable[str] = (), arch: int | None = None,
                  kernel: tuple[int, int] | None = None) -> tuple[str, list[str], list[dict]]:
    """OciProfile -> (default_action, allow, rules) for the native architecture (see
    the notes above).  `caps`: capabilities kept; `arch`/`kernel` default to this host
    (only includes/excludes use them: syscall numbers are always the native ones).
    Each rule also has an "origin" ("oci syscalls[N]", the entry it comes from),
    which describe() shows."""
    caps = tuple(caps)
    kernel = _kernel_version() if kernel is None else kernel
    default = parse_action(profile.default_action)
    order: list[str] = []
    unconditional: dict[str, tuple[str, int]] = {}
    conditional: dict[str, list[tuple[str, list[dict], int]]] = {}
    for entry in profile.entries:
        if not oci_included(entry, caps, arch, kernel):
            continue
        if parse_action(entry.action) == default:
            continue
        if entry.args:
            indexes = [a["index"] for a in entry.args]
            if len(set(indexes)) == len(indexes):
                groups = [list(entry.args)]
            else:
                groups = [[a] for a in entry.args]
            # (arg & mask) == value with bits of value outside mask never matches
            groups = [g for g in groups if not any(a["mask"] is not None and a["value"] & ~a["mask"] for a in g)]
        for name in entry.names:
            if name.startswith("@") or _native_nr(name) is None:
                continue
            if name not in conditional:
                order.append(name)
                conditional[name] = []
            if not entry.args:
                unconditional.setdefault(name, (entry.action, entry.position))
            else:
                conditional[name].extend((entry.action, [dict(a) for a in g], entry.position) for g in groups)
    allow: list[str] = []
    rules: list[dict] = []
    for name in order:
        if name in unconditional:
            action, position = unconditional[name]
            if action == "allow":
                allow.append(name)
            else:
                rules.append({"syscall": name, "action": action, "args": [], "origin": f"oci syscalls[{position}]"})
        else:
            rules.extend({"syscall": name, "action": action, "args": args, "origin": f"oci syscalls[{position}]"}
                         for action, args, position in conditional[name])
    return profile.default_action, allow, rules


def _oci_path(path: str, ctx: dict | None, file: str | None) -> str:
    """The file `oci` names, placeholders resolved ({cwd} {home} {uid}: ctx, default
    this process)."""
    from .errors import ProfileError

    if not isinstance(path, str) or not path or "\0" in path:
        raise ProfileError(f"expected a path to a JSON seccomp profile, got {path!r}", file=file, key="seccomp.oci")
    if "{" in path or "}" in path:
        if ctx is None:
            ctx = {"cwd": os.getcwd(), "home": os.environ.get("HOME") or os.path.expanduser("~"),
                   "uid": str(os.geteuid()), "gid": str(os.getegid())}
        try:
            path = path.format_map(ctx)
        except (KeyError, ValueError, IndexError) as e:
            raise ProfileError(f"cannot resolve placeholders in {path!r}: {e}", file=file, key="seccomp.oci") from None
    return os.path.normpath(os.path.abspath(os.path.expanduser(path)))


def oci_digest(spec: dict, ctx: dict | None = None) -> str | None:
    """sha256 of the file the spec's `oci` names as of now (None without `oci`, "" if
    it cannot be read): for caches above compile_filter's that key on the profile,
    whose data holds only the file's path."""
    import hashlib

    path = spec.get("oci") if isinstance(spec, dict) else None
    if path is None:
        return None
    try:
        return hashlib.sha256(read_oci_file(_oci_path(path, ctx, None))).hexdigest()
    except (OSError, ValueError):  # ProfileError is a ValueError; compiling reports it
        return ""


def oci_spec(spec: dict, caps: Iterable[str] = (), ctx: dict | None = None, file: str | None = None) -> dict:
    """A [seccomp] spec whose `oci` names an OCI/Docker seccomp profile -> the spec
    compile_filter takes: default_action, allow and rules from the file (read now),
    every other key kept, `oci` replaced by `oci_source` = {path, sha256} (so that the
    compile cache key changes with the file's content).  Without `oci`: spec as is.
    `caps` are the capabilities kept (for includes/excludes.caps), `ctx` resolves
    placeholders, `file` is the profile (for errors about `oci` itself)."""
    path = spec.get("oci")
    if path is None:
        return spec
    for k in _OCI_REPLACES:
        value = spec.get(k)
        unset = value in (None, [], ()) or (k == "default_action" and parse_action(value) == seccomp.ALLOW)
        if not unset:
            raise ValueError(f"seccomp.{k} cannot be combined with seccomp.oci: the OCI profile's "
                             "policy replaces default_action, allow and rules")
    profile = load_oci(_oci_path(path, ctx, file), file=file, key="seccomp.oci")
    default, allow, rules = oci_translate(profile, caps)
    out = {k: v for k, v in spec.items() if k != "oci"}
    out.update(default_action=default, allow=allow, rules=rules,
               oci_source={"path": profile.path, "sha256": profile.sha256})
    return out
