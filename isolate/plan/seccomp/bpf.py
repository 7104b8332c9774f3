"""BPF generation: the first rule form whose program passes verification, exported
by libseccomp (in a forked child with a time limit where libseccomp may loop);
compile_filter (cached) and describe."""

from __future__ import annotations

import io
import json
import os
import select
import signal
import tempfile
import time

import pyseccomp as seccomp

from ...kernel.syscalls import format_action, severity
from .oci import oci_spec
from . import policy  # (as a module: tests replace its functions)
from .regions import ANYWHERE, LAST_ONLY, NATIVE_OPS, PLAIN
from .verify import verify

_CHILD_TIMEOUT = 5.0
_BPF_MAXINSNS = 4096  # the kernel's limit for one program


class _FdFile:
    def __init__(self, fd: int):
        self._fd = fd

    def fileno(self) -> int:
        return self._fd


def _export_in_child(plan: policy.FilterPlan, rules: dict, tree: bool, method: str, timeout: float) -> bytes | None:
    """Export ("export_bpf"/"export_pfc") of the rules, built by libseccomp in a forked
    child that writes straight into a pipe; None if the child fails or is still busy
    after `timeout` seconds."""
    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        code = 1
        try:
            os.close(rfd)
            getattr(policy.build(plan, rules, tree), method)(_FdFile(wfd))
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
    return any(op in NATIVE_OPS for emit in rules.values() for _, args in emit for _, op, _, _ in args[:-1])


def _generate(plan: policy.FilterPlan, method: str) -> bytes:
    """Run libseccomp over the plan, check the program, export ("export_bpf"/"export_pfc").

    Candidates, best first: each form of the rules (see _NATIVE_NOTE), first with the
    binary syscall tree, then without.  libseccomp 2.5.4's binary-tree mode can emit a
    wrong program: after a failed argument comparison it jumps into a block that ANDs
    a mask onto the accumulator as if it still held the previous argument word (seen
    with socketpair family masks next to a rule on the type argument).  Whatever the
    cause, a candidate is only used if verify accepts it."""
    forms: list[dict] = []
    too_complex: ValueError | None = None
    for mode in (ANYWHERE, LAST_ONLY, PLAIN):
        try:
            rules = policy.emit_rules(plan, mode)
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
                if bpf is None or not verify(bpf, plan):
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
            f = policy.build(plan, rules, tree)
            bpf = _export(f, "export_bpf")
            if len(bpf) > 8 * _BPF_MAXINSNS:
                too_long = too_long or len(bpf) // 8
                continue
            if verify(bpf, plan):
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
    bpf = _generate(policy.plan_filter(spec), "export_bpf")
    if not bpf or len(bpf) % 8:
        raise RuntimeError(f"libseccomp produced a malformed BPF program ({len(bpf)} bytes)")
    CACHE[key] = bpf
    return bpf


def describe(spec: dict) -> str:
    """Readable form: effective action per syscall, then libseccomp's pseudo-filter code.
    A spec naming an OCI profile in `oci` is translated first, as by compile_filter."""
    if isinstance(spec, dict) and spec.get("oci") is not None:
        spec = oci_spec(spec)
    plan = policy.plan_filter(spec)
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
            for r in sorted(p.arg_rules, key=lambda r: (severity(r.action), r.order)):
                groups.setdefault(r.action, []).append(r.origin)
            parts = [f"{format_action(a)} [{', '.join(origins)}]" for a, origins in groups.items()]
            text = "by arguments: " + "; ".join(parts) + f"; otherwise {format_action(p.fallback)}"
        out.write(f"#   {p.name:<{width}}  {text}\n")
    out.write(_generate(plan, "export_pfc").decode(errors="replace"))
    return out.getvalue()
