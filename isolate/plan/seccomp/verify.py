"""Checking libseccomp's output: symbolic execution of a BPF program against the
regions the policy computed (verify), so that a libseccomp bug cannot make a filter
weaker or stricter than the spec."""

from __future__ import annotations

import struct

from ...kernel.syscalls import NATIVE_ARCH
from .policy import FilterPlan
from .regions import (ALL, ArgSet, Atom, Term, TooComplex, U32, U64, aligned_blocks, check_pieces, cube_atom,
                      cube_minus, region_minus, set_isect, set_minus, simplify_set, terms_meet)

# ---------------------------------------------------------------------------
# checking libseccomp's output
# ---------------------------------------------------------------------------

_MAX_PATHS = 200000


class _Unsupported(Exception):
    pass


_HIGH = U64 & ~U32
_WORD: ArgSet = [("r", 0, U32)]


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
            return [cube_atom(_HIGH | mask, k)]
        return [cube_atom(*c) for c in cube_minus((_HIGH, 0), (_HIGH | mask, k))]
    if mask != U32:
        raise _Unsupported("range test of a masked word")
    lo, hi = (k + 1, U32) if kind == "gt" else (k, U32)
    if not taken:
        lo, hi = 0, lo - 1
    return [("r", lo, hi)] if lo <= hi else []


def _word_cubes(a: Atom) -> list[tuple[int, int]]:
    """A word atom as 32-bit cubes (mask, value)."""
    if a[0] == "c":
        return [(a[1] & U32, a[2])]
    return [(m & U32, v) for m, v in aligned_blocks(a[1], a[2])]


def _arg_from_words(hi: ArgSet, lo: ArgSet) -> ArgSet:
    """64-bit values whose upper half is in `hi` and lower half in `lo`."""
    if hi == _WORD and lo == _WORD:
        return ALL
    out: ArgSet = []
    for h in hi:
        for low in lo:
            if h[0] == "r" and h[1] == h[2] and low[0] == "r":
                out.append(("r", (h[1] << 32) | low[1], (h[1] << 32) | low[2]))
            elif h[0] == "r" and low == _WORD[0]:
                out.append(("r", h[1] << 32, (h[2] << 32) | U32))
            else:
                for hm, hv in _word_cubes(h):
                    for lm, lv in _word_cubes(low):
                        out.append(cube_atom((hm << 32) | lm, (hv << 32) | lv))
    check_pieces(len(out))
    return simplify_set(out)


def _paths(insns: list[tuple[int, int, int, int]], nr: int) -> list[tuple[Term, int]]:
    """(region, action) for every path of the program for syscall nr on the native arch."""
    out: list[tuple[Term, int]] = []
    arch = NATIVE_ARCH  # seccomp_arch_native() is the AUDIT_ARCH_* value seccomp_data carries
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
                    a = ("c", nr & U32)
                elif k == 4:
                    a = ("c", arch)
                elif 16 <= k < 64 and k % 4 == 0:
                    a = ("w", 2 * ((k - 16) // 8) + (k % 8 == 4), U32)
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
                narrowed = set_isect(words[w], _word_set(kind, k, mask, taken))
                if narrowed:
                    todo.append((nxt, a, words[:w] + (narrowed,) + words[w + 1:]))
            break
    return out


def _covered(term: Term, region: list[Term]) -> bool:
    """Is term a subset of the union of region's terms?"""
    meeting = [r for r in region if terms_meet(term, r)]
    for r in meeting:  # usually one term holds it all
        if all(r[k] == ALL or term[k] is r[k] or not set_minus(term[k], r[k]) for k in range(6)):
            return True
    return not region_minus([term], meeting)


def verify(bpf: bytes, plan: FilterPlan) -> bool:
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
                    if any(terms_meet(term, t) for ts in regions.values() for t in ts):
                        return False
                elif action not in regions or not _covered(term, regions[action]):
                    return False
    except (_Unsupported, TooComplex):
        return False
    return True
