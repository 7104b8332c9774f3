"""Tests for isolate.profile: the schema, the loader, extends, overrides, hashing."""

from __future__ import annotations

import datetime
import json
import os
import pickle
import re
import sys
import textwrap
from pathlib import Path

import pytest

from isolate import profile as P
from isolate.profile import schema as P_schema
from isolate.errors import ProfileError

REPO = Path(__file__).resolve().parent.parent

# --------------------------------------------------------------------------
# Fixtures
# --------------------------------------------------------------------------

@pytest.fixture(autouse=True)
def clean_search_path(monkeypatch, tmp_path):
    """No user profiles from the real home directory or environment."""
    monkeypatch.delenv("ISOLATE_PROFILE_PATH", raising=False)
    home = tmp_path / "_home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    return home


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


def err(text: str, name: str = "t.toml", **kw) -> ProfileError:
    with pytest.raises(ProfileError) as ei:
        P.from_toml(textwrap.dedent(text), name, **kw)
    return ei.value


def err_dict(data, name: str = "d") -> ProfileError:
    with pytest.raises(ProfileError) as ei:
        P.from_dict(data, name)
    return ei.value


def check(e: ProfileError, file: str | None, key: str | None, *needles: str) -> None:
    s = str(e)
    if file is not None:
        assert e.file == file, s
        assert s.startswith(file + ": "), s
    if key is not None:
        assert e.key == key, s
        assert f": {key}: " in f": {s}", s
    for n in needles:
        assert n in s, f"{n!r} not in {s!r}"


# --------------------------------------------------------------------------
# The shipped default profile
# --------------------------------------------------------------------------


def test_default_profile_loads():
    p = P.load("default")
    assert "default" in P.shipped_profiles()
    assert P.resolve_name("default") == REPO / "profiles" / "default.toml"
    assert p.name == "default"
    assert p.files == (str((REPO / "profiles" / "default.toml").resolve()),)
    assert all(p.data["namespaces"].values())
    assert p.get("identity.hostname") == "isolate"
    assert p.get("env.clear") is True
    assert dict(p.get("env.set")) == {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8"}
    assert p.get("env.keep") == ("TERM",)
    assert p.get("capabilities.keep") == ()
    assert p.get("process.die_with_parent") is True
    assert p.get("rlimits.core") == (0, 0)
    assert p.get("rlimits.nofile") == (1024, 1024)
    assert p.get("rlimits.cpu") is None
    sc = p.to_dict()["seccomp"]
    assert sc["default_action"] == "allow"
    assert sc["deny_action"] == "errno:EPERM"
    assert "@mount" in sc["deny"] and "@debug" in sc["deny"]
    # Denied outright, the rules below could not apply; and a denied clone3
    # (part of @namespaces) would break pthread_create: see default.toml.
    assert "personality" not in sc["deny"] and "@namespaces" not in sc["deny"]
    assert sc["deny_namespace_flags"] is True
    assert sc["deny_ioctls"] == ["TIOCSTI", "TIOCLINUX", "TIOCSCTTY", "TIOCNOTTY", "TIOCSETD", "TIOCCONS",
                                 "TIOCVHANGUP", "TIOCSSERIAL"]
    assert sc["restrict_suid_sgid"] is True
    assert {"open_tree", "quotactl_fd", "fanotify_init", "fanotify_mark"} <= set(sc["deny"])
    assert p.to_dict()["cgroup"] == {"memory_max": 4 << 30, "memory_swap_max": None, "pids_max": 1024,
                                     "fallback": "rlimits"}
    assert sc["socket_families"] == ["unix", "inet", "inet6"]
    assert sc["other_arches"] == "kill"
    assert sc["rules"] == [
        {"syscall": "personality", "action": "allow",
         "args": [{"index": 0, "op": "eq", "value": 0xFFFFFFFF, "mask": None}]},
        {"syscall": "personality", "action": "errno:EPERM",
         "args": [{"index": 0, "op": "ne", "value": 0xFFFFFFFF, "mask": None}]},
    ]
    assert re.fullmatch(r"[0-9a-f]{64}", p.hash)


def test_default_profile_seccomp_compiles():
    from isolate.plan import seccomp

    spec = P.load("default").to_dict()["seccomp"]
    for name in spec["deny"]:
        seccomp.check_syscall_name(name)
    bpf = seccomp.compile_filter(spec)
    assert bpf and len(bpf) % 8 == 0


_PROBE = r"""
import ctypes, os, sys, threading
from isolate import profile
from isolate.plan import seccomp
bpf = seccomp.compile_filter(profile.load("default").to_dict()["seccomp"])
libc = ctypes.CDLL(None, use_errno=True)
class Prog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]
buf = ctypes.create_string_buffer(bpf, len(bpf))
prog = Prog(len(bpf) // 8, ctypes.cast(buf, ctypes.c_void_p))
assert libc.prctl(38, 1, 0, 0, 0) == 0                        # PR_SET_NO_NEW_PRIVS
assert libc.prctl(22, 2, ctypes.byref(prog), 0, 0) == 0       # PR_SET_SECCOMP, FILTER
t = threading.Thread(target=lambda: None); t.start(); t.join()
print("thread ok")
SYS_personality = {"x86_64": 135, "aarch64": 92}[os.uname().machine]
u = ctypes.c_ulong
print("query", libc.syscall(SYS_personality, u(0xFFFFFFFF)) >= 0)
print("set", libc.syscall(SYS_personality, u(0x0040000)), ctypes.get_errno())  # ADDR_NO_RANDOMIZE
print("unshare", libc.unshare(0x20000), ctypes.get_errno())                # CLONE_NEWUTS
"""


def test_default_profile_filter_behaves_as_documented():
    import subprocess

    out = subprocess.run([sys.executable, "-c", _PROBE], cwd=REPO, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split("\n")[:4] == ["thread ok", "query True", "set -1 1", "unshare -1 1"]


def test_every_field_is_in_data_with_its_default():
    d = P.from_dict({}).to_dict()
    for key, f in P.FIELDS.items():
        if f.meta:
            assert key not in d
            continue
        assert d[f.section][f.name] == f.default, key
    assert set(d) == {s.name for s in P.SECTIONS if s.name}


def test_schema_defaults_are_normalized_values():
    for key, f in P.FIELDS.items():
        if f.default is not None:
            assert f.type(f.default) == f.default, key
        assert f.doc, key


# --------------------------------------------------------------------------
# Reference docs
# --------------------------------------------------------------------------


def test_reference_markdown_mentions_every_field():
    md = P.reference_markdown()
    for key, f in P.FIELDS.items():
        line = next((ln for ln in md.splitlines() if ln.startswith(f"| `{key}` |")), None)
        assert line is not None, key
        assert f.doc.split("(")[0].strip().replace("|", "\\|") in line
        # Four cells: key, type, default, description (escaped pipes don't count).
        assert len(re.findall(r"(?<!\\)\|", line)) == 5, line
    for sec in P.SECTIONS:
        if sec.name:
            assert f"## [{sec.name}]" in md
    assert "merge recursively" in md and "replace" in md


def test_new_section_is_a_few_lines(monkeypatch):
    sec = P.Section("example", "An example.", (
        P.Field("loopback", P.Bool(), True, "bring lo up"),
        P.Field("mtu", P.Optional(P.Int(68, 65535)), None, "MTU"),
    ))
    monkeypatch.setattr(P_schema, "SECTIONS", P.SECTIONS + (sec,))
    monkeypatch.setattr(P_schema, "SECTION_BY_NAME", {**P.SECTION_BY_NAME, "example": sec})
    monkeypatch.setattr(P_schema, "FIELDS", {**P.FIELDS, **{f.key: f for f in sec.fields}})
    p = P.from_toml("[example]\nmtu = 1500")
    assert p.get("example.loopback") is True and p.get("example.mtu") == 1500
    check(err("[example]\nmtu = 1"), "t.toml", "example.mtu", "between 68 and 65535")
    check(err("[example]\nloopbak = true"), "t.toml", "example.loopbak", "did you mean 'loopback'?")
    assert "`example.mtu`" in P.reference_markdown()


# --------------------------------------------------------------------------
# Errors: syntax, files, unknown keys, types
# --------------------------------------------------------------------------


def test_toml_syntax_error_names_file_line_and_column(tmp_path):
    f = write(tmp_path / "bad.toml", """\
        [namespaces]
        net = true
        pid = = false
        """)
    with pytest.raises(ProfileError) as ei:
        P.load(str(f))
    check(ei.value, str(f), None, "invalid TOML", "line 3, column")


def test_toml_syntax_error_at_end_of_document():
    check(err("x = [1,"), "t.toml", None, "invalid TOML", "end of document")


def test_toml_integer_too_long_to_parse():
    check(err("identity.uid = " + "9" * 5000), "t.toml", None, "invalid TOML")


def test_missing_file_is_named(tmp_path):
    missing = tmp_path / "nope.toml"
    with pytest.raises(ProfileError) as ei:
        P.load(str(missing))
    check(ei.value, str(missing), None, "not found")


def test_directory_and_bad_utf8(tmp_path):
    d = tmp_path / "dir.toml"
    d.mkdir()
    with pytest.raises(ProfileError, match="directory"):
        P.load(str(d))
    b = tmp_path / "bin.toml"
    b.write_bytes(b"x = '\xff'\n")
    with pytest.raises(ProfileError, match="UTF-8"):
        P.load(str(b))


def test_unknown_name(tmp_path):
    with pytest.raises(ProfileError) as ei:
        P.load("defualt")
    check(ei.value, "defualt", None, "no profile named 'defualt'", "did you mean 'default'?")


@pytest.mark.parametrize("text,key,needles", [
    ("namespace = {}", "namespace", ["unknown key 'namespace'", "did you mean 'namespaces'?"]),
    ("[rlimits]\nnofle = 3", "rlimits.nofle", ["unknown key 'nofle'", "did you mean 'nofile'?"]),
    ("[env]\nzzz = 1", "env.zzz", ["unknown key 'zzz'"]),
    ("nofile = 3", "nofile", ["did you mean 'rlimits.nofile'?"]),
    ("[env]\nhostname = 'x'", "env.hostname", ["did you mean 'identity.hostname'?"]),
    ("[[seccomp.rules]]\nsycall = 'read'\naction = 'allow'", "seccomp.rules[0].sycall",
     ["unknown key 'sycall'", "did you mean 'syscall'?"]),
    ("[[seccomp.rules]]\nsyscall = 'read'\naction = 'allow'\n"
     "args = [{index = 0, op = 'eq', value = 1, valeu = 2}]", "seccomp.rules[0].args[0].valeu",
     ["did you mean 'value'?"]),
    ("rlimits.nofile = {soft = 1, hrad = 2}", "rlimits.nofile.hrad", ["did you mean 'hard'?"]),
    ("identity.uid_map = [{inside = 0, outside = 1, count = 1, x = 1}]",
     "identity.uid_map[0].x", ["unknown key 'x'"]),
])
def test_unknown_keys(text, key, needles):
    check(err(text), "t.toml", key, *needles)


@pytest.mark.parametrize("text,key,needles", [
    ("namespaces.net = 'yes'", "namespaces.net", ["expected a boolean, got string 'yes'"]),
    ("namespaces.net = 1", "namespaces.net", ["expected a boolean, got integer 1"]),
    ("namespaces = 1", "namespaces", ["expected a table, got integer 1"]),
    ("namespaces = [true]", "namespaces", ["expected a table, got array"]),
    ("identity.uid = true", "identity.uid", ["expected an integer between 0 and 4294967294",
                                             "got boolean true"]),
    ("identity.uid = 1.0", "identity.uid", ["expected an integer", "got float 1.0"]),
    ("identity.uid = -1", "identity.uid", ["got integer -1"]),
    ("identity.uid = 4294967295", "identity.uid", ["got integer 4294967295"]),
    ("identity.uid = 1979-05-27T07:32:00Z", "identity.uid", ["got datetime 1979-05-27"]),
    ("identity.hostname = 1979-05-27", "identity.hostname", ["expected a string, got date"]),
    ("identity.hostname = 07:32:00", "identity.hostname", ["expected a string, got time"]),
    ("identity.gid = " + "9" * 60, "identity.gid", ["got integer of", "bits"]),
    ("env.keep = [['TERM']]", "env.keep[0]", ["expected a string, got array"]),
    ("env.keep = 'TERM'", "env.keep", ["expected an array, got string 'TERM'"]),
    ("env.clear = nan", "env.clear", ["expected a boolean, got float nan"]),
    ("fds.pass = [3, true]", "fds.pass[1]", ["got boolean true"]),
    ("seccomp.rules = {syscall = 'read'}", "seccomp.rules", ["expected an array, got table"]),
    ("seccomp.rules = [1]", "seccomp.rules[0]", ["expected a table, got integer 1"]),
    ("capabilities.keep = [1]", "capabilities.keep[0]", ["expected a string, got integer 1"]),
    ("process.die_with_parent = 'true'", "process.die_with_parent", ["expected a boolean"]),
    ("process.no_new_privs = 0", "process.no_new_privs", ["expected a boolean"]),
])
def test_wrong_types(text, key, needles):
    check(err(text), "t.toml", key, *needles)


# --------------------------------------------------------------------------
# Field by field
# --------------------------------------------------------------------------


def test_namespaces():
    p = P.from_toml("[namespaces]\nnet = false\ncgroup = false")
    assert dict(p.data["namespaces"]) == {"user": True, "pid": True, "net": False, "mount": True,
                                          "ipc": True, "uts": True, "cgroup": False}


@pytest.mark.parametrize("name", ["box", "a.b-c", "0", "x" * 64, "a-"])
def test_hostname_ok(name):
    assert P.from_dict({"identity": {"hostname": name}}).get("identity.hostname") == name


@pytest.mark.parametrize("name", ["", "-box", "x" * 65, "a b", "a_b", "bo\u00e9x", "a/b", "box\n"])
def test_hostname_bad(name):
    check(err_dict({"identity": {"hostname": name}}), "d", "identity.hostname", "expected 1 to 64")


def test_hostname_nul():
    check(err_dict({"identity": {"hostname": "a\0b"}}), "d", "identity.hostname", "NUL")


def test_uid_gid():
    p = P.from_toml("identity.uid = 0\nidentity.gid = 4294967294")
    assert p.get("identity.uid") == 0 and p.get("identity.gid") == 4294967294


def test_id_maps_normalized():
    p = P.from_toml("""
        [identity]
        uid = 0
        uid_map = ["0 1000 1", { inside = 1, outside = 100000, count = 65536 }]
        gid_map = ["  0\t1000   1 "]
    """)
    assert p.to_dict()["identity"]["uid_map"] == [[0, 1000, 1], [1, 100000, 65536]]
    assert p.to_dict()["identity"]["gid_map"] == [[0, 1000, 1]]


@pytest.mark.parametrize("entry,key,needle", [
    ("'0 1000'", "identity.uid_map[0]", "INSIDE OUTSIDE COUNT"),
    ("'0 1000 1 2'", "identity.uid_map[0]", "INSIDE OUTSIDE COUNT"),
    ("'0 -1 1'", "identity.uid_map[0]", "INSIDE OUTSIDE COUNT"),
    ("'a b c'", "identity.uid_map[0]", "INSIDE OUTSIDE COUNT"),
    ("'0 1000 0'", "identity.uid_map[0]", "count: expected an integer between 1"),
    ("'0 4294967295 1'", "identity.uid_map[0]", "outside: expected an integer between 0"),
    ("'4294967294 0 2'", "identity.uid_map[0]", "goes past the largest id"),
    ("{inside = 0, outside = 1}", "identity.uid_map[0]", "missing required key 'count'"),
    ("{inside = 0, outside = 1, count = 0}", "identity.uid_map[0].count", "expected an integer"),
    ("{inside = 0, outside = true, count = 1}", "identity.uid_map[0].outside", "boolean true"),
    ("5", "identity.uid_map[0]", "got integer 5"),
])
def test_id_map_errors(entry, key, needle):
    check(err(f"identity.uid_map = [{entry}]"), "t.toml", key, needle)


def test_id_map_overlap_and_unmapped_uid():
    check(err("identity.uid_map = ['0 1000 10', '5 2000 1']"), "t.toml",
          "identity.uid_map[1]", "inside range overlaps entry [0]")
    check(err("identity.gid_map = ['0 1000 10', '20 1005 1']"), "t.toml",
          "identity.gid_map[1]", "outside range overlaps entry [0]")
    check(err("identity.uid = 5\nidentity.uid_map = ['0 1000 1']"), "t.toml",
          "identity.uid", "not mapped by identity.uid_map")


@pytest.mark.parametrize("text,bytes_", [
    ("512K", 512 * 1024), ("64M", 64 << 20), ("4G", 4 << 30), ("1T", 1 << 40),
    ("64m", 64 << 20), ("64MB", 64 << 20), ("64MiB", 64 << 20), ("64mib", 64 << 20),
    ("1.5G", 3 << 29), ("1.5k", 1536), ("0.3K", 307), ("100", 100), ("100B", 100),
    ("100b", 100), (" 2 K ", 2048), (".5M", 512 << 10),
])
def test_parse_size(text, bytes_):
    assert P.parse_size(text) == bytes_
    assert P.from_dict({"rlimits": {"as": text}}).get("rlimits.as") == (bytes_, bytes_)


@pytest.mark.parametrize("text", ["", "K", "1X", "-1K", "1iB", "1.2.3M", "1e3", "one", "1 K B",
                                  "99999999999E", "0x10"])
def test_bad_sizes(text):
    with pytest.raises(ValueError):
        P.parse_size(text)
    check(err_dict({"rlimits": {"data": text}}), "d", "rlimits.data")


def test_rlimits_normalized():
    p = P.from_toml("""
        [rlimits]
        cpu = 10
        as = "1.5G"
        nofile = { soft = 64, hard = 1024 }
        nproc = "unlimited"
        fsize = { soft = "1M", hard = "unlimited" }
        stack = "8M"
        core = 0
        memlock = "UNLIMITED"
    """)
    r = p.to_dict()["rlimits"]
    assert r == {"cpu": [10, 10], "as": [1610612736, 1610612736], "nofile": [64, 1024],
                 "nproc": ["unlimited", "unlimited"], "fsize": [1 << 20, "unlimited"],
                 "core": [0, 0], "stack": [8 << 20, 8 << 20], "data": None,
                 "memlock": ["unlimited", "unlimited"]}


@pytest.mark.parametrize("text,key,needles", [
    ("rlimits.nofile = {soft = 10, hard = 5}", "rlimits.nofile",
     ["soft limit 10 is greater than hard limit 5"]),
    ("rlimits.nofile = {soft = 'unlimited', hard = 5}", "rlimits.nofile",
     ["soft limit unlimited is greater than hard limit 5"]),
    ("rlimits.nofile = {soft = 10}", "rlimits.nofile", ["missing required key 'hard'"]),
    ("rlimits.nofile = -1", "rlimits.nofile", ["expected an integer >= 0 or \"unlimited\"",
                                               "got integer -1"]),
    ("rlimits.nofile = '64M'", "rlimits.nofile", ["got string '64M'"]),
    ("rlimits.cpu = 1.5", "rlimits.cpu", ["got float 1.5"]),
    ("rlimits.cpu = true", "rlimits.cpu", ["got boolean true"]),
    ("rlimits.as = '64Q'", "rlimits.as", ["size like \"64M\"", "got string '64Q'"]),
    ("rlimits.as = {soft = '1G', hard = 'lots'}", "rlimits.as.hard", ["got string 'lots'"]),
    ("rlimits.as = '9999999E'", "rlimits.as", ["too large"]),
    ("rlimits.as = 9223372036854775808", "rlimits.as", ["expected an integer >= 0"]),
    ("rlimits.as = [1, 2, 3]", "rlimits.as", ["got array of 3 items"]),
])
def test_rlimit_errors(text, key, needles):
    check(err(text), "t.toml", key, *needles)


def test_fds():
    p = P.from_toml("""
        [fds]
        stdin = "/dev/null"
        stdout = "append:/tmp/out.log"
        stderr = "pipe"
        pass = [7, 3, 5]
    """)
    assert p.to_dict()["fds"] == {"stdin": "/dev/null", "stdout": "append:/tmp/out.log",
                                  "stderr": "pipe", "pass": [3, 5, 7], "pty": False}
    assert P.from_toml("fds.stdin = 'null'\nfds.stdout = '/x'").get("fds.stdout") == "/x"


@pytest.mark.parametrize("text,key,needles", [
    ("fds.stdin = 'out.txt'", "fds.stdin", ["\"inherit\", \"null\", \"pipe\" or an absolute path"]),
    ("fds.stdin = 'append:/x'", "fds.stdin", ["only for stdout and stderr"]),
    ("fds.stdout = 'append:x'", "fds.stdout", ["absolute path after 'append:'"]),
    ("fds.stderr = 'closed'", "fds.stderr", ["append:/absolute/path", "got string 'closed'"]),
    ("fds.stderr = 2", "fds.stderr", ["got integer 2"]),
    ("fds.pass = [2]", "fds.pass[0]", ["expected an integer between 3 and"]),
    ("fds.pass = [3, 4, 3]", "fds.pass[2]", ["duplicate value 3"]),
    ("fds.pass = 3", "fds.pass", ["expected an array"]),
])
def test_fd_errors(text, key, needles):
    check(err(text), "t.toml", key, *needles)


def test_env():
    p = P.from_toml("""
        [env]
        clear = false
        set = { FOO = "1", "with space" = "ok" }
        keep = ["TERM", "LC_*"]
    """)
    assert p.to_dict()["env"] == {"clear": False, "set": {"FOO": "1", "with space": "ok"},
                                  "keep": ["TERM", "LC_*"]}


@pytest.mark.parametrize("data,key,needles", [
    ({"env": {"set": {"A=B": "x"}}}, "env.set.\"A=B\"", ["environment variable name"]),
    ({"env": {"set": {"": "x"}}}, "env.set.\"\"", ["environment variable name"]),
    ({"env": {"set": {"A": 1}}}, "env.set.A", ["expected a string, got integer 1"]),
    ({"env": {"set": {"A": "a\0b"}}}, "env.set.A", ["NUL"]),
    ({"env": {"set": ["A=1"]}}, "env.set", ["expected a table"]),
    ({"env": {"keep": ["A=B"]}}, "env.keep[0]", ["environment variable name"]),
    ({"env": {"keep": [""]}}, "env.keep[0]", ["environment variable name"]),
])
def test_env_errors(data, key, needles):
    check(err_dict(data), "d", key, *needles)


@pytest.mark.parametrize("cwd", ["/", "/srv/app", "{cwd}", "{home}/src", "/home/{uid}/x",
                                 "{cwd}/{uid}"])
def test_cwd_ok(cwd):
    assert P.from_dict({"process": {"cwd": cwd}}).get("process.cwd") == cwd


@pytest.mark.parametrize("cwd,needle", [
    ("relative/dir", "expected an absolute path"),
    ("", "expected an absolute path"),
    ("{user}/x", "unknown placeholder '{user}'"),
    ("/x/{HOME}", "unknown placeholder '{HOME}'"),
    ("/x/{cwd", "unbalanced"),
    ("/x/}", "unbalanced"),
])
def test_cwd_bad(cwd, needle):
    check(err_dict({"process": {"cwd": cwd}}), "d", "process.cwd", needle)


def test_process_bools():
    p = P.from_toml("process.no_new_privs = false\nprocess.die_with_parent = false")
    assert p.get("process.no_new_privs") is False and p.get("process.die_with_parent") is False


def test_capabilities_normalized():
    p = P.from_toml('capabilities.keep = ["net_raw", "CAP_CHOWN", "Net_Bind_Service", '
                    '"cap_net_raw", "checkpoint_restore"]')
    assert p.get("capabilities.keep") == ("CAP_CHOWN", "CAP_NET_BIND_SERVICE", "CAP_NET_RAW",
                                          "CAP_CHECKPOINT_RESTORE")


def test_capability_table():
    assert len(P.CAPABILITIES) == 41
    assert P.CAPABILITIES["CAP_CHOWN"] == 0
    assert P.CAPABILITIES["CAP_NET_BIND_SERVICE"] == 10
    assert P.CAPABILITIES["CAP_SYS_ADMIN"] == 21
    assert P.CAPABILITIES["CAP_CHECKPOINT_RESTORE"] == 40
    assert sorted(P.CAPABILITIES.values()) == list(range(41))


def test_capability_errors():
    check(err('capabilities.keep = ["net_bind"]'), "t.toml", "capabilities.keep[0]",
          "unknown capability 'net_bind'", "did you mean 'CAP_NET_BIND_SERVICE'?")
    check(err('capabilities.keep = ["CAP_", "x"]'), "t.toml", "capabilities.keep[0]",
          "unknown capability")


def test_seccomp_full():
    p = P.from_toml("""
        [seccomp]
        default_action = "errno:EPERM"
        allow = ["read", "write", "@mount"]
        deny = ["ptrace"]
        deny_action = "kill"
        socket_families = ["unix", "inet"]
        deny_ioctls = ["TIOCSTI", 21531, 0]
        deny_namespace_flags = true
        other_arches = "errno:ENOSYS"
        [[seccomp.rules]]
        syscall = "ioctl"
        action = "errno:EPERM"
        args = [{index = 1, op = "masked_eq", value = 0x5400, mask = 0xff00},
                {index = 0, op = "ge", value = 0xffffffffffffffff}]
        [[seccomp.rules]]
        syscall = "socket"
        action = "allow"
    """)
    s = p.to_dict()["seccomp"]
    assert s["rules"] == [
        {"syscall": "ioctl", "action": "errno:EPERM",
         "args": [{"index": 1, "op": "masked_eq", "value": 0x5400, "mask": 0xFF00},
                  {"index": 0, "op": "ge", "value": 2**64 - 1, "mask": None}]},
        {"syscall": "socket", "action": "allow", "args": []},
    ]
    assert s["socket_families"] == ["unix", "inet"]
    assert s["deny_ioctls"] == ["TIOCSTI", 21531, 0]
    assert s["other_arches"] == "errno:ENOSYS"
    assert P.from_dict({}).get("seccomp.socket_families") is None


def test_seccomp_name_lookups_are_forgiving():
    p = P.from_toml('seccomp.socket_families = ["AF_UNIX", "INET6"]\n'
                    'seccomp.deny_ioctls = ["tiocsti"]')
    assert p.get("seccomp.socket_families") == ("unix", "inet6")
    assert p.get("seccomp.deny_ioctls") == ("TIOCSTI",)


@pytest.mark.parametrize("text,key,needles", [
    ('seccomp.deny = ["read", "write", "openat", "mout"]', "seccomp.deny[3]", ["mout"]),
    ('seccomp.allow = ["@nosuchgroup"]', "seccomp.allow[0]", ["@nosuchgroup"]),
    ('seccomp.deny = [""]', "seccomp.deny[0]", []),
    ('seccomp.deny = [1]', "seccomp.deny[0]", ["expected a syscall name or @group, got integer 1"]),
    ('seccomp.default_action = "explode"', "seccomp.default_action", ["explode"]),
    ('seccomp.deny_action = 1', "seccomp.deny_action", ["expected an action string"]),
    ('seccomp.other_arches = "errno:"', "seccomp.other_arches", []),
    ('seccomp.socket_families = ["inet7"]', "seccomp.socket_families[0]",
     ["unknown socket family 'inet7'", "did you mean"]),
    ('seccomp.socket_families = "unix"', "seccomp.socket_families", ["expected an array"]),
    ('seccomp.deny_ioctls = ["TIOCSTX"]', "seccomp.deny_ioctls[0]",
     ["unknown ioctl 'TIOCSTX'", "did you mean 'TIOCSTI'?"]),
    ('seccomp.deny_ioctls = [-1]', "seccomp.deny_ioctls[0]", ["ioctl request number"]),
    ('seccomp.deny_ioctls = [0x1_0000_0000]', "seccomp.deny_ioctls[0]", ["0xffffffff"]),
    ('seccomp.deny_ioctls = [true]', "seccomp.deny_ioctls[0]", ["got boolean true"]),
    ('seccomp.deny_namespace_flags = "yes"', "seccomp.deny_namespace_flags",
     ["expected a boolean, got string 'yes'"]),
])
def test_seccomp_errors(text, key, needles):
    check(err(text), "t.toml", key, *needles)


def rule(args: str, extra: str = "") -> str:
    return f"[[seccomp.rules]]\nsyscall = 'read'\naction = 'allow'\n{extra}args = [{args}]\n"


@pytest.mark.parametrize("text,key,needles", [
    (rule("{index = 0, op = 'eq', value = 1}, {index = 1, op = 'like', value = 1}"),
     "seccomp.rules[0].args[1].op", ["expected one of eq, ne, lt, le, gt, ge, masked_eq",
                                     "got string 'like'"]),
    (rule("{index = 6, op = 'eq', value = 1}"), "seccomp.rules[0].args[0].index",
     ["expected an integer between 0 and 5"]),
    (rule("{index = 0, op = 'eq', value = -1}"), "seccomp.rules[0].args[0].value",
     ["got integer -1"]),
    (rule("{index = 0, op = 'eq', value = 0x1_0000_0000_0000_0000}"),
     "seccomp.rules[0].args[0].value", ["between 0 and 18446744073709551615"]),
    (rule("{index = 0, op = 'masked_eq', value = 1}"), "seccomp.rules[0].args[0]",
     ["missing required key 'mask'"]),
    (rule("{index = 0, op = 'eq', value = 1, mask = 1}"), "seccomp.rules[0].args[0].mask",
     ["only allowed when op is 'masked_eq'"]),
    (rule("{index = 0, op = 'masked_eq', value = 0x11, mask = 0xf0}"),
     "seccomp.rules[0].args[0].value", ["bits outside mask", "never match"]),
    (rule("{index = 0, op = 'eq'}"), "seccomp.rules[0].args[0]", ["missing required key 'value'"]),
    (rule(", ".join(["{index = 0, op = 'eq', value = 1}"] * 7)), "seccomp.rules[0].args",
     ["at most 6"]),
    ("[[seccomp.rules]]\nsyscall = 'mout'\naction = 'allow'", "seccomp.rules[0].syscall",
     ["mout"]),
    ("[[seccomp.rules]]\nsyscall = 'read'", "seccomp.rules[0]", ["missing required key 'action'"]),
    ("[[seccomp.rules]]\naction = 'allow'", "seccomp.rules[0]", ["missing required key 'syscall'"]),
    ("[[seccomp.rules]]\nsyscall = 'read'\naction = 'allow'\n[[seccomp.rules]]\n"
     "syscall = 'read'\naction = 'nope'", "seccomp.rules[1].action", ["nope"]),
])
def test_seccomp_rule_errors(text, key, needles):
    check(err(text), "t.toml", key, *needles)


# --------------------------------------------------------------------------
# extends
# --------------------------------------------------------------------------


def test_extends_shipped_name(tmp_path):
    f = write(tmp_path / "mine.toml", """\
        extends = "default"
        [namespaces]
        net = false
        [env]
        set = { FOO = "bar" }
    """)
    p = P.load(str(f))
    assert p.get("namespaces.net") is False
    assert p.get("namespaces.pid") is True
    assert dict(p.get("env.set")) == {"PATH": "/usr/local/bin:/usr/bin:/bin",
                                      "LANG": "C.UTF-8", "FOO": "bar"}
    assert p.get("identity.hostname") == "isolate"
    assert p.files == (str((REPO / "profiles" / "default.toml").resolve()), str(f.resolve()))


def test_extends_search_path_order(tmp_path, monkeypatch, clean_search_path):
    a, b = tmp_path / "a", tmp_path / "b"
    write(a / "base.toml", "identity.hostname = 'from-a'")
    write(b / "base.toml", "identity.hostname = 'from-b'")
    write(b / "default.toml", "identity.hostname = 'user-default'")
    user = clean_search_path / ".config" / "isolate" / "profiles"
    write(user / "base.toml", "identity.hostname = 'from-user'")
    write(user / "only-user.toml", "identity.hostname = 'only-user'")

    monkeypatch.setenv("ISOLATE_PROFILE_PATH", os.pathsep.join(["", str(a), str(b)]))
    assert P.load("base").get("identity.hostname") == "from-a"
    assert P.resolve_name("base") == a / "base.toml"
    # A user directory shadows a shipped profile of the same name.
    assert P.load("default").get("identity.hostname") == "user-default"
    assert P.load("only-user").get("identity.hostname") == "only-user"
    monkeypatch.setenv("ISOLATE_PROFILE_PATH", str(b))
    assert P.load("base").get("identity.hostname") == "from-b"
    monkeypatch.delenv("ISOLATE_PROFILE_PATH")
    assert P.load("base").get("identity.hostname") == "from-user"
    assert P.from_toml("extends = 'base'").get("identity.hostname") == "from-user"


def test_extends_relative_to_extending_file(tmp_path, monkeypatch):
    write(tmp_path / "lib" / "base.toml", "rlimits.nofile = 10\nenv.keep = ['A']")
    write(tmp_path / "lib" / "mid.toml", "extends = 'base.toml'\nrlimits.cpu = 5")
    top = write(tmp_path / "app" / "top.toml", "extends = '../lib/mid.toml'\nenv.keep = ['B']")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    p = P.load(str(top))
    assert p.get("rlimits.nofile") == (10, 10)
    assert p.get("rlimits.cpu") == (5, 5)
    assert p.get("env.keep") == ("B",)  # arrays replace
    assert [Path(f).name for f in p.files] == ["base.toml", "mid.toml", "top.toml"]
    # load() of a relative path is relative to the current directory.
    monkeypatch.chdir(tmp_path)
    assert P.load("app/top.toml").hash == p.hash
    assert P.load("app/top.toml").name == "app/top.toml"
    # from_toml/from_dict: relative extends are relative to the current directory.
    assert P.from_toml("extends = 'lib/base.toml'").get("rlimits.nofile") == (10, 10)
    assert P.from_dict({"extends": ["lib/base.toml"]}).get("rlimits.nofile") == (10, 10)


def test_extends_multiple_parents_left_to_right(tmp_path):
    write(tmp_path / "p1.toml", """\
        identity.hostname = "one"
        rlimits.nofile = 1
        env.set = { A = "1", B = "1" }
    """)
    write(tmp_path / "p2.toml", """\
        identity.hostname = "two"
        env.set = { B = "2", C = "2" }
        rlimits.cpu = 2
    """)
    child = write(tmp_path / "child.toml", """\
        extends = ["p1.toml", "p2.toml"]
        env.set.C = "child"
    """)
    p = P.load(str(child))
    assert p.get("identity.hostname") == "two"
    assert p.get("rlimits.nofile") == (1, 1) and p.get("rlimits.cpu") == (2, 2)
    assert dict(p.get("env.set")) == {"A": "1", "B": "2", "C": "child"}
    assert [Path(f).name for f in p.files] == ["p1.toml", "p2.toml", "child.toml"]
    swapped = write(tmp_path / "swapped.toml", 'extends = ["p2.toml", "p1.toml"]')
    assert P.load(str(swapped)).get("identity.hostname") == "one"


def test_extends_diamond_is_not_a_cycle(tmp_path):
    write(tmp_path / "base.toml", "rlimits.nofile = 7")
    write(tmp_path / "l.toml", "extends = 'base.toml'\nidentity.hostname = 'l'")
    write(tmp_path / "r.toml", "extends = 'base.toml'\nrlimits.cpu = 1")
    top = write(tmp_path / "top.toml", "extends = ['l.toml', 'r.toml']")
    p = P.load(str(top))
    assert p.get("rlimits.nofile") == (7, 7) and p.get("identity.hostname") == "l"
    assert [Path(f).name for f in p.files] == ["base.toml", "l.toml", "r.toml", "top.toml"]


def test_merge_semantics(tmp_path):
    write(tmp_path / "parent.toml", """\
        rlimits.nofile = { soft = 5, hard = 20 }
        rlimits.cpu = { soft = 1, hard = 2 }
        seccomp.deny = ["ptrace", "mount"]
        [[seccomp.rules]]
        syscall = "read"
        action = "allow"
    """)
    child = write(tmp_path / "child.toml", """\
        extends = "parent.toml"
        rlimits.nofile = { soft = 10 }
        rlimits.cpu = 3
        seccomp.deny = ["chmod"]
    """)
    p = P.load(str(child))
    assert p.get("rlimits.nofile") == (10, 20)  # tables merge recursively
    assert p.get("rlimits.cpu") == (3, 3)  # a scalar replaces a table
    assert p.get("seccomp.deny") == ("chmod",)  # arrays replace
    assert len(p.get("seccomp.rules")) == 1  # untouched keys are inherited


def test_extends_cycle(tmp_path):
    write(tmp_path / "a.toml", "extends = 'b.toml'")
    write(tmp_path / "b.toml", "extends = 'a.toml'")
    with pytest.raises(ProfileError) as ei:
        P.load(str(tmp_path / "a.toml"))
    check(ei.value, str(tmp_path / "b.toml"), "extends",
          f"extends cycle: {tmp_path / 'a.toml'} -> b.toml -> a.toml")


def test_extends_cycle_through_names_and_self(tmp_path, monkeypatch):
    monkeypatch.setenv("ISOLATE_PROFILE_PATH", str(tmp_path))
    write(tmp_path / "x.toml", "extends = ['default', 'y']")
    write(tmp_path / "y.toml", "extends = 'z'")
    write(tmp_path / "z.toml", "extends = 'x'")
    with pytest.raises(ProfileError) as ei:
        P.load("x")
    check(ei.value, str(tmp_path / "z.toml"), "extends",
          "x -> y -> z -> x")
    write(tmp_path / "self.toml", "extends = ['default', 'self.toml']")
    with pytest.raises(ProfileError) as ei:
        P.load("self")
    check(ei.value, str(tmp_path / "self.toml"), "extends[1]", "self -> self.toml")


@pytest.mark.parametrize("value,key,needle", [
    ("1", "extends", "expected a profile name or path"),
    ("['a', 2]", "extends[1]", "got integer 2"),
    ("''", "extends", "got string ''"),
    ("{a = 1}", "extends", "got table"),
])
def test_extends_bad_values(value, key, needle):
    check(err(f"extends = {value}"), "t.toml", key, needle)


def test_extends_missing_parent(tmp_path):
    child = write(tmp_path / "child.toml", "extends = ['default', 'gone.toml']")
    with pytest.raises(ProfileError) as ei:
        P.load(str(child))
    check(ei.value, str(child), "extends[1]", "file not found", "gone.toml")
    child2 = write(tmp_path / "child2.toml", "extends = 'no-such-profile'")
    with pytest.raises(ProfileError) as ei:
        P.load(str(child2))
    check(ei.value, str(child2), "extends", "no profile named 'no-such-profile'")


def test_errors_name_the_file_that_set_the_value(tmp_path):
    write(tmp_path / "parent.toml", "namespaces.net = 'no'\n")
    child = write(tmp_path / "child.toml", "extends = 'parent.toml'\nrlimits.cpu = 1\n")
    with pytest.raises(ProfileError) as ei:
        P.load(str(child))
    check(ei.value, str(tmp_path / "parent.toml"), "namespaces.net", "expected a boolean")
    # ...and a syntax error in a parent names the parent.
    write(tmp_path / "broken.toml", "x = \n")
    child3 = write(tmp_path / "child3.toml", "extends = 'broken.toml'")
    with pytest.raises(ProfileError) as ei:
        P.load(str(child3))
    check(ei.value, str(tmp_path / "broken.toml"), None, "invalid TOML", "line 1")
    # A child's bad value names the child even when the parent set the same table.
    write(tmp_path / "p2.toml", "rlimits.nofile = {soft = 1, hard = 2}\n")
    child4 = write(tmp_path / "child4.toml", "extends = 'p2.toml'\nrlimits.nofile.soft = 5\n")
    with pytest.raises(ProfileError) as ei:
        P.load(str(child4))
    check(ei.value, str(child4), "rlimits.nofile", "soft limit 5 is greater than hard limit 2")


# --------------------------------------------------------------------------
# Overrides
# --------------------------------------------------------------------------


def test_overrides(tmp_path):
    p = P.load("default", [
        "rlimits.nofile=64",
        "namespaces.net=false",
        'env.keep=["TERM", "LC_*"]',
        'identity.hostname="box"',
        "env.set.EDITOR=vi",
        "rlimits.as.soft=1",  # as is absent in default: this starts a {soft, hard} table
        "rlimits.as.hard=\"1G\"",
        "seccomp.deny=[]",
    ])
    assert p.get("rlimits.nofile") == (64, 64)
    assert p.get("namespaces.net") is False
    assert p.get("env.keep") == ("TERM", "LC_*")
    assert p.get("identity.hostname") == "box"
    assert p.get("env.set.EDITOR") == "vi"
    assert p.get("env.set.PATH") == "/usr/local/bin:/usr/bin:/bin"
    assert p.get("rlimits.as") == (1, 1 << 30)
    assert p.get("seccomp.deny") == ()


def test_override_plain_string_fallback():
    assert P.load("default", ["identity.hostname=box"]).get("identity.hostname") == "box"
    assert P.from_dict({}, overrides=["process.cwd=/srv/x y"]).get("process.cwd") == "/srv/x y"
    assert P.from_dict({}, overrides=["env.set.A="]).get("env.set.A") == ""
    assert P.from_dict({}, overrides=["env.set.A=a=b"]).get("env.set.A") == "a=b"
    assert P.from_dict({}, overrides=["env.set.A=1\nB=2"]).get("env.set.A") == "1\nB=2"
    assert P.from_dict({}, overrides=[" identity.hostname = 'x'"]).get("identity.hostname") == "x"


def test_override_section_table_and_order():
    p = P.from_dict({}, overrides=["namespaces={net=false, pid=false}", "namespaces.pid=true"])
    assert p.get("namespaces.net") is False and p.get("namespaces.pid") is True
    assert p.get("namespaces.user") is True


@pytest.mark.parametrize("item,key,needles", [
    ("rlimits.nofle=64", "rlimits.nofle", ["unknown key 'nofle'", "did you mean 'nofile'?"]),
    ("rlimit.nofile=64", "rlimit.nofile", ["unknown key 'rlimit'", "did you mean 'rlimits'?"]),
    ("bogus=1", "bogus", ["unknown key 'bogus'"]),
    ("rlimits..nofile=1", "rlimits..nofile", ["empty component"]),
    ("extends=default", "extends", ["cannot be overridden"]),
    ("namespaces.net=maybe", "namespaces.net", ["expected a boolean, got string 'maybe'"]),
    ("namespaces.net.x=1", "namespaces.net", ["expected a boolean, got table"]),
    ("rlimits.nofile.sft=1", "rlimits.nofile.sft", ["did you mean 'soft'?"]),
    ("rlimits.nofile=-5", "rlimits.nofile", ["got integer -5"]),
    ("identity.hostname=123", "identity.hostname", ["expected a string, got integer 123"]),
    ("seccomp.deny=['mout']", "seccomp.deny[0]", ["mout"]),
])
def test_override_errors(item, key, needles):
    with pytest.raises(ProfileError) as ei:
        P.load("default", [item])
    check(ei.value, "--set", key, *needles)


def test_override_without_equals():
    with pytest.raises(ProfileError) as ei:
        P.load("default", ["namespaces.net"])
    check(ei.value, "--set", "namespaces.net", "expected KEY=VALUE")
    with pytest.raises(ProfileError) as ei:
        P.load("default", ["=1"])
    check(ei.value, "--set", None, "expected KEY=VALUE")
    with pytest.raises(ProfileError):
        P.load("default", [5])


# --------------------------------------------------------------------------
# Profile object, hash
# --------------------------------------------------------------------------


def test_hash_ignores_key_order_formatting_and_file(tmp_path):
    a = write(tmp_path / "one.toml", """\
        [namespaces]
        net = false
        pid = true
        [env]
        set = { A = "1", B = "2" }
        [rlimits]
        nofile = 64
    """)
    b = write(tmp_path / "sub" / "two.toml", """\
        # same content, other order, other spelling
        rlimits.nofile = { hard = 64, soft = 64 }
        env.set.B = "2"
        env.set.A = "1"
        namespaces = { pid = true, net = false }
    """)
    pa, pb = P.load(str(a)), P.load(str(b))
    assert pa.hash == pb.hash
    assert pa == pb
    assert P.from_dict({"rlimits": {"nofile": [64, 64]}, "namespaces": {"net": False},
                        "env": {"set": {"B": "2", "A": "1"}}}).hash == pa.hash
    # Inheriting the same content gives the same hash.
    c = write(tmp_path / "three.toml", f"extends = '{a}'")
    assert P.load(str(c)).hash == pa.hash
    # A changed value changes it.
    assert P.load(str(a), ["rlimits.nofile=65"]).hash != pa.hash
    assert P.load(str(a), ["env.set.C=x"]).hash != pa.hash
    assert P.load(str(a), ["namespaces.net=true"]).hash != pa.hash


def test_hash_is_sha256_of_canonical_json():
    import hashlib

    p = P.load("default")
    blob = json.dumps(p.to_dict(), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert p.hash == hashlib.sha256(blob.encode()).hexdigest()


def test_round_trip_data_and_to_dict():
    p = P.load("default", ["identity.uid_map=['0 1000 1']", "identity.uid=0",
                           "fds.pass=[4,3]", "rlimits.as='1G'"])
    assert P.from_dict(p.to_dict()).hash == p.hash
    assert P.from_dict(p.data).hash == p.hash


def test_profile_is_immutable():
    p = P.load("default")
    with pytest.raises(Exception):
        p.name = "x"
    with pytest.raises(TypeError):
        p.data["namespaces"]["net"] = False
    with pytest.raises(TypeError):
        p.data["new"] = {}
    assert isinstance(p.data["env"]["keep"], tuple)
    d = p.to_dict()
    d["namespaces"]["net"] = False
    d["env"]["keep"].append("X")
    assert p.get("namespaces.net") is True and p.get("env.keep") == ("TERM",)


def test_profile_pickles():
    p = P.load("default")
    q = pickle.loads(pickle.dumps(p))
    assert q == p and q.hash == p.hash and q.to_dict() == p.to_dict() and q.files == p.files


def test_get():
    p = P.load("default")
    assert p.get("rlimits.nofile") == (1024, 1024)
    assert p.get("env")["clear"] is True
    assert p.get("env.set.LANG") == "C.UTF-8"
    with pytest.raises(ProfileError) as ei:
        p.get("rlimits.nofle")
    check(ei.value, "default", "rlimits.nofle", "did you mean 'nofile'?")
    with pytest.raises(ProfileError):
        p.get("rlimits.nofile.soft")


def test_from_dict_and_from_toml_names():
    assert P.from_dict({}).name == "<dict>"
    assert P.from_toml("").name == "<string>"
    assert P.from_dict({}).files == ()
    check(err_dict({"namespaces": {"net": 1}}, name="lib"), "lib", "namespaces.net")
    e = err("namespaces.net = 1", name="<string>")
    check(e, "<string>", "namespaces.net")


@pytest.mark.parametrize("data,key,needle", [
    ({1: 2}, None, "expected a string key, got integer 1"),
    ({"env": {"set": {1: "x"}}}, "env.set", "expected a string key"),
    ({"identity": {"uid": None}}, None, None),  # None = absent
    ({"namespaces": {"net": None}}, "namespaces.net", "expected a boolean, got no value"),
    ({"namespaces": {"net": object()}}, "namespaces.net", "got object object"),
    ({"env": {"keep": ("A", "B")}}, None, None),
])
def test_from_dict_odd_values(data, key, needle):
    if needle is None:
        P.from_dict(data)
        return
    check(err_dict(data), "d", key, needle)


def test_from_dict_and_toml_reject_non_tables():
    check(err_dict([1, 2]), "d", None, "expected a table")
    with pytest.raises(ProfileError):
        P.from_toml(b"x = 1")  # type: ignore[arg-type]


# --------------------------------------------------------------------------
# Robustness: anything goes in, only ProfileError comes out
# --------------------------------------------------------------------------

WEIRD = [None, True, False, 0, 1, -1, 3, 2**31, 2**64, 2**70, -(2**70), 10**5000, 1.5,
         float("nan"), float("inf"), "", "x", "unlimited", "64M", "/abs", "{cwd}", "a\0b",
         "@mount", "allow", "0 0 1", [], [1], ["x"], [[1]], [None], [{}], {}, {"a": 1},
         {"soft": 1}, {"soft": 1, "hard": 2}, {"inside": 0}, {"syscall": "read"},
         datetime.datetime(2020, 1, 1), datetime.date(2020, 1, 1), datetime.time(1, 2),
         object(), b"bytes", {1: 2}, [[[[[[]]]]]]]


@pytest.mark.parametrize("key", [k for k, f in P.FIELDS.items()])
def test_any_value_gives_profile_or_profile_error(key):
    f = P.FIELDS[key]
    for v in WEIRD:
        data = {f.name: v} if not f.section else {f.section: {f.name: v}}
        try:
            p = P.from_dict(data)
        except ProfileError as e:
            assert e.file == "<dict>" and str(e)
            if not f.meta:
                assert e.key and e.key.startswith(key), (key, v, str(e))
        else:
            json.dumps(p.to_dict())
            assert P.from_dict(p.to_dict()).hash == p.hash


@pytest.mark.parametrize("text", [
    "[[a]]\n[a]", "a = [[1], [[2]]]", "namespaces = [[1]]", "a." * 300 + "b = 1",
    "x = " + "[" * 2000 + "]" * 2000, "[seccomp]\nrules = [[{}]]",
    "identity.uid = 0x7fffffffffffffff", "identity.uid = -0", "identity.uid = +1",
    "seccomp.rules = [{syscall = 'read', action = 'allow', args = [[1]]}]",
    "seccomp.rules = [{syscall = 'read', action = 'allow', args = [{index = 'x'}]}]",
    "env.set = {a = {b = 1}}", "rlimits = {nofile = {soft = {}, hard = []}}",
    "fds = {stdin = 1979-05-27}", "\ufeffx = 1", "\x00", "'''", "a = \"\\ud800\"",
])
def test_weird_toml_only_raises_profile_error(text):
    try:
        P.from_toml(text)
    except ProfileError as e:
        assert str(e).startswith("<string>")


def test_weird_overrides_only_raise_profile_error():
    for item in ["", "=", "a", ".=1", "a.b.c.d=1", "namespaces=1", "namespaces=[1]",
                 "env.set=[]", "env.set.A=[1]", "rlimits.nofile=[[1]]", "x" * 10000 + "=1",
                 "seccomp.rules=[{}]", "seccomp.rules.x=1", "identity.uid=1979-05-27",
                 "identity.uid=" + "9" * 6000]:
        try:
            P.from_dict({}, overrides=[item])
        except ProfileError as e:
            assert e.file == "--set", (item, str(e))
