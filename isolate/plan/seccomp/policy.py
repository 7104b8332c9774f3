"""The policy language: a [seccomp] spec -> per syscall, the exact region of argument
space that gets each action (plan_filter), the libseccomp rules that say it
(emit_rules) and the libseccomp filter built from them (build)."""

from __future__ import annotations

import errno as _errno
from dataclasses import dataclass, field
from typing import Iterable

import pyseccomp as seccomp

from ...kernel.syscalls import (CLONE_NAMESPACE_FLAGS, check_syscall_name, expand, format_action, ioctl_request,
                                native_nr, native_syscalls, parse_action, severity, socket_family)
from .regions import (ALL, ArgSet, EVERYTHING, MAX_RULES, OPS, Term, TooComplex, U32, U64, cond_argset, cube_atom,
                      make_term, merge_terms, region_minus, rule_key, set_isect, set_minus, term_rules)

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
class FilterPlan:
    default: int
    badarch: int
    syscalls: dict[int, _SyscallPlan]


def _as_u64(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{what}: expected an integer, got {value!r}")
    if -(1 << 63) <= value < 0:
        value += 1 << 64
    if not 0 <= value <= U64:
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
    t = list(EVERYTHING)
    for j, cond in enumerate(args):
        cw = f"{where}.args[{j}]"
        if not isinstance(cond, dict):
            raise ValueError(f"{cw}: expected a table, got {cond!r}")
        index = cond.get("index")
        if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index <= 5:
            raise ValueError(f"{cw}.index: expected 0..5, got {index!r}")
        op = cond.get("op")
        if op not in OPS:
            raise ValueError(f"{cw}.op: expected one of {', '.join(OPS)}, got {op!r}")
        value = _as_u64(cond.get("value"), f"{cw}.value")
        mask = None
        if op == "masked_eq":
            mask = _as_u64(cond.get("mask"), f"{cw}.mask")
            if value & ~mask:
                raise ValueError(f"{cw}: value {value:#x} has bits outside mask {mask:#x}; it could never match")
        t[index] = set_isect(t[index], cond_argset(op, value, mask))
    terms = [] if any(not s for s in t) else [tuple(t)]  # [] = can never match
    members = expand([syscall]) if syscall.startswith("@") else [syscall]
    return members, action, terms


def _low32(values: Iterable[int]) -> ArgSet:
    return [("c", U32, v) for v in sorted(set(values))]


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
                terms.append(make_term(**{f"a{mode}": [cube_atom(bit, bit)]}))
                continue
            for create in (O_CREAT, O_TMPFILE_BIT):
                terms.append(make_term(**{f"a{mode}": [cube_atom(bit, bit)], f"a{flags}": [cube_atom(create, create)]}))
    return out


def plan_filter(spec: dict) -> FilterPlan:
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

    denied = native_syscalls(names("deny"))
    allowed = native_syscalls(names("allow"))
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
        nr = native_nr(name)
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
        except TooComplex:
            raise ValueError(f"seccomp.rules[{i}]: conditions too complex to compile") from None
        origin = rule.get("origin") if isinstance(rule.get("origin"), str) else f"rules[{i}]"
        for member in members:
            add(member, action, terms, origin)

    # 2. namespaces: one rule per clone flag, (flags & FLAG) == FLAG
    if spec.get("deny_namespace_flags"):
        for flag_name, flag in CLONE_NAMESPACE_FLAGS.items():
            add("clone", deny_action, [make_term(a0=[("c", flag, flag)])], flag_name)
        add("unshare", deny_action, [EVERYTHING], "deny_namespace_flags")
        add("setns", deny_action, [EVERYTHING], "deny_namespace_flags")
        # clone3 passes its flags in a struct seccomp cannot read; ENOSYS makes
        # libc fall back to clone(), whose flags are checked above.
        add("clone3", seccomp.ERRNO(_errno.ENOSYS), [EVERYTHING], "deny_namespace_flags")

    # 3. ioctls: the kernel truncates the request to 32 bits, so compare only those
    deny_ioctls = spec.get("deny_ioctls") or []
    if not isinstance(deny_ioctls, (list, tuple)):
        raise ValueError(f"seccomp.deny_ioctls: expected a list, got {deny_ioctls!r}")
    requests = [ioctl_request(item) for item in deny_ioctls]
    if requests:
        add("ioctl", deny_action, [make_term(a1=_low32(requests))], "deny_ioctls")

    # 4. socket families: the listed ones are allowed, every other one gets deny_action
    #    (compared on the low 32 bits too: the kernel reads an int)
    families = spec.get("socket_families")
    if families is not None:
        if isinstance(families, str) or not isinstance(families, (list, tuple)):
            raise ValueError(f"seccomp.socket_families: expected a list, got {families!r}")
        listed = _low32(socket_family(f) for f in families)
        others = set_minus(list(ALL), listed)
        # With an OCI profile (oci_source) the list only denies: the listed families
        # are left to the file's policy, which isolate's protections never loosen.
        grant = spec.get("oci_source") is None
        for call in ("socket", "socketpair"):
            if listed and grant:
                add(call, seccomp.ALLOW, [make_term(a0=listed)], "socket_families")
            add(call, deny_action, [make_term(a0=others)], "socket_families (other families)")

    # 5. no setuid/setgid files: deny_action where the mode given to chmod or to a
    #    call that creates a file or directory has S_ISUID or S_ISGID (systemd's
    #    RestrictSUIDSGID=). openat2 passes mode and flags in a struct seccomp cannot
    #    read: it gets ENOSYS, as in systemd, and callers fall back to openat.
    if spec.get("restrict_suid_sgid"):
        for name, terms in _suid_sgid_terms().items():
            add(name, deny_action, terms, "restrict_suid_sgid")
        add("openat2", seccomp.ERRNO(_errno.ENOSYS), [EVERYTHING], "restrict_suid_sgid (mode unreadable)")

    for p in plans.values():
        try:
            _solve(p, default)
        except TooComplex:
            raise ValueError(
                f"seccomp argument rules for syscall {p.name!r} are too complex to compile "
                "(simplify overlapping conditions)") from None
    return FilterPlan(default, badarch, plans)


def _solve(p: _SyscallPlan, default: int) -> None:
    """Fill p.regions: the part of argument space that gets each non-default action.
    Regions of different actions never overlap."""
    regions: dict[int, list[Term]] = {}
    if p.denied or not p.arg_rules:
        if p.fallback != default:
            regions[p.fallback] = [EVERYTHING]
        p.regions = regions
        return
    ordered = sorted(p.arg_rules, key=lambda r: (severity(r.action), r.order))
    for i, rule in enumerate(ordered):
        if rule.action == default:
            continue  # its region falls to the default action anyway
        higher = [t for other in ordered[:i] if other.action != rule.action for t in other.terms]
        regions.setdefault(rule.action, []).extend(region_minus(list(rule.terms), higher))
    if p.fallback != default:
        rest = region_minus([EVERYTHING], [t for r in ordered for t in r.terms])
        regions.setdefault(p.fallback, []).extend(rest)
    p.regions = {a: merge_terms(ts) for a, ts in regions.items() if ts}


def _emit(p: _SyscallPlan, mode: str) -> list[tuple[int, tuple]]:
    """libseccomp rules (action, comparisons) for one syscall, in the order to add them."""
    emit: list[tuple[int, tuple]] = []
    for action, terms in p.regions.items():
        for t in terms:
            emit.extend((action, r) for r in term_rules(t, mode))
            if len(emit) > MAX_RULES:
                raise TooComplex
    for action, args in emit:
        if args == ():
            # an unconditional rule would make libseccomp drop the conditional ones
            # of this syscall; regions are disjoint, so it is alone in its syscall
            if any(a != action for a, _ in emit):  # pragma: no cover - would be a bug
                raise RuntimeError(f"overlapping seccomp regions for {p.name}")
            return [(action, ())]
    emit = list(dict.fromkeys(emit))
    emit.sort(key=rule_key, reverse=True)
    return emit


def emit_rules(plan: FilterPlan, mode: str) -> dict[int, list[tuple[int, tuple]]]:
    out = {}
    for nr, p in sorted(plan.syscalls.items()):
        try:
            out[nr] = _emit(p, mode)
        except TooComplex:
            raise ValueError(
                f"seccomp argument rules for syscall {p.name!r} are too complex to compile "
                "(simplify overlapping conditions)") from None
    return out


def build(plan: FilterPlan, rules: dict[int, list[tuple[int, tuple]]], tree: bool = True) -> seccomp.SyscallFilter:
    f = seccomp.SyscallFilter(plan.default)
    f.set_attr(seccomp.Attr.CTL_NNP, 0)  # the launcher sets no_new_privs itself
    f.set_attr(seccomp.Attr.ACT_BADARCH, plan.badarch)
    if tree and sum(map(len, rules.values())) >= 8:
        # binary tree over syscall numbers (CTL_OPTIMIZE=2).  Not for tiny filters: with
        # no rules at all, libseccomp <= 2.5.3 loses the default action in this mode
        # (seccomp/libseccomp#370).  And see _generate: in this mode 2.5.4 can also
        # emit a wrong program, which verify catches.
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
