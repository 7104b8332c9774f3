"""The profile schema, defined once: every section and field (dotted key, validator,
default, one-line doc) in SECTIONS, and the field-specific validators they use.

Adding a section (filesystem, network, cgroup, ...) is one Section(...) entry appended to
SECTIONS, built from the validators in validators.py or any callable that returns the
normalized value and raises Invalid on bad input."""

from __future__ import annotations

import dataclasses
import os
import re
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, Callable, Mapping

from ..kernel.constants import CAPABILITIES
from .hosts import parse_host_entry
from .validators import (Bool, Choice, Int, Invalid, ListOf, MapOf, Optional, Str, Table, Validator, describe_value,
                         expected_error, is_int, short, suggest)

MAX_ID = 4294967294  # (uid_t)-1 is "no id"; the largest usable id is one less
RLIM_MAX = 2**63 - 1  # the largest finite rlimit value we accept


# --------------------------------------------------------------------------
# Field-specific validators
# --------------------------------------------------------------------------

_HOSTNAME = re.compile(r"[A-Za-z0-9.][A-Za-z0-9.-]{0,63}", re.ASCII)


def _check_hostname(s: str) -> str:
    if not _HOSTNAME.fullmatch(s):
        raise expected_error("1 to 64 characters of A-Z a-z 0-9 . - not starting with '-'", s)
    return s


# -- id maps ---------------------------------------------------------------

_ID = Int(0, MAX_ID)
_COUNT = Int(1, MAX_ID + 1)
_IDMAP_TABLE = Table({"inside": _ID, "outside": _ID, "count": _COUNT},
                     required=("inside", "outside", "count"))


class IdMapEntry(Validator):
    describe = '"INSIDE OUTSIDE COUNT" or {inside, outside, count}'
    what = 'a string "INSIDE OUTSIDE COUNT" or a table {inside=, outside=, count=}'

    def __call__(self, v):
        if isinstance(v, str):
            parts = v.split()
            if len(parts) != 3 or not all(p.isascii() and p.isdigit() for p in parts):
                raise expected_error(self.what, v)
            nums = [int(p) for p in parts]
            for name, n, check in zip(("inside", "outside", "count"), nums, (_ID, _ID, _COUNT)):
                try:
                    check(n)
                except Invalid as e:
                    raise Invalid(f"{name}: {e.message}") from None
        elif isinstance(v, Mapping):
            t = _IDMAP_TABLE(v)
            nums = [t["inside"], t["outside"], t["count"]]
        elif isinstance(v, (list, tuple)) and len(v) == 3:  # the normalized form
            nums = []
            for i, (n, check) in enumerate(zip(v, (_ID, _ID, _COUNT))):
                try:
                    nums.append(check(n))
                except Invalid as e:
                    raise e.under(i) from None
        else:
            raise expected_error(self.what, v)
        inside, outside, count = nums
        for name, start in (("inside", inside), ("outside", outside)):
            if start + count - 1 > MAX_ID:
                raise Invalid(f"{name} range {start}..{start + count - 1} goes past the "
                              f"largest id {MAX_ID}")
        return nums


def _check_idmap_overlaps(entries: list) -> None:
    for col, name in ((0, "inside"), (1, "outside")):
        spans = sorted((e[col], e[col] + e[2], i) for i, e in enumerate(entries))
        for (s1, e1, i1), (s2, e2, i2) in zip(spans, spans[1:]):
            if s2 < e1:
                later = max(i1, i2)
                raise Invalid(f"{name} range overlaps entry [{min(i1, i2)}]", [later])


_IDMAP = ListOf(IdMapEntry(), max_len=340, post=_check_idmap_overlaps,
                describe='array of "INSIDE OUTSIDE COUNT" or {inside, outside, count}')


def _check_identity(section: dict) -> None:
    for idkey, mapkey in (("uid", "uid_map"), ("gid", "gid_map")):
        ident, entries = section[idkey], section[mapkey]
        if ident is None or not entries:
            continue
        if not any(e[0] <= ident < e[0] + e[2] for e in entries):
            raise Invalid(f"{ident} is not mapped by identity.{mapkey}", [idkey])


# -- rlimits ---------------------------------------------------------------

_SIZE = re.compile(r"(\d+(?:\.\d*)?|\.\d+)\s*([kmgtpe]?)(i?b)?", re.IGNORECASE | re.ASCII)
_SIZE_POWERS = {"": 0, "k": 1, "m": 2, "g": 3, "t": 4, "p": 5, "e": 6}


def parse_size(text: str) -> int:
    """'512K', '64M', '1.5G', '4GiB', '100B', '100' -> bytes (binary multiples,
    case-insensitive, rounded down). ValueError on anything else."""
    m = _SIZE.fullmatch(text.strip())
    if not m or (m.group(3) and m.group(3).lower() == "ib" and not m.group(2)):
        raise ValueError(f"not a size: {text!r}")
    try:
        amount = Decimal(m.group(1)) * (1024 ** _SIZE_POWERS[m.group(2).lower()])
    except InvalidOperation:  # pragma: no cover - the regex admits only valid numbers
        raise ValueError(f"not a size: {text!r}") from None
    if amount > RLIM_MAX:
        raise ValueError(f"size {text!r} is too large (at most {RLIM_MAX} bytes)")
    return int(amount)


class RLimit(Validator):
    def __init__(self, sizes: bool):
        self.sizes = sizes
        if sizes:
            self.what = 'an integer >= 0, "unlimited" or a size like "64M"'
            self.describe = 'integer, size string ("64M") or "unlimited"; or {soft, hard}'
        else:
            self.what = 'an integer >= 0 or "unlimited"'
            self.describe = 'integer or "unlimited"; or {soft, hard}'

    def one(self, v):
        if isinstance(v, str):
            s = v.strip()
            if s.lower() == "unlimited":
                return "unlimited"
            if self.sizes:
                try:
                    return parse_size(s)
                except ValueError:
                    if _SIZE.fullmatch(s):
                        raise Invalid(f"size {short(v)} is too large "
                                      f"(at most {RLIM_MAX} bytes)") from None
            raise expected_error(self.what, v)
        if not is_int(v) or v < 0 or v > RLIM_MAX:
            raise expected_error(self.what, v)
        return v

    def __call__(self, v):
        if v is None:
            return None
        if isinstance(v, Mapping):
            got = Table({"soft": self.one, "hard": self.one}, required=("soft", "hard"))(v)
            soft, hard = got["soft"], got["hard"]
        elif isinstance(v, (list, tuple)) and len(v) == 2:  # the normalized form
            pair = []
            for i, x in enumerate(v):
                try:
                    pair.append(self.one(x))
                except Invalid as e:
                    raise e.under(i) from None
            soft, hard = pair
        else:
            soft = hard = self.one(v)
        if hard != "unlimited" and (soft == "unlimited" or soft > hard):
            raise Invalid(f"soft limit {soft} is greater than hard limit {hard}")
        return [soft, hard]


# -- fds -------------------------------------------------------------------


class FdTarget(Validator):
    def __init__(self, output: bool):
        self.output = output
        if output:
            self.what = '"inherit", "null", "pipe", an absolute path or "append:/absolute/path"'
        else:
            self.what = '"inherit", "null", "pipe" or an absolute path'
        self.describe = self.what

    def __call__(self, v):
        if not isinstance(v, str):
            raise expected_error(self.what, v)
        Str()(v)  # no NUL, representable as bytes
        if v in ("inherit", "null", "pipe"):
            return v
        if v.startswith("append:"):
            if not self.output:
                raise Invalid(f"'append:' is only for stdout and stderr, got {describe_value(v)}")
            if not v[len("append:"):].startswith("/"):
                raise expected_error("an absolute path after 'append:'", v)
            return v
        if v.startswith("/"):
            return v
        raise expected_error(self.what, v)


def _check_fds(section: dict) -> None:
    if section["pty"]:
        for key in ("stdin", "stdout", "stderr"):
            if section[key] != "inherit":
                raise Invalid(f"pty = true makes fd 0, 1 and 2 the sandbox's terminal; "
                              f"{key} = {describe_value(section[key])} cannot be honoured (leave it \"inherit\")", [key])


# -- env -------------------------------------------------------------------


def _check_env_name(name: Any) -> None:
    if not isinstance(name, str) or not name or "=" in name or "\0" in name:
        raise expected_error("an environment variable name (non-empty, no '=' or NUL)", name)
    Str()(name)  # representable as bytes


def _env_pattern(s: str) -> str:
    _check_env_name(s)
    return s


# -- process ---------------------------------------------------------------

PLACEHOLDERS = ("{cwd}", "{home}", "{uid}")
_BRACES = re.compile(r"\{[^{}]*\}")


def _check_cwd(s: str) -> str:
    for m in _BRACES.finditer(s):
        if m.group(0) not in PLACEHOLDERS:
            raise Invalid(f"unknown placeholder '{m.group(0)}' in {short(s)}; "
                          f"allowed: {', '.join(PLACEHOLDERS)}")
    if "{" in _BRACES.sub("", s) or "}" in _BRACES.sub("", s):
        raise Invalid(f"unbalanced '{{' or '}}' in {short(s)}")
    if not (s.startswith("/") or any(s.startswith(p) for p in PLACEHOLDERS)):
        raise expected_error("an absolute path (may start with {cwd}, {home} or {uid})", s)
    return s


def _check_shell(s: str) -> str:
    if not s.startswith("/") or "\0" in s:
        raise expected_error("an absolute path such as /bin/sh", s)
    return s


# -- seccomp (names and actions come from isolate.kernel.syscalls, imported lazily) --


def _syscalls():
    from ..kernel import syscalls  # pyseccomp (libseccomp's tables): ~15 ms, loaded by the first seccomp field

    return syscalls


def _oci():
    from . import oci  # pyseccomp too: loaded only for a profile that names seccomp.oci

    return oci


def _check_action(s: str) -> str:
    try:
        _syscalls().parse_action(s)
    except (ValueError, LookupError) as e:
        raise Invalid(str(e) or f"unknown action {short(s)}") from None
    return s


def _check_syscall(s: str) -> str:
    try:
        _syscalls().check_syscall_name(s)
    except (ValueError, LookupError) as e:
        raise Invalid(str(e) or f"unknown syscall {short(s)}") from None
    return s


def _lookup_name(kind: str, table: Mapping[str, int], v: str, strip_prefix: str = "") -> str:
    """Find ``v`` among the keys of ``table`` (exact, then case-insensitive,
    then without ``strip_prefix``); returns the table's spelling."""
    if v in table:
        return v
    folded = {k.lower(): k for k in table}
    for cand in (v.lower(), v.lower().removeprefix(strip_prefix.lower()) if strip_prefix else None):
        if cand is not None and cand in folded:
            return folded[cand]
    raise Invalid(f"unknown {kind} {short(v)}" + suggest(v, table))


def _check_family(s: str) -> str:
    return _lookup_name("socket family", _syscalls().SOCKET_FAMILIES, s, "AF_")


class Ioctl(Validator):
    describe = "ioctl name or number"

    def __call__(self, v):
        if is_int(v):
            if 0 <= v <= 0xFFFFFFFF:
                return v
            raise expected_error("an ioctl request number between 0 and 0xffffffff", v)
        if isinstance(v, str):
            return _lookup_name("ioctl", _syscalls().IOCTLS, v)
        raise expected_error("an ioctl name or number", v)


ARG_OPS = ("eq", "ne", "lt", "le", "gt", "ge", "masked_eq")
_U64 = Int(0, 2**64 - 1)


def _check_arg(a: dict) -> None:
    if a["op"] == "masked_eq" and a["mask"] is None:
        raise Invalid("missing required key 'mask' (op is 'masked_eq')")
    if a["op"] != "masked_eq" and a["mask"] is not None:
        raise Invalid("'mask' is only allowed when op is 'masked_eq'", ["mask"])
    if a["op"] == "masked_eq" and a["value"] & ~a["mask"]:
        raise Invalid(f"value {a['value']:#x} has bits outside mask {a['mask']:#x}, "
                      "so it could never match", ["value"])


_ARG = Table({"index": Int(0, 5), "op": Choice(*ARG_OPS), "value": _U64, "mask": Optional(_U64)},
             required=("index", "op", "value"), post=_check_arg,
             describe="{index, op, value, mask}")
_ACTION = Str(_check_action, describe="action string", what="an action string")
_SYSCALL = Str(_check_syscall, describe="syscall name or @group",
               what="a syscall name or @group")
_RULE = Table({"syscall": _SYSCALL, "action": _ACTION,
               "args": ListOf(_ARG, max_len=6, describe="array of {index, op, value, mask}")},
              required=("syscall", "action"), defaults={"args": []},
              describe="{syscall, action, args}")


# seccomp.oci: a Docker/OCI seccomp profile (JSON) that takes the place of
# default_action, allow and rules.  A relative path is relative to the profile file
# that sets it: the loader calls seccomp_oci_layer() on every file (and override)
# before merging it, which makes the path absolute and drops the default_action,
# allow and rules the layer inherits (the file replaces them).  Values set next to
# `oci`, or after it, are refused by _check_seccomp.

_OCI_REPLACES = ("default_action", "allow", "rules")


def _oci_absolute(s: str, base_dir: str | os.PathLike | None) -> str:
    """``s`` made absolute (relative to ``base_dir``, else the current directory),
    unless it starts with a placeholder, which the compiler resolves."""
    if s.startswith("{"):
        return s
    s = os.path.expanduser(s)
    if not os.path.isabs(s) and base_dir is not None:
        s = os.path.join(os.fspath(base_dir), s)
    return os.path.normpath(os.path.abspath(s))


def _check_oci_path(s: str) -> str:
    if not s.strip():
        raise expected_error("a path to a JSON seccomp profile", s)
    for m in _BRACES.finditer(s):
        if m.group(0) not in PLACEHOLDERS:
            raise Invalid(f"unknown placeholder '{m.group(0)}' in {short(s)}; "
                          f"allowed: {', '.join(PLACEHOLDERS)}")
    if "{" in _BRACES.sub("", s) or "}" in _BRACES.sub("", s):
        raise Invalid(f"unbalanced '{{' or '}}' in {short(s)}")
    if "{" in s and not any(s.startswith(p) for p in PLACEHOLDERS):
        raise Invalid(f"a placeholder may only start the path: {short(s)}")
    return _oci_absolute(s, None)


_OCI_PATH = Str(_check_oci_path, describe="path to a JSON file (placeholders {cwd} {home} {uid})",
                what="a path to a JSON seccomp profile")


def seccomp_oci_layer(merged: dict, origins: Any, layer: Mapping, base_dir: Path | None) -> None:
    """Called by the loader for each file (or override) ``layer`` before it is merged
    into ``merged``: a relative ``seccomp.oci`` becomes absolute (relative to
    ``base_dir``, the directory of the file; None = the current directory), and if
    the layer sets ``oci``, the default_action/allow/rules it would inherit are
    dropped (the OCI profile replaces them)."""
    sec = layer.get("seccomp") if isinstance(layer, Mapping) else None
    if not isinstance(sec, dict) or sec.get("oci") is None:
        return
    oci = sec["oci"]
    if isinstance(oci, str) and oci.strip() and "\0" not in oci:
        sec["oci"] = _oci_absolute(oci, base_dir)
    inherited = merged.get("seccomp")
    if isinstance(inherited, dict):
        for k in _OCI_REPLACES:
            if k in inherited and k not in sec:
                del inherited[k]
                for q in [q for q in origins.map if q[:2] == ("seccomp", k)]:
                    del origins.map[q]


def _check_seccomp(section: dict) -> None:
    path = section["oci"]
    if path is None:
        return
    for k in _OCI_REPLACES:
        if section[k] != FIELDS[f"seccomp.{k}"].default and not (
                k == "default_action" and _syscalls().parse_action(section[k]) == _syscalls().parse_action("allow")):
            raise Invalid(f"cannot be combined with seccomp.oci: the OCI profile's policy replaces "
                          f"default_action, allow and rules (remove {k} here, or oci)", [k])
    if path.startswith("{"):
        return  # read by the compiler, once the placeholders are known
    try:
        blob = _oci().read_oci_file(path)
    except (OSError, ValueError) as e:
        raise Invalid(f"cannot read the OCI seccomp profile {short(path, 200)}: "
                      f"{getattr(e, 'strerror', None) or e}", ["oci"]) from None
    _oci().parse_oci(blob, path)  # ProfileError naming the JSON file and path


# -- capabilities ----------------------------------------------------------

# CAPABILITIES (name -> bit) is isolate.kernel.constants.CAPABILITIES.


def _check_cap(s: str) -> str:
    name = s.strip().upper()
    if not name.startswith("CAP_"):
        name = "CAP_" + name
    if name not in CAPABILITIES:
        prefixed = [c for c in CAPABILITIES if c.startswith(name)]
        hint = f"; did you mean '{prefixed[0]}'?" if len(prefixed) == 1 else ""
        raise Invalid(f"unknown capability {short(s)}" + (hint or suggest(name, CAPABILITIES)))
    return name


# -- extends ---------------------------------------------------------------


class Extends(Validator):
    describe = "string or array of strings"

    def __call__(self, v):
        if isinstance(v, str):
            refs = [v]
        elif isinstance(v, (list, tuple)):
            refs = list(v)
        else:
            raise expected_error("a profile name or path, or an array of them", v)
        for i, r in enumerate(refs):
            if not isinstance(r, str) or not r or "\0" in r:
                e = expected_error("a profile name or path", r)
                raise e.under(i) if isinstance(v, (list, tuple)) else e
        return refs


# -- filesystem --------------------------------------------------------------


def _check_path(s: str) -> str:
    """An absolute path, maybe starting with a placeholder; no '..' components."""
    s = _check_cwd(s)
    if any(part == ".." for part in s.split("/")):
        raise Invalid(f"'..' is not allowed in a path: {short(s)}")
    return s


_PATH = Str(_check_path, describe="absolute path (placeholders {cwd} {home} {uid})",
            what="an absolute path")


class ByteSize(Validator):
    """Bytes: an integer >= 1 or a size string like "64M"."""

    describe = 'integer (bytes) or size string ("512M")'

    def __call__(self, v):
        if is_int(v) and 0 < v <= RLIM_MAX:
            return v
        if isinstance(v, str):
            try:
                n = parse_size(v)
            except ValueError:
                raise expected_error('a size like "512M"', v) from None
            if 0 < n <= RLIM_MAX:
                return n
        raise expected_error('a size > 0 like "512M" or a number of bytes', v)


class PathOrTable(Validator):
    """A path, shorthand for {key = path} with the defaults, or the full table."""

    def __init__(self, key: str, fields: dict, defaults: dict, describe: str, finish=None):
        self.key, self.fields, self.defaults, self.finish = key, fields, defaults, finish
        self.describe = describe

    def __call__(self, v):
        if isinstance(v, str):
            v = {self.key: self.fields[self.key](v)}  # a bad path names the entry itself
        if isinstance(v, Mapping):
            out = Table(self.fields, required=(self.key,), defaults=self.defaults)(v)
            return self.finish(out) if self.finish else out
        raise expected_error(f"a path or a table {{{', '.join(self.fields)}}}", v)


def _target_defaults_to_source(entry: dict) -> dict:
    if entry["target"] is None:
        entry["target"] = entry["source"]
    return entry


# "PATH" or {source, target = source, optional = false}
BindEntry = PathOrTable("source", {"source": _PATH, "target": Optional(_PATH), "optional": Bool()},
                        {"optional": False}, 'path, or {source, target, optional}', _target_defaults_to_source)
# "PATH" or {path, size = "64M", mode = 0o1777}
TmpfsEntry = PathOrTable("path", {"path": _PATH, "size": ByteSize(), "mode": Int(0, 0o7777)},
                         {"size": 64 << 20, "mode": 0o1777}, 'path, or {path, size, mode}')


_SYMLINK = Table({"path": _PATH, "target": Str(describe="link target")}, required=("path", "target"),
                 describe="{path, target}")
_FILE = Table({"path": _PATH, "content": Str(), "mode": Int(0, 0o7777)}, required=("path", "content"),
              defaults={"mode": 0o644}, describe="{path, content, mode}")
_LANDLOCK_PATHS = ListOf(_PATH, dedupe=True)


def _check_filesystem(section: dict) -> None:
    seen: dict[str, str] = {}
    for key in ("ro", "rw"):
        for i, e in enumerate(section[key]):
            where = f"{key}[{i}]"
            if e["target"] in seen:
                raise Invalid(f"target {e['target']} is also given by filesystem.{seen[e['target']]}", [key, i])
            seen[e["target"]] = where


def _check_host_entry(s: str) -> str:
    try:
        parse_host_entry(s)
    except ValueError as e:
        raise Invalid(str(e)) from None
    return s.strip().lower()


def _check_network(section: dict) -> None:
    if section["mode"] != "allowlist":
        for key in ("allow", "deny"):
            if section[key]:
                raise Invalid(f'{key} is used only with mode = "allowlist"', [key])
    if section["mode"] == "netns" and not section["netns"]:
        raise Invalid('mode = "netns" needs netns = NAME (in /run/netns) or an absolute path', ["netns"])
    if section["netns"] and section["mode"] != "netns":
        raise Invalid('netns is used only with mode = "netns"', ["netns"])


def _check_netns(s: str) -> str:
    if s.startswith("/"):
        return s
    if not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", s) or s in (".", ".."):
        raise expected_error("a name from `ip netns` or an absolute path", s)
    return s


# -- cgroup ------------------------------------------------------------------


def _check_cgroup(section: dict) -> None:
    swap = section["memory_swap_max"]
    if swap is not None:
        if section["memory_max"] is None:
            raise Invalid("memory_swap_max needs memory_max", ["memory_swap_max"])
        if swap < section["memory_max"]:
            raise Invalid(f"memory_swap_max ({swap}) is memory and swap together: it must be at least "
                          f"memory_max ({section['memory_max']})", ["memory_swap_max"])


# --------------------------------------------------------------------------
# The schema
# --------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Field:
    """One profile key. ``default`` is already normalized (None = absent).
    ``default_doc`` replaces the rendered default in the reference.
    ``meta`` fields (extends) are consumed by the loader, not kept in data."""

    name: str
    type: Callable[[Any], Any]
    default: Any
    doc: str
    default_doc: str | None = None
    meta: bool = False
    section: str = ""

    @property
    def key(self) -> str:
        return f"{self.section}.{self.name}" if self.section else self.name

    @property
    def type_doc(self) -> str:
        return getattr(self.type, "describe", "value")


@dataclasses.dataclass(frozen=True)
class Section:
    """A ``[name]`` table of fields. ``name == ""`` is the top level.
    ``check(section_dict)`` may cross-check the normalized section and raise
    Invalid with a path relative to the section."""

    name: str
    doc: str
    fields: tuple[Field, ...]
    check: Callable[[dict], None] | None = None

    def __post_init__(self):
        object.__setattr__(self, "fields", tuple(
            dataclasses.replace(f, section=self.name) for f in self.fields))


def _rlimit(name: str, unit: str, sizes: bool) -> Field:
    return Field(name, RLimit(sizes), None, f"RLIMIT_{name.upper()} ({unit})",
                 default_doc="absent = inherit")


_NS_DOCS = {
    "user": "new user namespace (ids mapped by [identity])",
    "pid": "new PID namespace (own process tree)",
    "net": "new network namespace (only loopback)",
    "mount": "new mount namespace",
    "ipc": "new IPC namespace (System V IPC, POSIX message queues)",
    "uts": "new UTS namespace (own hostname)",
    "cgroup": "new cgroup namespace",
}

SECTIONS: tuple[Section, ...] = (
    Section("", "Top-level keys.", (
        Field("extends", Optional(Extends()), None,
              "parent profile(s), applied left to right, then this file merged on top",
              default_doc="none", meta=True),
    )),
    Section("namespaces", "Which Linux namespaces the sandbox gets.", tuple(
        Field(ns, Bool(), True, doc) for ns, doc in _NS_DOCS.items())),
    Section("identity", "Who the process is inside the sandbox.", (
        Field("uid", Optional(_ID), None, "user id inside the sandbox",
              default_doc="absent = same as the caller's"),
        Field("gid", Optional(_ID), None, "group id inside the sandbox",
              default_doc="absent = same as the caller's"),
        Field("hostname", Optional(Str(_check_hostname, describe="hostname (1-64 of A-Za-z0-9.-)")),
              None, "hostname inside the UTS namespace", default_doc="absent = unchanged"),
        Field("uid_map", _IDMAP, [], "user namespace uid map; normalized to [inside, outside, count]",
              default_doc="[] = map only the caller's own uid"),
        Field("gid_map", _IDMAP, [], "user namespace gid map; normalized to [inside, outside, count]",
              default_doc="[] = map only the caller's own gid"),
    ), check=_check_identity),
    Section("rlimits", "Resource limits; each is a value (soft = hard) or {soft, hard}; "
                       "normalized to [soft, hard].", (
        _rlimit("cpu", "seconds", False),
        _rlimit("as", "address space, bytes", True),
        _rlimit("nofile", "open files", False),
        _rlimit("nproc", "processes of the user", False),
        _rlimit("fsize", "largest file written, bytes", True),
        _rlimit("core", "core dump size, bytes", True),
        _rlimit("stack", "stack size, bytes", True),
        _rlimit("data", "data segment, bytes", True),
        _rlimit("memlock", "locked memory, bytes", True),
    )),
    Section("fds", "File descriptors. Every fd of the parent not named here is closed.", (
        Field("stdin", FdTarget(False), "inherit", "fd 0 (a path is opened read-only)"),
        Field("stdout", FdTarget(True), "inherit",
              "fd 1 (a path is created/truncated; append:PATH appends)"),
        Field("stderr", FdTarget(True), "inherit",
              "fd 2 (a path is created/truncated; append:PATH appends)"),
        Field("pass", ListOf(Int(3, 2**31 - 1), unique=True, sort_key=lambda x: x,
                             describe="array of integers >= 3"),
              [], "extra fds kept open at the same number (normalized sorted)"),
        Field("pty", Bool(), False,
              "a terminal of the sandbox's own: fd 0, 1 and 2 are the slave of a fresh pty "
              "(from the sandbox's own /dev/pts with a pid namespace and filesystem.dev, else from "
              "the caller's devpts), which is the program's controlling terminal, in a session of "
              "its own; the caller holds the master (`isolate run` relays it to its own terminal, "
              "resizes included; library: Popen.pty_master). The caller's terminal is never handed "
              "in. stdin/stdout/stderr must then be \"inherit\" (`isolate run --pty` sets this)"),
    ), check=_check_fds),
    Section("env", "The environment of the command.", (
        Field("clear", Bool(), True, "start from an empty environment"),
        Field("set", MapOf(_check_env_name, Str(), describe="table of string to string"), {},
              "variables to set (after keep)"),
        Field("keep", ListOf(Str(_env_pattern, describe="name or glob")), [],
              'names or shell globs ("LC_*") copied from the caller\'s environment'),
    )),
    Section("process", "How the command is started.", (
        Field("cwd", Str(_check_cwd, describe="absolute path; placeholders {cwd} {home} {uid}"),
              "{cwd}", "working directory; placeholders are resolved by the compiler"),
        Field("die_with_parent", Bool(), True, "kill the sandbox when isolate dies (PDEATHSIG)"),
        Field("no_new_privs", Bool(), True, "set PR_SET_NO_NEW_PRIVS (no setuid gains)"),
        Field("shell", Str(_check_shell, describe="absolute path in the sandbox's view"), "/bin/sh",
              "the shell of `Popen(..., shell=True)`, `getoutput` and `create_subprocess_shell`: runs "
              "as SHELL -c COMMAND; must exist in the sandbox's view"),
    )),
    Section("seccomp", "The syscall filter (compiled by isolate.plan.seccomp). Per syscall: "
                       "if it is in `deny`, `deny_action` whatever its arguments; else if "
                       "argument rules (`rules`, `socket_families`, `deny_ioctls`, "
                       "`deny_namespace_flags`, `restrict_suid_sgid`) match, their action (the most restrictive "
                       "when several match); else allow if it is in `allow`; else "
                       "`default_action`. With `oci`, a Docker/OCI seccomp profile (JSON) "
                       "takes the place of `default_action`, `allow` and `rules`.", (
        Field("default_action", _ACTION, "allow", "action for syscalls nothing else matches"),
        Field("deny", ListOf(_SYSCALL), [], "syscalls/@groups that get deny_action, "
                                            "whatever their arguments (rules for them are ignored)"),
        Field("deny_action", _ACTION, "errno:EPERM", "action for the deny list"),
        Field("allow", ListOf(_SYSCALL), [], "syscalls/@groups allowed when no argument rule "
                                             "matches (for a non-allow default_action)"),
        Field("rules", ListOf(_RULE, describe="array of {syscall, action, args}"), [],
              "per-syscall rules with argument conditions (all args must match; "
              "the most restrictive matching action wins); "
              "args = [{index 0-5, op eq/ne/lt/le/gt/ge/masked_eq, value, mask}]; "
              "mask is required for masked_eq and normalized to null otherwise"),
        Field("socket_families", Optional(ListOf(Str(_check_family, describe="family"),
                                                 describe="array of family names")),
              None, "socket()/socketpair() address families allowed; others get deny_action",
              default_doc="absent = any"),
        Field("deny_ioctls", ListOf(Ioctl()), [], "ioctl requests that get deny_action "
                                                  "(names or 32-bit numbers)"),
        Field("deny_namespace_flags", Bool(), False,
              "deny_action for unshare, setns and clone with CLONE_NEW* flags; "
              "clone3 gets ENOSYS (libc then falls back to clone)"),
        Field("restrict_suid_sgid", Bool(), False,
              "no setuid/setgid files (systemd's RestrictSUIDSGID=): deny_action for chmod, fchmod, "
              "fchmodat, fchmodat2 with S_ISUID or S_ISGID in the mode, and for creat, mkdir, mkdirat, "
              "mknod, mknodat, and open/openat with O_CREAT or O_TMPFILE, with either bit in the mode; "
              "openat2 (its mode is in a struct seccomp cannot read) gets ENOSYS, and callers fall "
              "back to openat"),
        Field("other_arches", _ACTION, "kill", "action for syscalls from other architectures "
                                               "(e.g. i386 on x86_64)"),
        Field("oci", Optional(_OCI_PATH), None,
              "a Docker/OCI seccomp profile: JSON in the OCI linux.seccomp format or Docker's "
              "(defaultAction, defaultErrnoRet, syscalls [{names or name, action, errnoRet, "
              "args [{index, value, valueTwo, op}], includes/excludes {caps, arches, minKernel}}]). "
              "A relative path is relative to the profile file that sets it (without a file: "
              "the current directory) and normalized to an absolute path; a path starting with "
              "a placeholder is resolved and read when the profile is compiled, any other when it "
              "is loaded and again when compiled (the compiled filter is cached by the file's "
              "content). The file's policy replaces default_action, allow and rules, which must "
              "stay unset next to oci (a parent profile's are dropped): defaultAction becomes "
              "default_action, entries without args whose action is SCMP_ACT_ALLOW become allow, "
              "all other entries become rules. Entries are kept as Docker decides (includes.caps: "
              "all kept in capabilities.keep; excludes.caps: none kept; arches: this machine's; "
              "minKernel: the running kernel); unknown syscall names are skipped; an entry's args "
              "are ANDed (two on the same argument: separate rules, as runc does) and entries "
              "are ORed; as in libseccomp, an entry without args decides its syscall alone (the "
              "first such entry) and entries with the default action are skipped; SCMP_ACT_KILL "
              "is kill-thread, errnoRet defaults to EPERM, SCMP_ACT_NOTIFY is refused; "
              "architectures, archMap and flags are not used. isolate's own protections apply on "
              "top with the usual precedence: `deny` beats the file (deny_action whatever the "
              "file says); `deny_ioctls`, `deny_namespace_flags`, `restrict_suid_sgid` and `socket_families` "
              "are argument "
              "rules next to the file's: where one matches it beats the file's allow and "
              "defaultAction, and among matching rules the most restrictive action wins "
              "(socket_families here only denies the families not listed; the listed ones are "
              "left to the file); syscalls of other ABIs get `other_arches`",
              default_doc="absent = no OCI profile"),
    ), check=_check_seccomp),
    Section("capabilities", "Capabilities kept in the sandbox (all others dropped).", (
        Field("keep", ListOf(Str(_check_cap, describe="capability"), dedupe=True,
                             sort_key=CAPABILITIES.__getitem__,
                             describe='array of capability names ("CAP_NET_RAW" or "net_raw")'),
              [], "capabilities kept; normalized to CAP_* upper-case, sorted by number",
              default_doc="[] = all dropped"),
    )),
    Section("filesystem", "What the program sees of the filesystem. With view = \"new\" the "
                          "sandbox gets a new root: an empty tmpfs, then the entries below "
                          "(mounts in order of target depth, then dirs, symlinks, files), then "
                          "pivot_root with the old root detached. A bind whose host source is a "
                          "symlink becomes the same symlink.", (
        Field("view", Choice("host", "new"), "host",
              '"host": the host\'s tree (in a private mount namespace; the entries below are not '
              'used); "new": build a new root from them'),
        Field("enforce", Choice("namespaces", "landlock", "both", "either"), "namespaces",
              "how the view is enforced: a mount namespace, Landlock rules on the host's tree, "
              "both, or namespaces where available else Landlock alone with no namespace at all. "
              "Under Landlock on the host's tree every field is applied or the launch fails closed "
              "naming it (tmpfs, dirs, symlinks, files; without namespaces also proc, hostname, "
              "uid/gid maps, capabilities.keep, network.mode = \"none\"); a root caller's program "
              "runs as the reserved host uid/gid isolate.plan.ids.BASE; `isolate explain` and "
              "`isolate doctor` list what applies how"),
        Field("ro", ListOf(BindEntry), [], "read-only binds of host paths"),
        Field("rw", ListOf(BindEntry), [], "read-write binds of host paths"),
        Field("tmpfs", ListOf(TmpfsEntry), [], 'private tmpfs mounts (default size "64M", mode 0o1777)'),
        Field("hide", ListOf(_PATH, dedupe=True), [], "paths inside the binds to hide: a file is covered "
                                                     "by an empty one, a directory by an empty read-only "
                                                     "tmpfs; paths that do not exist on the host are skipped. "
                                                     "Under Landlock alone: the parent's other entries, "
                                                     "as they are at compile time, are granted instead "
                                                     "of the parent (entries made there later are not)"),
        Field("proc", Bool(), False, "mount /proc of the sandbox's own pid namespace"),
        Field("dev", Bool(), False, "a minimal /dev: null zero full random urandom tty, shm, pts, "
                                    "fd/stdin/stdout/stderr links"),
        Field("dirs", ListOf(_PATH, dedupe=True), [], "empty directories to create"),
        Field("symlinks", ListOf(_SYMLINK), [], "symlinks to create"),
        Field("files", ListOf(_FILE), [], "small files with the given content"),
        Field("root_size", ByteSize(), 16 << 20, "size of the tmpfs that is the new root"),
        Field("template", Bool(), True, "launch from a template mount namespace made once per plan (root "
                                        "only): the view itself where the root is read-only (a launch then "
                                        "makes only its own mounts: tmpfs, /proc, /dev/pts, idmapped binds), "
                                        "else what the view binds from, so that a launch does not copy the "
                                        "caller's whole mount table; host mounts made later under a bound "
                                        "directory are then not seen"),
        Field("root_readonly", Bool(), True, "make the new root itself read-only once built "
                                             "(binds and tmpfs mounts keep their own mode)"),
    ), check=_check_filesystem),
    Section("network", "The network the program sees.", (
        Field("mode", Optional(Choice("none", "host", "netns", "allowlist")), None,
              '"none": own network namespace with only loopback up; "host": the host\'s network; '
              '"netns": join an existing named network namespace; "allowlist": an own network '
              "namespace whose every TCP connection and DNS query is captured and carried to a proxy "
              "of isolate on the host, which lets through only what `allow` names (root only; launch "
              "with isolate.netproxy.run/Popen/WarmPool, isolate.Session or `isolate run`; see "
              "docs/network.md)",
              default_doc="absent = none if namespaces.net else host"),
        Field("netns", Optional(Str(_check_netns, describe="name or path")), None,
              "for mode = \"netns\": a name in /run/netns (ip netns) or an absolute path"),
        Field("pool", Bool(), True, 'for mode "none": take a prepared empty namespace from a pool '
                                    "(root only; one sandbox at a time each) instead of making one per launch"),
        Field("allow", ListOf(Str(_check_host_entry, describe="host entry"), dedupe=True), [],
              'for mode "allowlist": the destinations allowed: "name", "name:port", "*.domain[:port]" '
              '(names below domain), "1.2.3.4[:port]", "::1" or "[::1]:port"; a name whose address '
              "(resolved on the host) is loopback, link-local or private is refused unless that "
              "address is allowed here too"),
        Field("deny", ListOf(Str(_check_host_entry, describe="host entry"), dedupe=True), [],
              'for mode "allowlist": destinations refused even when `allow` names them (deny wins)'),
        Field("dns", Choice("allowlist", "none"), "allowlist",
              'for mode "allowlist": "allowlist": a DNS responder inside answers allowed names with '
              'addresses of its own (A and AAAA) and NXDOMAIN to the rest; "none": every query gets NXDOMAIN'),
        Field("max_connections", Int(1, 65536), 64,
              'for mode "allowlist": connections of the sandbox open through the proxy at once; '
              "more are refused (a violation)"),
        Field("bytes_per_second", Optional(ByteSize()), None,
              'for mode "allowlist": bytes per second through the proxy, both directions, the '
              "sandbox's connections together", default_doc="absent = no limit"),
    ), check=_check_network),
    Section("cgroup", "Limits that hold for the whole sandbox, every process it starts included: "
                      "each launch gets a fresh cgroup (v2 where a writable cgroup offers the "
                      "controller, else v1), removed when the sandbox ends. An OOM kill is reported "
                      "as its own outcome (Result.outcome \"oom\", `isolate run` exits 137). Where "
                      "no cgroup can be had, the profile fails closed unless fallback = \"rlimits\".", (
        Field("memory_max", Optional(ByteSize()), None,
              "memory of the whole sandbox (v2 memory.max, v1 memory.limit_in_bytes); reaching it "
              "OOM-kills the sandbox (v2: all of it, memory.oom.group)", default_doc="absent = no limit"),
        Field("memory_swap_max", Optional(ByteSize()), None,
              "memory and swap together (>= memory_max; v2 memory.swap.max = the difference, "
              "v1 memory.memsw.limit_in_bytes where swap accounting exists)",
              default_doc="absent = memory_max (no swap)"),
        Field("pids_max", Optional(Int(1, 4194304)), None,
              "processes and threads in the sandbox at once, its pid 1 included (pids.max); "
              "fork/clone beyond it fail with EAGAIN", default_doc="absent = no limit"),
        Field("fallback", Choice("fail", "rlimits"), "fail",
              'where no cgroup with the controller can be had: "fail" (the profile is refused), '
              'or "rlimits": memory_max becomes RLIMIT_AS (per process, address space) and '
              "pids_max RLIMIT_NPROC (all processes of the user; weaker stand-ins)"),
    ), check=_check_cgroup),
)

SECTION_BY_NAME: dict[str, Section] = {s.name: s for s in SECTIONS if s.name}
TOP_FIELDS: dict[str, Field] = {f.name: f for s in SECTIONS if not s.name for f in s.fields}
FIELDS: dict[str, Field] = {f.key: f for s in SECTIONS for f in s.fields}

MERGE_DOC = """\
Profiles are TOML. `extends` names parent profiles: a name without "/" and not
ending in ".toml" is looked up as NAME.toml in each directory of
`$ISOLATE_PROFILE_PATH` (separated by `{sep}`), then `~/.config/isolate/profiles`,
then the profiles shipped with isolate; anything else is a path relative to the
extending file's directory. Several parents are applied left to right.

Merging: the child's tables merge recursively into the parent's (so
`[env] set = {{ FOO = "1" }}` adds FOO to the parent's `env.set`, and
`[rlimits] nofile = {{ soft = 10 }}` over a parent's `{{ soft = 5, hard = 20 }}`
keeps hard = 20); scalars and arrays in the child replace the parent's
(`seccomp.deny = [...]` replaces the whole list). There is no other magic, and
TOML has no null: an inherited value can be replaced but not removed.

Command-line overrides (`--set KEY=VALUE`, VALUE parsed as TOML, else taken as
a plain string) are applied after `extends`, with the same merge rules.
"""
