"""The argument-space algebra of the seccomp compiler: regions of the six-argument space
as unions of products of per-argument sets, and how a region is written as
libseccomp rules (see the notes below, and isolate/plan/seccomp/__init__.py)."""

from __future__ import annotations

from typing import Iterable

import pyseccomp as seccomp


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

U64 = (1 << 64) - 1
U32 = 0xFFFFFFFF
MAX_RULES = 1024          # libseccomp rules for one syscall
_MAX_PIECES = 20000        # intermediate atoms/terms while computing one syscall

Atom = tuple[str, int, int]
ArgSet = list[Atom]
Term = tuple[ArgSet, ...]

_FULL: Atom = ("r", 0, U64)
ALL: ArgSet = [_FULL]
EVERYTHING: Term = (ALL,) * 6

OPS = {
    "eq": seccomp.EQ, "ne": seccomp.NE, "lt": seccomp.LT, "le": seccomp.LE,
    "gt": seccomp.GT, "ge": seccomp.GE, "masked_eq": seccomp.MASKED_EQ,
}


class TooComplex(Exception):
    pass


def cube_atom(mask: int, value: int) -> Atom:
    if mask == 0:
        return _FULL
    if mask == U64:
        return ("r", value, value)
    return ("c", mask, value)


def aligned_blocks(lo: int, hi: int) -> list[tuple[int, int]]:
    """lo..hi as aligned power-of-two blocks (mask, value); at most 128."""
    out = []
    while lo <= hi:
        size = lo & -lo if lo else 1 << 64
        while lo + size - 1 > hi:
            size >>= 1
        out.append((U64 & ~(size - 1), lo))
        lo += size
    return out


def _cube_isect(a: tuple[int, int], b: tuple[int, int]) -> tuple[int, int] | None:
    (ma, va), (mb, vb) = a, b
    if (va ^ vb) & ma & mb:
        return None
    return (ma | mb, va | vb)


def cube_minus(a: tuple[int, int], b: tuple[int, int]) -> list[tuple[int, int]]:
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
        top = v | (~m & U64)
        if top < lo or v > hi:
            continue
        if lo <= v and top <= hi:
            out.append((m, v))
            continue
        bit = 1 << ((~m & U64).bit_length() - 1)
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
        return [cube_atom(*z)] if z is not None else []
    c, r = (a, b) if a[0] == "c" else (b, a)
    return [cube_atom(*z) for z in _cube_in_range(c[1], c[2], r[1], r[2])]


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
        return [cube_atom(*z) for z in cube_minus((a[1], a[2]), (b[1], b[2]))]
    # a range minus a cube: the range ∩ (the complement of b, as cubes)
    rest = cube_minus((0, 0), (b[1], b[2]))
    return [z for c in rest for z in _atom_isect(a, cube_atom(*c))]


def check_pieces(n: int) -> None:
    if n > _MAX_PIECES:
        raise TooComplex


def simplify_set(s: ArgSet) -> ArgSet:
    """Same set, fewer atoms: aligned-block cubes become ranges, touching ranges
    join, and cubes that differ in one fixed bit merge."""
    ranges: list[tuple[int, int]] = []
    cubes: set[tuple[int, int]] = set()
    for a in s:
        if a[0] == "r":
            ranges.append((a[1], a[2]))
        else:
            low = ~a[1] & U64
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
    out.extend(cube_atom(m, v) for m, v in sorted(cubes))
    return out


def set_isect(a: ArgSet, b: ArgSet) -> ArgSet:
    if b == ALL:
        return a
    if a == ALL:
        return b
    out = [z for x in a for y in b for z in _atom_isect(x, y)]
    check_pieces(len(out))
    return simplify_set(out)


def set_minus(a: ArgSet, b: ArgSet) -> ArgSet:
    for y in b:
        a = [z for x in a for z in _atom_minus(x, y)]
        check_pieces(len(a))
    return simplify_set(a)


def _cube_range_meets(mask: int, value: int, lo: int, hi: int) -> bool:
    """Is there x with x & mask == value and lo <= x <= hi?"""
    todo = [(mask, value)]
    while todo:
        m, v = todo.pop()
        top = v | (~m & U64)
        if top < lo or v > hi:
            continue
        if lo <= v or top <= hi:  # its smallest or its largest member is in the range
            return True
        bit = 1 << ((~m & U64).bit_length() - 1)
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


def terms_meet(t: Term, r: Term) -> bool:
    for x, y in zip(t, r):
        if x is y or y == ALL or x == ALL:
            continue
        if not any(_atoms_meet(a, b) for a in x for b in y):
            return False
    return True


def _term_minus(t: Term, r: Term) -> list[Term]:
    """t - r as disjoint terms: for each argument k that r constrains, the part of t
    that fails r on k and satisfies it on the arguments after k.  (Going from the last
    argument down puts the complements, which take more atoms, on high arguments,
    where _argset_comparisons can use NE/LT/GT-style comparisons.)"""
    if not terms_meet(t, r):
        return [t]
    out = []
    prefix = list(t)
    for k in reversed(range(6)):
        if r[k] == ALL:
            continue
        miss = set_minus(prefix[k], r[k])
        if miss:
            piece = list(prefix)
            piece[k] = miss
            out.append(tuple(piece))
        prefix[k] = set_isect(prefix[k], r[k])
    return out


def region_minus(region: list[Term], remove: Iterable[Term]) -> list[Term]:
    for r in remove:
        region = [p for t in region for p in _term_minus(t, r)]
        check_pieces(len(region))
    return merge_terms(region)


def merge_terms(region: list[Term]) -> list[Term]:
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
                    joined[k] = simplify_set(a[k] + b[k])
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
    if s == ALL:
        return [None]
    if (native and len(s) == 2 and s[0][0] == s[1][0] == "r" and s[0][1] == 0
            and s[1][2] == U64 and s[0][2] + 2 == s[1][1]):
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
        elif native and a[2] == U64:
            out.append((index, seccomp.GE, a[1], 0))
        else:
            for m, v in aligned_blocks(a[1], a[2]):
                out.append((index, seccomp.EQ, v, 0) if m == U64 else (index, seccomp.MASKED_EQ, m, v))
    return out


# How rules are written for libseccomp (see _NATIVE_NOTE), most compact first.
ANYWHERE, LAST_ONLY, PLAIN = "anywhere", "last-only", "plain"


def term_rules(t: Term, mode: str) -> list[tuple[tuple[int, int, int, int], ...]]:
    constrained = [k for k in range(6) if t[k] != ALL]
    combos: list[tuple] = [()]
    for index in constrained:
        native = mode == ANYWHERE or (mode == LAST_ONLY and index == constrained[-1])
        alts = _argset_comparisons(index, t[index], native)
        combos = [c + ((x,) if x is not None else ()) for c in combos for x in alts]
        if len(combos) > MAX_RULES:
            raise TooComplex
    return combos


NATIVE_OPS = (seccomp.NE, seccomp.LT, seccomp.LE, seccomp.GT, seccomp.GE)

# _NATIVE_NOTE
# libseccomp 2.5.4 builds an NE/LT/LE/GT/GE comparison of a 64-bit argument as two or
# three nodes whose true and false branches both lead to the node that follows (the
# next argument's).  Merging further rules through such a shared level goes wrong:
# when a new node sorts before the level's head, _db_tree_add() relinks the level
# through one parent only and then loops forever ("a0 >= 10, a1 == 0x5414" followed
# by "a0 >= 10, a1 == 0x100005414"), and other combinations silently drop rules.
# EQ/MASKED_EQ are plain chains and merge correctly.  So the rules are written in up
# to three forms, most compact first, and _generate uses the first whose program
# passes verify:
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
        return ((hi_arg, 3, a >> 32), (lo_arg, 3, a & U32))
    if op == seccomp.MASKED_EQ:
        return ((hi_arg, 3, (b & a) >> 32), (lo_arg, 3, b & a & U32))
    if op in (seccomp.GT, seccomp.GE):
        return ((hi_arg, 1, a >> 32), (hi_arg, 1, a >> 32), (lo_arg, 1, a & U32))
    return ((hi_arg, 2, -(a >> 32)), (hi_arg, 2, -(a >> 32)), (lo_arg, 2, -(a & U32)))


def rule_key(rule: tuple[int, tuple]) -> tuple:
    return tuple(k for cmp in rule[1] for k in _node_keys(cmp))


def cond_argset(op: str, value: int, mask: int | None) -> ArgSet:
    if op == "eq":
        return [("r", value, value)]
    if op == "ne":
        return [r for r in (("r", 0, value - 1), ("r", value + 1, U64)) if r[1] <= r[2]]
    if op == "lt":
        return [("r", 0, value - 1)] if value else []
    if op == "le":
        return [("r", 0, value)]
    if op == "gt":
        return [("r", value + 1, U64)] if value < U64 else []
    if op == "ge":
        return [("r", value, U64)]
    return [cube_atom(mask, value)]  # masked_eq


def make_term(**constraints: ArgSet) -> Term:
    t = list(EVERYTHING)
    for key, s in constraints.items():
        t[int(key[1:])] = s
    return tuple(t)
