"""Property tests: malformed profiles, whatever their shape, are a ProfileError.

Every entry point of the loader (`from_dict`, `from_toml`, `load` with overrides)
either returns a Profile or raises isolate.ProfileError: never another exception,
never a hang. A profile that loads either compiles into a plan or raises an
isolate.IsolateError (ProfileError, UnsupportedError, SandboxSetupError). The CLI
turns a bad override into exit status 2 and one line on stderr.

The generated strings leave out lone surrogates (hypothesis' default alphabet) and,
for the CLI, line breaks: each of those has tests of its own at the end of this file
(failures found while writing it), and keeping them out of the generators lets the
fuzzers look for other failures instead of rediscovering those.
"""

import contextlib
import datetime
import json
import math
import signal
import subprocess
import sys
import textwrap
import tomllib

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import isolate
from isolate.launch import plans
from isolate.plan import compile as compile_mod
from isolate import profile as profile_mod

from conftest import ROOT, cli

DEFAULT_PATH = ROOT / "profiles" / "default.toml"
DEFAULT_TOML = DEFAULT_PATH.read_text()
DEFAULT_DATA = tomllib.loads(DEFAULT_TOML)
DEFAULT_LINES = DEFAULT_TOML.splitlines()

SECTIONS = {s.name: s for s in profile_mod.SECTIONS if s.name}
FIELD_KEYS = sorted(f.key for f in profile_mod.FIELDS.values() if not f.meta)

FUZZ = settings(max_examples=500, deadline=5000, database=None, print_blob=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much,
                                       HealthCheck.data_too_large, HealthCheck.large_base_example])


# ---- never a hang ------------------------------------------------------------------------------
class Hang(AssertionError):
    pass


@contextlib.contextmanager
def bounded(seconds: float = 10):
    """Fail (instead of waiting forever) when the body takes longer than `seconds`."""
    def on_alarm(signum, frame):
        raise Hang(f"no answer within {seconds} s")

    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def profile_or_profile_error(fn, *args, **kwargs):
    """fn(...) -> the Profile, or None for a ProfileError; anything else fails the test."""
    with bounded():
        try:
            p = fn(*args, **kwargs)
        except isolate.ProfileError as e:
            assert str(e), "a ProfileError without a message"
            return None
        except Hang:
            raise
        except BaseException as e:
            raise AssertionError(f"{type(e).__name__} instead of ProfileError: {e!s:.300}") from e
    assert isinstance(p, profile_mod.Profile), type(p)
    return p


def plan_or_isolate_error(p):
    with bounded():
        try:
            plan = plans.compile_profile(p)
        except isolate.IsolateError:
            return None
        except Hang:
            raise
        except BaseException as e:
            raise AssertionError(f"compile_profile raised {type(e).__name__}, not an IsolateError: "
                                 f"{e!s:.300}") from e
    assert isinstance(plan, compile_mod.Plan), type(plan)
    return plan


# ---- values --------------------------------------------------------------------------------------
HUGE_INTS = [2**31 - 1, 2**31, 2**32 - 1, 2**32, 2**63 - 1, 2**63, 2**64 - 1, 2**64, -2**63, -1, 0,
             4294967294, 4294967295, 10**100, 10**5000, -10**5000, 2**100000]
INTERESTING = [
    "", " ", "\0", "a\0b", "\t", "\n", "é", "日本", "\U0001F600", "\u202e", "\ufeff", "\x7f",
    "unlimited", "UNLIMITED", " unlimited ", "64M", "1.5G", "4GiB", "100B", "1e999", "-1", "0x10",
    "inherit", "null", "pipe", "append:", "append:/x", "append:relative", "/", "/..", "/a/../b", "//x",
    "/tmp", "/usr", "/nonexistent/x", "{cwd}", "{home}/x", "{uid}", "{bogus}", "{", "}", "{{cwd}}", "{cwd",
    "@mount", "@default", "@nonexistent", "read", "no_such_syscall", "errno:EPERM", "errno:1", "errno:99999",
    "errno:", "errno:-1", "kill", "kill_process", "trap", "log", "allow", "trace:5", "notify",
    "CAP_SYS_ADMIN", "net_raw", "cap_bpf", "CAP_", "AF_UNIX", "unix", "netlink", "TIOCSTI", "FIONREAD",
    "default", "strict", "no-such-profile", "../default", "default.toml",
    "0 0 1", "0 100000 65536", "1 2", "a b c", "4294967295 0 1", "0 0 4294967296", "٣ ٣ ٣", "² ² ²",
    "none", "host", "netns", "new", "namespaces", "landlock", "both", "either", "fail", "rlimits",
    "box", "a" * 65, "-box", "LC_*", "PATH", "A=B",
]


def _big_text(n: int) -> str:
    return ("9", "a", "/x", "é")[n % 4] * (1000 + 1000 * n)


# (big values are built, not listed: hypothesis shows strategies' reprs in its reports)
texts = st.one_of(st.text(max_size=30), st.sampled_from(INTERESTING), st.text(st.characters(max_codepoint=0x7f)),
                  st.integers(0, 7).map(_big_text))
bytes_like = st.one_of(st.binary(max_size=20).map(lambda b: b.decode("latin-1")), st.binary(max_size=20).map(repr),
                       st.binary(max_size=20))


def _huge(i: int) -> int:
    # (drawn by index: hypothesis' repr of a sampled_from of them would hit the int->str limit)
    return HUGE_INTS[i]


huge_ints = st.integers(0, len(HUGE_INTS) - 1).map(_huge)
ints = st.one_of(st.integers(), st.integers(-2**70, 2**70), huge_ints)
scalars = st.one_of(
    st.none(), st.booleans(), ints, st.floats(allow_nan=True, allow_infinity=True), texts, bytes_like,
    st.datetimes(timezones=st.sampled_from([None, datetime.timezone.utc,
                                            datetime.timezone(datetime.timedelta(hours=-3))])),
    st.dates(), st.times(),
)
hashables = st.one_of(st.none(), st.booleans(), ints, st.floats(allow_nan=False), st.tuples(st.integers()))
keys = st.one_of(texts, st.sampled_from(sorted(SECTIONS) + [k.split(".")[1] for k in FIELD_KEYS] + ["extends"]))


def _nest(depth: int, kind: str):
    v: object = 1
    for _ in range(depth):
        v = [v] if kind == "list" else ({"k": v} if kind == "dict" else (v,))
    return v


deep = st.builds(_nest, st.integers(1, 5000), st.sampled_from(["list", "dict", "tuple"]))
values = st.recursive(
    st.one_of(scalars, deep),
    lambda ch: st.one_of(st.lists(ch, max_size=5), st.tuples(ch, ch), st.dictionaries(keys, ch, max_size=5),
                         st.dictionaries(hashables, ch, min_size=1, max_size=3)),
    max_leaves=20,
)


# ---- values shaped by the schema -------------------------------------------------------------------
def _cls(name):
    return getattr(profile_mod, name, None) or type(None)


def from_validator(t, depth: int = 0):
    """Values near what validator `t` accepts: often valid, often just off."""
    near = st.one_of(scalars, st.sampled_from(INTERESTING))
    if depth > 3:
        return near
    if isinstance(t, _cls("Optional")):
        return st.one_of(st.none(), from_validator(t.inner, depth + 1))
    if isinstance(t, _cls("Bool")):
        return st.one_of(st.booleans(), near)
    if isinstance(t, _cls("Choice")):
        return st.one_of(st.sampled_from(t.choices), st.sampled_from(t.choices).map(str.upper), near)
    if isinstance(t, _cls("Int")):
        lo = -5 if t.lo is None else t.lo
        hi = 2**65 if t.hi is None else t.hi
        return st.one_of(st.integers(lo - 2, hi + 2), st.sampled_from([lo, hi, lo - 1, hi + 1]), near)
    if isinstance(t, _cls("RLimit")):
        one = st.one_of(st.integers(-2, 2**64), st.sampled_from(["unlimited", "64M", "1G", "8E", "9E", "-1", "x"]))
        return st.one_of(one, st.fixed_dictionaries({"soft": one, "hard": one}), st.lists(one, min_size=1, max_size=3),
                         st.fixed_dictionaries({"soft": one}), near)
    if isinstance(t, _cls("ListOf")):
        return st.one_of(st.lists(from_validator(t.item, depth + 1), max_size=4), near)
    if isinstance(t, _cls("MapOf")):
        return st.one_of(st.dictionaries(texts, from_validator(t.value, depth + 1), max_size=3), near)
    if isinstance(t, _cls("Table")):
        return st.one_of(
            st.fixed_dictionaries({}, optional={k: from_validator(v, depth + 1) for k, v in t.fields.items()}),
            near)
    if isinstance(t, _cls("IdMapEntry")):
        n = st.integers(-1, 2**32 + 1)
        return st.one_of(st.tuples(n, n, n).map(lambda x: "%d %d %d" % x), st.lists(n, min_size=2, max_size=4),
                         st.fixed_dictionaries({"inside": n, "outside": n}, optional={"count": n}), near)
    if isinstance(t, _cls("PathOrTable")):
        path = st.sampled_from(["/usr", "/etc", "/tmp", "/nonexistent", "{cwd}", "{home}", "/x/../y", "rel", "/"])
        return st.one_of(path, st.fixed_dictionaries(
            {"source": path, "path": path},
            optional={"target": path, "optional": st.booleans(), "size": from_validator(profile_mod.RLimit(True)),
                      "mode": st.integers(-1, 0o10000), "bogus": scalars}), near)
    return near


def field_value(key: str):
    return from_validator(profile_mod.FIELDS[key].type)


def section_strategy(name: str):
    fields = {f.name: from_validator(f.type) for f in SECTIONS[name].fields}
    return st.one_of(
        st.fixed_dictionaries({}, optional=fields),
        st.fixed_dictionaries({}, optional=fields).flatmap(
            lambda d: st.dictionaries(keys, values, max_size=2).map(lambda extra: {**d, **extra})),
        values,
    )


EXTENDS = st.one_of(st.sampled_from(["default", "strict", "no-such", "", "/nonexistent.toml", str(DEFAULT_PATH),
                                     "./nope.toml", "profiles/default.toml", "/", "isolate/profile.py"]),
                    st.lists(st.sampled_from(["default", "strict", "no-such", str(DEFAULT_PATH)]), max_size=3),
                    values)
shaped = st.fixed_dictionaries({}, optional={**{name: section_strategy(name) for name in SECTIONS},
                                             "extends": EXTENDS})


# ---- TOML text ------------------------------------------------------------------------------------------
def _str(k) -> str:
    return f"0x{k:x}" if isinstance(k, int) and abs(k) > 10**300 else str(k)


def toml_value(v, depth: int = 0) -> str:
    """Render a value as TOML (not always valid TOML: invalid renderings are fine too)."""
    if depth > 200:
        return "[]"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v) if abs(v) < 10**300 else (f"0x{v:x}" if v > 0 else "-0x1")
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)
    if isinstance(v, bytes):
        return json.dumps(v.decode("latin-1"))
    if isinstance(v, (datetime.datetime, datetime.date, datetime.time)):
        return v.isoformat()
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(toml_value(x, depth + 1) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{json.dumps(_str(k), ensure_ascii=False)} = {toml_value(x, depth + 1)}"
                               for k, x in v.items()) + "}"
    return json.dumps(_str(v))


def toml_doc(d: dict) -> str:
    lines = []
    for k, v in d.items():
        if isinstance(v, dict):
            lines.append(f"[{json.dumps(_str(k), ensure_ascii=False)}]")
            lines += [f"{json.dumps(_str(kk), ensure_ascii=False)} = {toml_value(vv)}" for kk, vv in v.items()]
        else:
            lines.insert(0, f"{json.dumps(_str(k), ensure_ascii=False)} = {toml_value(v)}")
    return "\n".join(lines) + "\n"


def _splice(args) -> str:
    text, pos, insert, cut = args
    pos = pos % (len(text) + 1)
    return text[:pos] + insert + text[pos + cut:]


def _default_toml() -> str:
    return DEFAULT_TOML


def _default_lines(indexes) -> str:
    return "\n".join(DEFAULT_LINES[i] for i in indexes)


def _huge_toml(which: int) -> str:
    return "x = 9" + "9" * 5000 if which == 0 else "[rlimits]\nnofile = 1" + "0" * 5000


def _deep_toml(args) -> str:
    n, kind = args
    if kind == "array":
        return "a = " + "[" * n + "]" * n
    if kind == "inline":
        return "a = " + "{b = " * n + "1" + "}" * n
    return "[" + ".".join(["t"] * n) + "]\n"


toml_texts = st.one_of(
    st.text(max_size=200),
    shaped.map(toml_doc),
    st.tuples(st.one_of(shaped.map(toml_doc), st.builds(_default_toml)), st.integers(0, 10**5),
              st.text(max_size=20), st.integers(0, 20)).map(_splice),
    st.lists(st.integers(0, len(DEFAULT_LINES) - 1), max_size=60).map(_default_lines),
    st.permutations(range(len(DEFAULT_LINES))).map(_default_lines),
    st.tuples(st.integers(1, 3000), st.sampled_from(["array", "inline", "table"])).map(_deep_toml),
    st.integers(0, 1).map(_huge_toml),
    st.sampled_from(["a = 1979-05-27T07:32:00Z", "extends = 'strict'\n", "extends = ['default', 'default']\n",
                     "[[namespaces]]\n", 'extends = "default"\n[env.set]\n"A\\u0000B" = "x"\n',
                     "\ufeff[namespaces]\n"]),
)


# ---- overrides ------------------------------------------------------------------------------------------
def _join_key(parts) -> str:
    return ".".join(parts)


override_keys = st.one_of(
    st.sampled_from(FIELD_KEYS),
    st.sampled_from(FIELD_KEYS).flatmap(lambda k: st.lists(keys, max_size=2).map(lambda more: ".".join([k, *more]))),
    st.lists(st.one_of(keys, st.sampled_from(["", " ", "extends"])), min_size=1, max_size=4).map(_join_key),
    st.sampled_from(sorted(SECTIONS)),
)
override_values = st.one_of(
    values.map(toml_value),
    texts,
    st.sampled_from(FIELD_KEYS).flatmap(field_value).map(toml_value),
)
overrides_items = st.one_of(
    st.tuples(override_keys, override_values).map(lambda kv: f"{kv[0]}={kv[1]}"),
    st.sampled_from(FIELD_KEYS).flatmap(lambda k: field_value(k).map(lambda v: f"{k}={toml_value(v)}")),
    texts,
    scalars,
)


# ---- the properties ---------------------------------------------------------------------------------------
@FUZZ
@given(values)
def test_from_dict_with_anything_at_the_top(data):
    profile_or_profile_error(profile_mod.from_dict, data)


@FUZZ
@given(st.dictionaries(keys, values, max_size=6))
def test_from_dict_with_arbitrary_tables(data):
    profile_or_profile_error(profile_mod.from_dict, data)


@FUZZ
@given(shaped)
def test_from_dict_shaped_like_the_schema(data):
    p = profile_or_profile_error(profile_mod.from_dict, data)
    if p is not None:
        plan_or_isolate_error(p)


@FUZZ
@given(toml_texts)
def test_from_toml_with_arbitrary_text(text):
    p = profile_or_profile_error(profile_mod.from_toml, text)
    if p is not None:
        plan_or_isolate_error(p)


def _paths(node, prefix=()):
    """Every key/index path into `node`, tables and arrays included."""
    out = []
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for k, v in items:
        out.append(prefix + (k,))
        out += _paths(v, prefix + (k,))
    return out


DEFAULT_PATHS = _paths(DEFAULT_DATA)


def _mutate(replacements, additions):
    """default.toml's data with the values at some paths replaced and some keys added."""
    import copy

    out = copy.deepcopy(DEFAULT_DATA)
    for index, value in replacements:
        *parents, last = DEFAULT_PATHS[index]
        node = out
        for p in parents:
            try:
                node = node[p]
            except (KeyError, IndexError, TypeError):
                break
        else:
            if isinstance(node, (dict, list)):
                try:
                    node[last] = value
                except (IndexError, TypeError):
                    pass
    for section, key, value in additions:
        target = out.get(section)
        (target if isinstance(target, dict) else out)[key] = value
    return out


mutations = st.builds(
    _mutate,
    st.lists(st.tuples(st.integers(0, len(DEFAULT_PATHS) - 1),
                       st.one_of(values, st.sampled_from(FIELD_KEYS).flatmap(field_value))), max_size=4),
    st.lists(st.tuples(st.one_of(st.sampled_from(sorted(SECTIONS)), keys), keys, values), max_size=2),
)


@FUZZ
@given(mutations, st.lists(overrides_items, max_size=3))
def test_mutations_of_the_default_profile(data, overrides):
    p = profile_or_profile_error(profile_mod.from_dict, data, overrides=overrides)
    if p is not None:
        plan_or_isolate_error(p)


@FUZZ
@given(st.one_of(st.lists(overrides_items, max_size=5), overrides_items.filter(lambda o: isinstance(o, str))))
def test_load_default_with_random_overrides(overrides):
    p = profile_or_profile_error(profile_mod.load, "default", overrides=overrides)
    if p is not None:
        plan_or_isolate_error(p)


# Overrides that mostly load, so that compile_profile sees many different valid profiles.
PLAUSIBLE = {
    "identity.uid_map": ['["0 100000 65536"]', '["0 0 1", "1 100000 10"]', "[]", '["1000 0 1"]',
                         '[{inside = 0, outside = 0, count = 1}]'],
    "identity.gid_map": ['["0 100000 65536"]', "[]", '["0 0 1"]'],
    "identity.uid": ["0", "1000", "65534", "4294967294"],
    "identity.gid": ["0", "1000", "65534"],
    "identity.hostname": ['"box"', '"a.b"', '"' + "x" * 64 + '"'],
    "fds.stdin": ['"null"', '"pipe"', '"/dev/null"'],
    "fds.pass": ["[3]", "[1000]", "[]"],
    "env.set": ['{A = "b"}', "{}"],
    "env.keep": ['["*"]', '["LC_*", "HOME"]'],
    "process.cwd": ['"/"', '"{home}"', '"{cwd}/sub"', '"/nonexistent"', '"{uid}"'],
    "seccomp.default_action": ['"allow"', '"kill"', '"errno:EPERM"', '"log"', '"trap"', '"kill_process"'],
    "seccomp.deny_action": ['"errno:EACCES"', '"kill"', '"errno:0"'],
    "seccomp.deny": ["[]", '["@mount"]', '["read"]', '["@default"]', '["clone3", "unshare"]'],
    "seccomp.allow": ['["@default"]', '["read", "write", "exit_group"]', "[]"],
    "seccomp.rules": ['[{syscall = "personality", action = "allow", args = [{index = 0, op = "eq", value = 1}]}]',
                      '[{syscall = "ioctl", action = "kill", args = [{index = 1, op = "masked_eq", value = 1, '
                      'mask = 3}]}]', '[{syscall = "read", action = "errno:5"}]', "[]"],
    "seccomp.socket_families": ['["unix"]', "[]", '["inet", "netlink", "packet"]'],
    "seccomp.deny_ioctls": ['[1, "TIOCSTI"]', "[]", "[4294967295]"],
    "seccomp.other_arches": ['"allow"', '"kill"', '"errno:1"'],
    "capabilities.keep": ['["CAP_NET_RAW"]', '["CAP_SYS_ADMIN", "CAP_BPF"]', '["checkpoint_restore"]', "[]"],
    "filesystem.ro": ['["/usr"]', '["/nonexistent"]', '[{source = "/nonexistent", optional = true}]',
                      '["/etc/passwd"]', '[{source = "/usr", target = "/opt/u"}]', '["/proc"]', '["/dev/null"]'],
    "filesystem.rw": ['["{cwd}"]', '["/tmp"]', "[]", '["{home}"]'],
    "filesystem.tmpfs": ['["/tmp"]', '[{path = "/run", size = "1M", mode = 448}]', "[]"],
    "filesystem.dirs": ['["/a/b/c"]', '["/usr/x"]'],
    "filesystem.symlinks": ['[{path = "/l", target = "/usr"}]', '[{path = "/usr", target = "x"}]'],
    "filesystem.files": ['[{path = "/f", content = "hi"}]', '[{path = "/etc/x", content = ""}]'],
    "filesystem.root_size": ['"1M"', "4096", '"1G"'],
    "network.mode": ['"none"', '"host"', '"netns"'],
    "network.netns": ['"no-such-ns"', '"/proc/self/ns/net"', '"/nonexistent"'],
    "cgroup.memory_max": ['"64M"', "1"],
    "cgroup.memory_swap_max": ['"128M"'],
    "cgroup.pids_max": ["10", "1"],
}


def valid_value(t):
    """Values that validator `t` should mostly accept (st.nothing() where none is known)."""
    if isinstance(t, _cls("Optional")):
        return st.one_of(st.none(), valid_value(t.inner))
    if isinstance(t, _cls("Bool")):
        return st.booleans()
    if isinstance(t, _cls("Choice")):
        return st.sampled_from(t.choices)
    if isinstance(t, _cls("Int")):
        lo = 0 if t.lo is None else t.lo
        return st.integers(lo, lo + 1000 if t.hi is None else min(t.hi, lo + 1000))
    if isinstance(t, _cls("RLimit")):
        one = st.one_of(st.integers(0, 1 << 20), st.just("unlimited"))
        return st.one_of(one, st.builds(lambda a: {"soft": a, "hard": "unlimited"}, one))
    if isinstance(t, _cls("ByteSize")):
        return st.sampled_from(["64M", "1G", 4096])
    if isinstance(t, _cls("ListOf")):
        item = valid_value(t.item)
        return st.just([]) if item.is_empty else st.lists(item, max_size=3)
    if isinstance(t, _cls("MapOf")):
        value = valid_value(t.value)
        return st.just({}) if value.is_empty else st.dictionaries(st.from_regex(r"[A-Z_]{1,8}", fullmatch=True),
                                                                  value, max_size=3)
    if isinstance(t, _cls("IdMapEntry")):
        return st.just("0 0 1")
    if isinstance(t, _cls("FdTarget")):
        return st.sampled_from(["inherit", "null", "pipe", "/dev/null"] + (["append:/tmp/x"] if t.output else []))
    if t is profile_mod.BindEntry:
        return st.sampled_from(["/usr", "/etc", "/tmp", "{cwd}", "/nonexistent"])
    if t is profile_mod.TmpfsEntry:
        return st.sampled_from(["/tmp", "/run", "/var/tmp"])
    if isinstance(t, _cls("Str")) and t.check is None:
        return st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7e), max_size=10)
    return st.nothing()


def _plausible(key: str):
    own = st.sampled_from(PLAUSIBLE[key]) if key in PLAUSIBLE else st.nothing()
    valid = valid_value(profile_mod.FIELDS[key].type).map(toml_value)
    return st.one_of(own, valid)


plausible_overrides = st.lists(
    st.sampled_from(FIELD_KEYS).flatmap(lambda k: _plausible(k).map(lambda v: f"{k}={v}")), max_size=6)


@FUZZ
@given(plausible_overrides)
def test_profiles_that_load_compile_or_raise_an_isolate_error(overrides):
    p = profile_or_profile_error(profile_mod.load, "default", overrides=overrides)
    if p is not None:
        plan_or_isolate_error(p)


# ---- the command line ------------------------------------------------------------------------------------
def _bad_for_the_loader(override: str) -> bool:
    try:
        profile_mod.load("default", overrides=[override])
    except isolate.ProfileError:
        return True
    except Exception:
        return False  # another failure: the library properties above report those
    return False


# No NUL (cannot be in argv), no line breaks and no lone surrogates (known failures, below), and
# nothing starting with "-": argparse takes `--set -x=1` for an option and prints its usage.
cli_text = st.text(st.characters(blacklist_categories=("Cs", "Cc")), max_size=20)
cli_overrides = st.one_of(
    st.tuples(st.one_of(st.sampled_from(FIELD_KEYS), cli_text), cli_text).map(lambda kv: f"{kv[0]}={kv[1]}"),
    st.sampled_from(FIELD_KEYS).flatmap(lambda k: field_value(k).map(lambda v: f"{k}={toml_value(v)}")),
    cli_text,
).filter(lambda o: "\0" not in o and "\n" not in o and "\r" not in o and not o.startswith("-"))


@settings(max_examples=8, deadline=None, database=None, print_blob=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(cli_overrides)
def test_cli_bad_override_exits_2_with_one_line(override):
    assume(_bad_for_the_loader(override))
    r = cli("run", "--set", override, "--", "true")
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert "Traceback" not in r.stderr
    assert len(r.stderr.splitlines()) == 1, r.stderr
    assert r.stderr.startswith("isolate: ")


@pytest.mark.parametrize("override", [
    "namespaces.pid=maybe", "rlimits.nofile=-1", "nosuch.key=1", "rlimits=3", "=1", "noequals",
    "identity.uid_map=[\"0 0\"]", "seccomp.deny=[\"no_such_call\"]", "rlimits.nofile=1" + "0" * 5000,
    "env.set.A=1", "fds.stdout=relative", "process.cwd={nope}",
    "filesystem.ro=[\"/a/../b\"]", "extends=strict", "env..x=1", "capabilities.keep=[\"CAP_NOPE\"]",
])
def test_cli_known_bad_overrides_exit_2_with_one_line(override):
    r = cli("run", "--set", override, "--", "true")
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert "Traceback" not in r.stderr
    assert len(r.stderr.splitlines()) == 1, r.stderr


# ---- failures found by the properties above, each with its smallest reproduction --------------------------
@pytest.mark.parametrize("load", [
    lambda: profile_mod.from_dict({"env": {"set": {"A": "\ud800"}}}),
    lambda: profile_mod.from_dict({"filesystem": {"symlinks": [{"path": "/l", "target": "/\udcff"}]}}),
    lambda: profile_mod.load("default", overrides=["env.set.A=\udcff"]),
], ids=["from_dict-env-value", "from_dict-symlink-target", "load-override"])
def test_lone_surrogates_are_a_profile_error(load):
    # Today: UnicodeEncodeError (a ValueError) from the profile's canonical hash
    # (json.dumps(..., ensure_ascii=False).encode("utf-8") in isolate/profile.py).
    # "\udcff" is what a non-UTF-8 byte in argv, environ or a file name decodes to.
    profile_or_profile_error(load)


@pytest.mark.parametrize("filesystem", [
    {"symlinks": [{"path": "/l", "target": "/\ud800"}]},
    {"dirs": ["/d\ud800"]},
    {"files": [{"path": "/f", "content": "\ud800"}]},
    {"files": [{"path": "/f", "content": "\udcff"}]},
    {"tmpfs": ["/t\ud800"]},
], ids=["symlink-target", "dirs", "file-content", "file-content-dcff", "tmpfs"])
def test_compiling_a_string_without_a_file_system_encoding_is_an_isolate_error(filesystem):
    # "\ud800" (unlike "\udcff", a surrogateescape'd byte) has no encoding at all: the
    # profile loads, then compile_profile raises UnicodeEncodeError from os.fsencode.
    p = profile_or_profile_error(profile_mod.from_dict, {"extends": "default", "filesystem": filesystem})
    if p is not None:
        plan_or_isolate_error(p)


@pytest.mark.parametrize("section", [
    {"env": {"set": {"A": "\ud800"}}},
    {"process": {"cwd": "/\ud800"}},
    {"fds": {"stdout": "/tmp/\ud800"}},
], ids=["env-value", "cwd", "stdout-path"])
def test_a_profile_that_compiles_launches_or_raises_an_isolate_error(section):
    # These load and compile; isolate.run() then raises UnicodeEncodeError (os.fsencode).
    p = profile_or_profile_error(profile_mod.from_dict, {"extends": "default", **section})
    if p is None or plan_or_isolate_error(p) is None:
        return
    with bounded(60):
        try:
            r = isolate.run(["true"], profile=p, timeout=30)
        except isolate.IsolateError:
            return
        except Exception as e:
            raise AssertionError(f"isolate.run raised {type(e).__name__}, not an IsolateError: {e!s:.200}") from e
    assert r.returncode == 0


def test_cli_non_utf8_override_exits_2():
    # argv bytes that are not UTF-8 reach Python as lone surrogates (surrogateescape).
    r = subprocess.run([sys.executable, "-m", "cli.main", "run", "--set", b"env.set.A=\xff", "--", "true"],
                       capture_output=True, cwd=ROOT, timeout=60)
    err = r.stderr.decode(errors="replace")
    assert r.returncode in (0, 2), (r.returncode, err)  # accepted (bytes passed through) or refused as usage
    assert "Traceback" not in err and len(err.splitlines()) <= 1, err


@pytest.mark.parametrize("override", ["bad\nkey=1", "rlimits.no\rfile=1"])
def test_cli_error_for_a_key_with_a_line_break_is_one_line(override):
    r = cli("run", "--set", override, "--", "true")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert len(r.stderr.splitlines()) == 1, r.stderr


def test_extends_of_an_endless_file_is_a_profile_error_not_a_memory_blowup():
    # Run where memory is bounded (1 GiB of address space): today the loader reads
    # /dev/zero until it runs out of memory (MemoryError, or the OOM killer without a limit).
    code = textwrap.dedent("""
        import resource, sys
        resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))
        import isolate
        from isolate import profile
        try:
            profile.from_dict({"extends": "/dev/zero"})
        except isolate.ProfileError as e:
            print("ProfileError:", e)
        except BaseException as e:
            print(type(e).__name__, e)
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert r.stdout.startswith("ProfileError:"), (r.stdout, r.stderr[-500:])
