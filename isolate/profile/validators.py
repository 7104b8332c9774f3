"""The validation primitives of the profile schema: small validators (Bool, Int, Str, Choice,
Optional, ListOf, MapOf, Table) that normalize a value or raise Invalid naming what was expected."""

from __future__ import annotations

import copy
import datetime
import difflib
import json
import os
import re
from typing import Any, Callable, Iterable, Mapping, Sequence


# --------------------------------------------------------------------------
# Validation primitives
# --------------------------------------------------------------------------


class Invalid(Exception):
    """Raised by validators. ``path`` is relative to the value being checked:
    a list of str (table keys) and int (array indexes)."""

    def __init__(self, message: str, path: Sequence[str | int] = ()):
        super().__init__(message)
        self.message = message
        self.path = list(path)

    def under(self, part: str | int) -> "Invalid":
        self.path.insert(0, part)
        return self


_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


def _key_part(k: str) -> str:
    return k if _BARE_KEY.match(k) else json.dumps(k)


def dotted_key(path: Iterable[str | int]) -> str:
    out = ""
    for p in path:
        if isinstance(p, int):
            out += f"[{p}]"
        else:
            out += ("." if out else "") + _key_part(p)
    return out


def short(s: str, limit: int = 60) -> str:
    r = repr(s)
    return r if len(r) <= limit else r[: limit - 4] + "...'"


def describe_value(v: Any) -> str:
    """Describe a value for 'got ...' in messages (never fails, never huge)."""
    if v is None:
        return "no value (None)"
    if isinstance(v, bool):
        return "boolean " + ("true" if v else "false")
    if isinstance(v, int):
        if v.bit_length() > 96:
            return f"integer of {v.bit_length()} bits"
        return f"integer {v}"
    if isinstance(v, float):
        return f"float {v!r}"
    if isinstance(v, str):
        return f"string {short(v)}"
    if isinstance(v, (list, tuple)):
        return f"array of {len(v)} item" + ("" if len(v) == 1 else "s")
    if isinstance(v, Mapping):
        return "table"
    if isinstance(v, datetime.datetime):
        return f"datetime {v.isoformat()}"
    if isinstance(v, datetime.date):
        return f"date {v.isoformat()}"
    if isinstance(v, datetime.time):
        return f"time {v.isoformat()}"
    return f"{type(v).__name__} object"


def expected_error(what: str, v: Any) -> Invalid:
    return Invalid(f"expected {what}, got {describe_value(v)}")


def suggest(word: str, candidates: Iterable[str]) -> str:
    m = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.6)
    return f"; did you mean '{m[0]}'?" if m else ""


def is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


class Validator:
    """Checks and normalizes one value. ``describe`` is shown in the reference."""

    describe = "value"

    def __call__(self, v: Any) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError


class Bool(Validator):
    describe = "boolean"

    def __call__(self, v):
        if isinstance(v, bool):
            return v
        raise expected_error("a boolean", v)


class Int(Validator):
    def __init__(self, lo: int | None = None, hi: int | None = None):
        self.lo, self.hi = lo, hi
        if lo is not None and hi is not None:
            self.what = f"an integer between {lo} and {hi}"
        elif lo is not None:
            self.what = f"an integer >= {lo}"
        elif hi is not None:
            self.what = f"an integer <= {hi}"
        else:
            self.what = "an integer"
        self.describe = self.what[3:] if self.what.startswith("an ") else self.what

    def __call__(self, v):
        if not is_int(v):
            raise expected_error(self.what, v)
        if (self.lo is not None and v < self.lo) or (self.hi is not None and v > self.hi):
            raise expected_error(self.what, v)
        return v


class Str(Validator):
    """A string without NUL; ``check(s)`` may normalize it or raise Invalid."""

    def __init__(self, check: Callable[[str], Any] | None = None, describe: str = "string",
                 what: str = "a string"):
        self.check, self.describe, self.what = check, describe, what

    def __call__(self, v):
        if not isinstance(v, str):
            raise expected_error(self.what, v)
        if "\0" in v:
            raise Invalid("must not contain a NUL character")
        try:
            # Every string ends up as bytes for the kernel (a path, a value, file content):
            # undecodable bytes (\udc80-\udcff) pass through, other lone surrogates cannot.
            os.fsencode(v)
        except UnicodeEncodeError:
            raise Invalid(f"not representable as bytes (a lone surrogate): {ascii(v)[:60]}") from None
        return self.check(v) if self.check else v


class Choice(Validator):
    def __init__(self, *choices: str):
        self.choices = choices
        self.describe = " or ".join(f'"{c}"' for c in choices)

    def __call__(self, v):
        if isinstance(v, str) and v in self.choices:
            return v
        raise expected_error("one of " + ", ".join(self.choices), v)


class Optional(Validator):
    """Absent (None) or the inner value. TOML cannot write None: just omit the key."""

    def __init__(self, inner: Validator):
        self.inner = inner
        self.describe = inner.describe

    def __call__(self, v):
        return None if v is None else self.inner(v)


class ListOf(Validator):
    def __init__(self, item: Validator, *, unique: bool = False, dedupe: bool = False,
                 sort_key: Callable[[Any], Any] | None = None, max_len: int | None = None,
                 post: Callable[[list], None] | None = None, describe: str | None = None):
        self.item, self.unique, self.dedupe = item, unique, dedupe
        self.sort_key, self.max_len, self.post = sort_key, max_len, post
        self.describe = describe or f"array of {item.describe}"

    def __call__(self, v):
        if not isinstance(v, (list, tuple)):
            raise expected_error("an array", v)
        if self.max_len is not None and len(v) > self.max_len:
            raise Invalid(f"expected at most {self.max_len} items, got {len(v)}")
        out: list = []
        for i, x in enumerate(v):
            try:
                y = self.item(x)
            except Invalid as e:
                raise e.under(i) from None
            if y in out:
                if self.unique:
                    raise Invalid(f"duplicate value {describe_value(y).split(' ', 1)[-1]}", [i])
                if self.dedupe:
                    continue
            out.append(y)
        if self.sort_key is not None:
            out.sort(key=self.sort_key)
        if self.post is not None:
            self.post(out)
        return out


class MapOf(Validator):
    """A table whose keys are free-form (checked by ``key``) and values uniform."""

    def __init__(self, key: Callable[[str], None], value: Validator, describe: str):
        self.key, self.value, self.describe = key, value, describe

    def __call__(self, v):
        if not isinstance(v, Mapping):
            raise expected_error("a table", v)
        out = {}
        for k, x in v.items():
            try:
                self.key(k)
                out[k] = self.value(x)
            except Invalid as e:
                raise e.under(k) from None
        return out


class Table(Validator):
    """A table with a fixed set of keys. ``fields`` maps key -> validator;
    keys in ``required`` must be present, the others default to ``defaults``
    (or None). ``post(out)`` may cross-check the result."""

    def __init__(self, fields: dict[str, Callable[[Any], Any]], required: Iterable[str] = (),
                 defaults: dict[str, Any] | None = None,
                 post: Callable[[dict], None] | None = None, describe: str = "table"):
        self.fields, self.required = fields, tuple(required)
        self.defaults, self.post, self.describe = defaults or {}, post, describe

    def __call__(self, v):
        if not isinstance(v, Mapping):
            raise expected_error("a table", v)
        for k in v:
            if k not in self.fields:
                raise Invalid(f"unknown key '{k}'" + suggest(k, self.fields), [k])
        out = {}
        for name, val in self.fields.items():
            if name in v:
                try:
                    out[name] = val(v[name])
                except Invalid as e:
                    raise e.under(name) from None
            elif name in self.required:
                raise Invalid(f"missing required key '{name}'")
            else:
                out[name] = copy.deepcopy(self.defaults.get(name))
        if self.post is not None:
            self.post(out)
        return out
