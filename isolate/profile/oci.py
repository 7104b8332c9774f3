"""Docker / OCI seccomp profiles (JSON) as data: read, checked and parsed into OciProfile
(ProfileError naming the file and the JSON path). The profile checks a [seccomp] oci file
with this when it is loaded; isolate.plan.seccomp.oci translates it into a spec."""

from __future__ import annotations

import difflib
import errno as _errno
import hashlib
import json
import os
import re
import stat
from dataclasses import dataclass
from typing import Iterable

import pyseccomp as seccomp

from ..errors import ProfileError
from ..kernel.syscalls import NATIVE_ARCH, format_action

U64 = (1 << 64) - 1  # a syscall argument


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
OCI_REPLACES = ("default_action", "allow", "rules")


def arch_names(arch: int | None = None) -> tuple[str, ...]:
    """What OCI/Docker files may call `arch` (an AUDIT_ARCH value; default: the native one)."""
    return _ARCH_NAMES.get(int(NATIVE_ARCH if arch is None else arch), ())


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
        _oci_uint(ret, path + (ret_key,), U64, "a non-negative integer")
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
    value = _oci_uint(obj["value"], path + ("value",), U64, "an integer 0..2**64-1")
    two = obj.get("valueTwo")
    two = 0 if two is None else _oci_uint(two, path + ("valueTwo",), U64, "an integer 0..2**64-1")
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
    try:
        blob = read_oci_file(path)
    except (OSError, ValueError) as e:
        reason = getattr(e, "strerror", None) or str(e)
        where = {"file": file, "key": key} if file else {"file": path}
        raise ProfileError(f"cannot read the OCI seccomp profile {path}: {reason}", **where) from None
    return parse_oci(blob, path)
