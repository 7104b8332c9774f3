"""Loading a profile: files, names and `extends`, TOML parsing, merging, overrides
(`--set KEY=VALUE`), validation against the schema, and the immutable Profile."""

from __future__ import annotations

import copy
import importlib.resources
import dataclasses
import hashlib
import json
import os
import re
import stat
import tomllib
import types
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from ..errors import ProfileError
from . import schema
from .schema import Extends, seccomp_oci_layer
from .validators import Invalid, describe_value, dotted_key, expected_error, short, suggest

OVERRIDE_FILE = "--set"  # the "file" errors in --set KEY=VALUE overrides name


# --------------------------------------------------------------------------
# Validation of a merged raw dict
# --------------------------------------------------------------------------


class _Origins:
    """Which file set each table key path (for error messages)."""

    def __init__(self, default: str):
        self.default = default
        self.map: dict[tuple[str, ...], str] = {}

    def mark(self, raw: Mapping, file: str, prefix: tuple[str, ...] = ()) -> None:
        for k, v in raw.items():
            p = prefix + (k,)
            self.map[p] = file
            if isinstance(v, Mapping):
                self.mark(v, file, p)

    def lookup(self, path: Sequence[str | int]) -> str:
        keys: list[str] = []
        for p in path:
            if isinstance(p, int):
                break
            keys.append(p)
        for i in range(len(keys), 0, -1):
            f = self.map.get(tuple(keys[:i]))
            if f is not None:
                return f
        return self.default


def _merge(base: dict, base_o: _Origins, over: Mapping, over_o: _Origins,
           prefix: tuple[str, ...] = ()) -> None:
    """Merge ``over`` into ``base`` in place: tables recursively, anything else replaced."""
    for k, v in over.items():
        p = prefix + (k,)
        if isinstance(v, dict) and isinstance(base.get(k), dict):
            _merge(base[k], base_o, v, over_o, p)
        else:
            base[k] = copy.deepcopy(v)
            n = len(p)
            for q in [q for q in base_o.map if q[:n] == p]:
                del base_o.map[q]
            if isinstance(v, dict):
                for q, f in over_o.map.items():
                    if q[:n] == p:
                        base_o.map[q] = f
        base_o.map[p] = over_o.map.get(p, over_o.default)


def _plain(v: Any, file: str, path: tuple = ()) -> Any:
    """Deep copy into dict/list form (accepting any Mapping/tuple), checking keys are str."""
    if isinstance(v, Mapping):
        out = {}
        for k, x in v.items():
            if not isinstance(k, str):
                raise ProfileError(f"expected a string key, got {describe_value(k)}",
                                   file=file, key=dotted_key(path) or None)
            out[k] = _plain(x, file, path + (k,))
        return out
    if isinstance(v, (list, tuple)):
        return [_plain(x, file, path + (i,)) for i, x in enumerate(v)]
    return v


def _unknown_key_message(k: str, local: Iterable[str]) -> str:
    msg = f"unknown key '{k}'" + suggest(k, local)
    if "did you mean" not in msg:
        elsewhere = [f.key for f in schema.FIELDS.values() if f.name == k and not f.meta]
        if elsewhere:
            msg += f"; did you mean '{elsewhere[0]}'?"
    return msg


def _validate(raw: Mapping, origins: _Origins) -> dict:
    def fail(message: str, path: Sequence[str | int]):
        raise ProfileError(message, file=origins.lookup(path), key=dotted_key(path) or None)

    for k in raw:
        if k not in schema.SECTION_BY_NAME and k not in schema.TOP_FIELDS:
            fail(_unknown_key_message(k, list(schema.SECTION_BY_NAME) + list(schema.TOP_FIELDS)), [k])
    data: dict[str, Any] = {}
    for sec in schema.SECTIONS:
        if not sec.name:
            for f in sec.fields:
                if f.meta:
                    continue
                try:  # pragma: no cover - no non-meta top-level field yet
                    data[f.name] = f.type(raw[f.name]) if f.name in raw else copy.deepcopy(f.default)
                except Invalid as e:  # pragma: no cover
                    fail(e.message, [f.name] + e.path)
            continue
        given = raw.get(sec.name, {})
        if not isinstance(given, Mapping):
            fail(expected_error("a table", given).message, [sec.name])
        names = {f.name: f for f in sec.fields}
        for k in given:
            if k not in names:
                fail(_unknown_key_message(k, names), [sec.name, k])
        out: dict[str, Any] = {}
        for f in sec.fields:
            if f.name in given:
                try:
                    out[f.name] = f.type(given[f.name])
                except Invalid as e:
                    fail(e.message, [sec.name, f.name] + e.path)
            else:
                out[f.name] = copy.deepcopy(f.default)
        if sec.check is not None:
            try:
                sec.check(out)
            except Invalid as e:
                fail(e.message, [sec.name] + e.path)
        data[sec.name] = out
    return data


# --------------------------------------------------------------------------
# Files, names, extends
# --------------------------------------------------------------------------


def shipped_dir() -> Path:
    """The directory of the profiles shipped with isolate (package isolate.profiles)."""
    try:
        p = importlib.resources.files("isolate.profiles")
        if isinstance(p, Path) and p.is_dir():
            return p
        p = Path(str(p))
        if p.is_dir():
            return p
    except Exception:  # not installed as a package: use the source tree layout
        pass
    return Path(__file__).resolve().parents[2] / "profiles"


def profile_dirs() -> list[Path]:
    """Where profile names are looked up, in order."""
    dirs = [Path(d) for d in os.environ.get("ISOLATE_PROFILE_PATH", "").split(os.pathsep) if d]
    home = os.path.expanduser("~/.config/isolate/profiles")
    if not home.startswith("~"):
        dirs.append(Path(home))
    dirs.append(shipped_dir())
    return dirs


def _is_name(ref: str) -> bool:
    return "/" not in ref and not ref.endswith(".toml")


def resolve_name(name: str, base_dir: str | os.PathLike | None = None, *,
                 _file: str | None = None, _key: str | None = None) -> Path:
    """A profile name -> the first NAME.toml found in ``profile_dirs()``
    (ProfileError if none); anything else is a path, relative to ``base_dir``
    (default: the current directory). Paths are not checked for existence."""
    if not isinstance(name, str) or not name or "\0" in name:
        raise ProfileError(expected_error("a profile name or path", name).message,
                           file=_file, key=_key)
    if _is_name(name):
        dirs = profile_dirs()
        for d in dirs:
            p = d / f"{name}.toml"
            try:
                if p.is_file():
                    return p
            except OSError:
                continue
        raise ProfileError(f"no profile named '{name}' (searched: "
                           f"{', '.join(str(d) for d in dirs)})"
                           + suggest(name, _all_names(dirs)),
                           file=_file or name, key=_key)
    p = Path(os.path.expanduser(name))
    if not p.is_absolute() and base_dir is not None:
        p = Path(base_dir) / p
    return p


def _all_names(dirs: Iterable[Path]) -> list[str]:
    names = []
    for d in dirs:
        try:
            names += [p.stem for p in d.glob("*.toml")]
        except OSError:
            pass
    return names


def shipped_profiles() -> list[str]:
    """Names of the profiles shipped with isolate, sorted."""
    try:
        return sorted(p.stem for p in shipped_dir().glob("*.toml") if p.is_file())
    except OSError:
        return []


_TOML_POS = re.compile(r"^(.*) \(at (line \d+, column \d+|end of document)\)$", re.DOTALL)


def _parse_toml(text: str, file: str) -> dict:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        msg = str(e)
        m = _TOML_POS.match(msg)
        if m:
            msg = f"invalid TOML at {m.group(2)}: {m.group(1)}"
        else:
            msg = f"invalid TOML: {msg}"
        raise ProfileError(msg, file=file) from None
    except RecursionError:
        raise ProfileError("invalid TOML: nested too deeply", file=file) from None
    except ValueError as e:  # e.g. an integer literal longer than int's str-conversion limit
        raise ProfileError(f"invalid TOML: {e}", file=file) from None


MAX_PROFILE_BYTES = 1 << 20


def _read_file(path: Path) -> dict:
    file = str(path)
    regular = True
    try:
        # A profile is a small regular file: never read a device, a FIFO or a huge file
        # (extends = "/dev/zero" must be an error, not a memory blow-up; O_NONBLOCK so
        # that opening a FIFO does not wait for a writer).
        with os.fdopen(os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC), "rb") as f:
            regular = stat.S_ISREG(os.fstat(f.fileno()).st_mode)
            blob = f.read(MAX_PROFILE_BYTES + 1) if regular else b""
    except FileNotFoundError:
        raise ProfileError("file not found", file=file) from None
    except IsADirectoryError:
        raise ProfileError("is a directory, expected a TOML file", file=file) from None
    except OSError as e:
        raise ProfileError(f"cannot read: {e.strerror or e}", file=file) from None
    except ValueError as e:  # e.g. embedded NUL in the path
        raise ProfileError(f"cannot read: {e}", file=file) from None
    if not regular:
        raise ProfileError("not a regular file, expected a TOML file", file=file)
    if len(blob) > MAX_PROFILE_BYTES:
        raise ProfileError(f"larger than {MAX_PROFILE_BYTES} bytes; a profile is a small TOML file", file=file)
    try:
        text = blob.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ProfileError(f"not valid UTF-8 (byte {e.start})", file=file) from None
    return _parse_toml(text, file)


MAX_EXTENDS_DEPTH = 64  # profiles in one extends chain; far below Python's recursion limit


class _Loader:
    def __init__(self):
        self.files: list[str] = []

    def expand(self, raw: Any, file: str, base_dir: Path | None,
               chain: list[tuple[str | None, str]]) -> tuple[dict, _Origins]:
        """Resolve ``extends`` of ``raw`` (read from ``file``): returns the merged
        raw dict (parents, then raw) and who set what."""
        if not isinstance(raw, Mapping):
            raise ProfileError(expected_error("a table", raw).message, file=file)
        raw = _plain(raw, file)
        ext = raw.pop("extends", None)
        try:
            parents = Extends()(ext) if ext is not None else []
        except Invalid as e:
            raise ProfileError(e.message, file=file, key=dotted_key(["extends"] + e.path)) from None
        merged: dict = {}
        origins = _Origins(file)
        many = len(parents) > 1
        if parents and len(chain) > MAX_EXTENDS_DEPTH:
            top = chain[0][1]
            raise ProfileError(f"nested too deeply: more than {MAX_EXTENDS_DEPTH} levels of extends "
                               f"(starting at {top})", file=file, key="extends[0]" if many else "extends")
        for i, ref in enumerate(parents):
            key = f"extends[{i}]" if many else "extends"
            path = resolve_name(ref, base_dir, _file=file, _key=key)
            real = os.path.realpath(path)
            if real in [c[0] for c in chain]:
                shown = [c[1] for c in chain] + [ref]
                raise ProfileError("extends cycle: " + " -> ".join(shown), file=file, key=key)
            try:
                praw = _read_file(path)
            except ProfileError as e:
                if e.message == "file not found":
                    raise ProfileError(f"file not found: {path}", file=file, key=key) from None
                raise
            pm, po = self.expand(praw, str(path), path.parent, chain + [(real, ref)])
            _merge(merged, origins, pm, po)
        own = _Origins(file)
        own.mark(raw, file)
        seccomp_oci_layer(merged, origins, raw, base_dir)
        _merge(merged, origins, raw, own)
        if chain[-1][0] is not None and chain[-1][0] not in self.files:
            self.files.append(chain[-1][0])
        return merged, origins


def _parse_override_value(text: str) -> Any:
    try:
        doc = tomllib.loads(f"v = {text}")
    except (ValueError, RecursionError):  # TOMLDecodeError is a ValueError
        return text
    if set(doc) != {"v"}:
        return text
    return doc["v"]


def _override(item: Any) -> dict:
    if not isinstance(item, str):
        raise ProfileError(expected_error("a KEY=VALUE string", item).message, file=OVERRIDE_FILE)
    key, sep, text = item.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ProfileError(f"expected KEY=VALUE, got {short(item)}", file=OVERRIDE_FILE,
                           key=key or None)
    parts = [p.strip() for p in key.split(".")]
    if not all(parts):
        raise ProfileError("empty component in dotted key", file=OVERRIDE_FILE, key=key)
    if parts[0] in schema.TOP_FIELDS:
        raise ProfileError("cannot be overridden: it is resolved before overrides apply",
                           file=OVERRIDE_FILE, key=key)
    sec = schema.SECTION_BY_NAME.get(parts[0])
    if sec is None:
        raise ProfileError(_unknown_key_message(parts[0], schema.SECTION_BY_NAME), file=OVERRIDE_FILE,
                           key=key)
    names = [f.name for f in sec.fields]
    if len(parts) > 1 and parts[1] not in names:
        raise ProfileError(_unknown_key_message(parts[1], names), file=OVERRIDE_FILE, key=key)
    value: Any = _parse_override_value(text)
    for p in reversed(parts):
        value = {p: value}
    return value


# --------------------------------------------------------------------------
# Profile
# --------------------------------------------------------------------------


def _freeze(v: Any) -> Any:
    if isinstance(v, dict):
        return types.MappingProxyType({k: _freeze(x) for k, x in v.items()})
    if isinstance(v, list):
        return tuple(_freeze(x) for x in v)
    return v


def _thaw(v: Any) -> Any:
    if isinstance(v, Mapping):
        return {k: _thaw(x) for k, x in v.items()}
    if isinstance(v, tuple):
        return [_thaw(x) for x in v]
    return v


def _canonical_hash(data: dict) -> str:
    # ensure_ascii: a string may hold lone surrogates (a non-UTF-8 byte of a path or
    # value, decoded with surrogateescape), which have no UTF-8 encoding.
    blob = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(blob.encode("ascii")).hexdigest()


@dataclasses.dataclass(frozen=True, eq=False)
class Profile:
    """A validated profile. Immutable.

    ``name``   the name or path as given (or the name passed to from_dict/from_toml)
    ``data``   every field, defaults filled in, deep-frozen: nested
               ``MappingProxyType`` for tables and tuples for arrays.
               ``data["rlimits"]["nofile"] == (1024, 1024)``.
               ``to_dict()`` returns a mutable deep copy (dicts and lists).
    ``files``  real (absolute, symlink-resolved) paths of the files read,
               parents before children, each once; () for from_dict/from_toml
               without extends
    ``hash``   hex sha256 of the canonical JSON of the normalized data
    Profiles compare equal when their hashes are equal.
    """

    name: str
    data: Mapping[str, Any]
    files: tuple[str, ...]
    hash: str

    def get(self, dotted_key: str) -> Any:
        """``get("rlimits.nofile")`` -> (1024, 1024); ``get("env")`` -> the section;
        deeper table keys work too (``get("env.set.PATH")``)."""
        if not isinstance(dotted_key, str):
            raise ProfileError(expected_error("a dotted key", dotted_key).message, file=self.name)
        node: Any = self.data
        for p in dotted_key.split("."):
            if not isinstance(node, Mapping) or p not in node:
                local = list(node) if isinstance(node, Mapping) else []
                msg = f"unknown key '{p}'" + suggest(str(p), local)
                raise ProfileError(msg, file=self.name, key=str(dotted_key))
            node = node[p]
        return node

    def to_dict(self) -> dict:
        """A mutable deep copy of ``data`` (dicts and lists); from_dict() accepts it back."""
        return _thaw(self.data)

    def __eq__(self, other):
        return isinstance(other, Profile) and other.hash == self.hash

    def __hash__(self):
        return hash(self.hash)

    def __repr__(self):
        return f"Profile(name={self.name!r}, hash={self.hash[:12]}..., files={self.files!r})"

    def __reduce__(self):
        return (_rebuild, (self.name, self.to_dict(), self.files, self.hash))


def _rebuild(name, data, files, hash_):
    return Profile(name, _freeze(data), tuple(files), hash_)


def _finish(name: str, raw: Any, file: str, base_dir: Path | None, real: str | None,
            overrides: Sequence[str]) -> Profile:
    loader = _Loader()
    try:
        merged, origins = loader.expand(raw, file, base_dir, [(real, name)])
        if isinstance(overrides, str):
            overrides = [overrides]
        for item in overrides:
            over = _override(item)
            over_o = _Origins(OVERRIDE_FILE)
            over_o.mark(over, OVERRIDE_FILE)
            seccomp_oci_layer(merged, origins, over, None)
            _merge(merged, origins, over, over_o)
        data = _validate(merged, origins)
    except RecursionError:
        raise ProfileError("value nested too deeply", file=file) from None
    return Profile(name=name, data=_freeze(data), files=tuple(loader.files),
                   hash=_canonical_hash(data))


def load(name_or_path: str, overrides: Sequence[str] = ()) -> Profile:
    """Load a profile by name (searched like ``extends``) or path (relative to
    the current directory), resolve ``extends``, apply ``overrides``
    ("dotted.key=TOML value", or a plain string if it is not TOML) and validate."""
    path = resolve_name(name_or_path)
    raw = _read_file(path)
    return _finish(name_or_path, raw, str(path), path.parent,
                   os.path.realpath(path), overrides)


def from_toml(text: str, name: str = "<string>", overrides: Sequence[str] = ()) -> Profile:
    """Validate TOML text; relative ``extends`` paths are relative to the current directory."""
    if not isinstance(text, str):
        raise ProfileError(expected_error("TOML text", text).message, file=name)
    return _finish(name, _parse_toml(text, name), name, None, None, overrides)


def from_dict(data: Mapping, name: str = "<dict>", overrides: Sequence[str] = ()) -> Profile:
    """Validate a dict shaped like the TOML (it may contain ``extends``; None
    means absent). Profile.data and Profile.to_dict() are accepted back as-is."""
    return _finish(name, data, name, None, None, overrides)
