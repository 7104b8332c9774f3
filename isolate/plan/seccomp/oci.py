"""Docker / OCI seccomp profiles translated into a [seccomp] spec, the way Docker (moby
profiles/seccomp) and runc + libseccomp do with such a file (see the notes below)."""

from __future__ import annotations

import hashlib
import os
import re
from typing import Iterable

import pyseccomp as seccomp

from ...errors import ProfileError
from ...kernel.syscalls import native_nr, parse_action
from ...profile.oci import OCI_REPLACES, OciEntry, OciProfile, arch_names, load_oci, read_oci_file


def _kernel_version(release: str | None = None) -> tuple[int, int]:
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
            if name.startswith("@") or native_nr(name) is None:
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
    for k in OCI_REPLACES:
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
