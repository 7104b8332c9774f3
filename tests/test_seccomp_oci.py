"""seccomp.oci: a profile takes its syscall policy from a Docker/OCI seccomp JSON file.

Test data (tests/data/oci/):
  * small.json: hand-written, one entry per feature of the format;
  * docker-default.json: Docker's default seccomp profile, unmodified, copied from
    moby/moby commit b985e2313a8676e18072b442911fc8f64f17d440, file
    vendor/github.com/moby/profiles/seccomp/default.json (github.com/moby/profiles
    seccomp v0.2.3, formerly moby's profiles/seccomp/default.json; Apache-2.0).

Layers: parsing and errors; translation into the spec isolate.seccomp compiles;
the compiled program run by the BPF interpreter of test_seccomp.py; profiles
(schema, relative paths, conflicts, cache); a real sandbox.
"""

from __future__ import annotations

import errno
import json
import os
import sys
from pathlib import Path

import pytest
import pyseccomp as sc

import isolate
from isolate.launch import plans
from isolate.plan import compile as compile_mod
from isolate import profile as profile_mod
from isolate.kernel import syscalls
from isolate.plan import seccomp as S
from isolate.plan.seccomp import bpf as S_bpf
from isolate.plan.seccomp import policy as S_policy
from isolate.plan.seccomp import regions as S_regions
from isolate.plan.seccomp import verify as S_verify

from conftest import TESTS, with_python
from test_seccomp import AUDIT_ARCH_I386, base_spec, run_bpf

DATA = TESTS / "data" / "oci"
SMALL = DATA / "small.json"
DOCKER = DATA / "docker-default.json"

X86_64 = int(sc.Arch.X86_64)
AARCH64 = int(sc.Arch.AARCH64)
NEW_KERNEL = (6, 1)
EPERM = sc.ERRNO(errno.EPERM)


def nr(name: str) -> int:
    n = syscalls.native_nr(name)
    assert n is not None, name
    return n


def write_json(path: Path, doc) -> Path:
    path.write_text(json.dumps(doc, indent=1) if not isinstance(doc, str) else doc)
    return path


def docker_doc() -> dict:
    return json.loads(DOCKER.read_text())


def oci_bpf(path, caps=(), **spec) -> bytes:
    return S.compile_filter(S.oci_spec(base_spec(oci=str(path), **spec), caps=caps))


# ---------------------------------------------------------------------------
# the schema
# ---------------------------------------------------------------------------


def test_field_in_schema_and_reference():
    f = profile_mod.FIELDS["seccomp.oci"]
    assert f.default is None
    ref = profile_mod.reference_markdown()
    assert "`seccomp.oci`" in ref
    # the precedence with isolate's own protections is spelled out
    for word in ("`deny` beats the file", "deny_ioctls", "deny_namespace_flags", "socket_families",
                 "other_arches", "replaces default_action, allow and rules"):
        assert word in f.doc, word


# ---------------------------------------------------------------------------
# parsing
# ---------------------------------------------------------------------------


def test_parse_small():
    p = S.load_oci(str(SMALL))
    assert p.path == str(SMALL)
    assert p.default_action == "errno:EPERM"
    assert len(p.entries) == 16
    e = p.entries[1]
    assert e.names == ("getcwd",) and e.action == "errno:ENOENT"
    assert p.entries[7].args == ({"index": 1, "op": "masked_eq", "value": 0x5400, "mask": 0xFFFFFF00},)
    assert p.entries[10].includes["min_kernel"] == (4, 8)
    assert p.entries[11].action == "kill-thread"      # SCMP_ACT_KILL is libseccomp's KILL_THREAD
    assert p.entries[12].action == "errno:EPERM"      # errnoRet absent: EPERM
    assert p.entries[13].action == "log"
    assert p.entries[15].names == ("umount2",) and p.entries[15].action == "trace:7"  # Docker's "name"
    import hashlib
    assert p.sha256 == hashlib.sha256(SMALL.read_bytes()).hexdigest()


def test_parse_docker_default():
    p = S.load_oci(str(DOCKER))
    assert p.default_action == "errno:EPERM"
    assert len(p.entries) > 20 and len(p.entries[0].names) > 300


@pytest.mark.parametrize("action, errno_ret, expected", [
    ("SCMP_ACT_ALLOW", None, "allow"),
    ("SCMP_ACT_ERRNO", None, "errno:EPERM"),
    ("SCMP_ACT_ERRNO", 38, "errno:ENOSYS"),
    ("SCMP_ACT_ERRNO", 0, "errno:0"),
    ("SCMP_ACT_KILL", None, "kill-thread"),
    ("SCMP_ACT_KILL_THREAD", None, "kill-thread"),
    ("SCMP_ACT_KILL_PROCESS", None, "kill-process"),
    ("SCMP_ACT_TRAP", None, "trap"),
    ("SCMP_ACT_LOG", None, "log"),
    ("SCMP_ACT_TRACE", None, "trace:1"),
    ("SCMP_ACT_TRACE", 9, "trace:9"),
    ("SCMP_ACT_ALLOW", 5, "allow"),  # errnoRet only matters to ERRNO and TRACE (as in runc)
])
def test_actions(action, errno_ret, expected):
    entry = {"names": ["getpid"], "action": action}
    if errno_ret is not None:
        entry["errnoRet"] = errno_ret
    doc = {"defaultAction": action, "syscalls": [entry]}
    if errno_ret is not None:
        doc["defaultErrnoRet"] = errno_ret
    p = S.parse_oci(json.dumps(doc).encode(), "x.json")
    assert p.entries[0].action == expected
    assert p.default_action == expected


@pytest.mark.parametrize("op, value, value_two, cond", [
    ("SCMP_CMP_EQ", 5, None, {"op": "eq", "value": 5, "mask": None}),
    ("SCMP_CMP_NE", 5, 99, {"op": "ne", "value": 5, "mask": None}),  # valueTwo: MASKED_EQ only
    ("SCMP_CMP_LT", 5, None, {"op": "lt", "value": 5, "mask": None}),
    ("SCMP_CMP_LE", 5, None, {"op": "le", "value": 5, "mask": None}),
    ("SCMP_CMP_GT", 2**64 - 1, None, {"op": "gt", "value": 2**64 - 1, "mask": None}),
    ("SCMP_CMP_GE", 0, None, {"op": "ge", "value": 0, "mask": None}),
    # libseccomp: (arg & value) == valueTwo
    ("SCMP_CMP_MASKED_EQ", 0xFF00, 0x1200, {"op": "masked_eq", "value": 0x1200, "mask": 0xFF00}),
    ("SCMP_CMP_MASKED_EQ", 0xFF00, None, {"op": "masked_eq", "value": 0, "mask": 0xFF00}),
])
def test_ops(op, value, value_two, cond):
    arg = {"index": 3, "value": value, "op": op}
    if value_two is not None:
        arg["valueTwo"] = value_two
    doc = {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["read"], "action": "SCMP_ACT_LOG",
                                                            "args": [arg]}]}
    p = S.parse_oci(json.dumps(doc).encode(), "x.json")
    assert p.entries[0].args == (dict(index=3, **cond),)


def _doc(**entry):
    e = {"names": ["getpid"], "action": "SCMP_ACT_ALLOW"}
    e.update(entry)
    return {"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ALLOW"}, e]}


ERRORS = [
    # (document, JSON path of the error or None, words of the message)
    ('{"defaultAction": "SCMP_ACT_ERRNO",', None, "invalid JSON at line 1"),
    ("[]", None, "expected an object, got array"),
    ({"syscalls": []}, None, "missing required key 'defaultAction'"),
    ({"defaultAction": "SCMP_ACT_DENY"}, "defaultAction", "expected one of SCMP_ACT_ALLOW"),
    ({"defaultAction": "SCMP_ACT_NOTIFY"}, "defaultAction", "SCMP_ACT_NOTIFY is not supported"),
    ({"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": "1"}, "defaultErrnoRet", "got string '1'"),
    ({"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 5000}, "defaultErrnoRet", "errno number 0..4095"),
    ({"defaultAction": "SCMP_ACT_ERRNO", "syscals": []}, "syscals", "did you mean 'syscalls'"),
    ({"defaultAction": "SCMP_ACT_ERRNO", "syscalls": {}}, "syscalls", "expected an array of syscall entries"),
    ({"defaultAction": "SCMP_ACT_ERRNO", "architectures": ["SCMP_ARCH_Z80"]}, "architectures[0]",
     "expected an architecture"),
    ({"defaultAction": "SCMP_ACT_ERRNO", "architectures": ["SCMP_ARCH_X86_64"],
      "archMap": [{"architecture": "SCMP_ARCH_X86_64"}]}, "archMap", "use one of them"),
    ({"defaultAction": "SCMP_ACT_ERRNO", "flags": ["SECCOMP_FILTER_FLAG_BOGUS"]}, "flags[0]", "expected one of"),
    (_doc(action="SCMP_ACT_NOPE"), "syscalls[1].action", "expected one of SCMP_ACT_ALLOW, SCMP_ACT_ERRNO"),
    (_doc(action="SCMP_ACT_NOTIFY"), "syscalls[1].action", "SCMP_ACT_NOTIFY is not supported"),
    (_doc(action=None), "syscalls[1].action", "got null"),
    ({"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"names": ["read"]}]}, "syscalls[0]",
     "missing required key 'action'"),
    (_doc(names="getpid"), "syscalls[1].names", "expected a non-empty array of syscall names"),
    (_doc(names=[]), "syscalls[1].names", "expected a non-empty array of syscall names"),
    (_doc(names=["getpid", 7]), "syscalls[1].names[1]", "expected a string, got number 7"),
    (_doc(name="getpid"), "syscalls[1].name", "both 'name' and 'names'"),
    ({"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"action": "SCMP_ACT_ALLOW"}]}, "syscalls[0]",
     "missing required key 'names'"),
    (_doc(errnoRet=-1), "syscalls[1].errnoRet", "expected a non-negative integer"),
    (_doc(action="SCMP_ACT_ERRNO", errnoRet=1.5), "syscalls[1].errnoRet", "got number 1.5"),
    (_doc(args={}), "syscalls[1].args", "expected an array"),
    (_doc(args=[{"index": 6, "value": 1, "op": "SCMP_CMP_EQ"}]), "syscalls[1].args[0].index", "0..5"),
    (_doc(args=[{"index": 0, "value": 1.0, "op": "SCMP_CMP_EQ"}]), "syscalls[1].args[0].value", "got number 1.0"),
    (_doc(args=[{"index": 0, "value": -1, "op": "SCMP_CMP_EQ"}]), "syscalls[1].args[0].value", "0..2**64-1"),
    (_doc(args=[{"index": 0, "value": 2**64, "op": "SCMP_CMP_EQ"}]), "syscalls[1].args[0].value", "0..2**64-1"),
    (_doc(args=[{"index": 0, "value": 1, "valueTwo": True, "op": "SCMP_CMP_MASKED_EQ"}]),
     "syscalls[1].args[0].valueTwo", "got boolean true"),
    (_doc(args=[{"index": 0, "value": 1, "op": "SCMP_CMP_LIKE"}]), "syscalls[1].args[0].op",
     "expected one of SCMP_CMP_NE"),
    (_doc(args=[{"index": 0, "value": 1}]), "syscalls[1].args[0]", "missing required key 'op'"),
    (_doc(args=[{"index": 0, "value": 1, "op": "SCMP_CMP_EQ", "mask": 3}]), "syscalls[1].args[0].mask",
     "unknown key 'mask'"),
    (_doc(includes={"caps": "CAP_SYS_ADMIN"}), "syscalls[1].includes.caps", "expected an array of strings"),
    (_doc(includes={"minKernel": "4"}), "syscalls[1].includes.minKernel", "kernel version"),
    (_doc(excludes={"minKernel": "0.0"}), "syscalls[1].excludes.minKernel", "kernel version"),
    (_doc(excludes={"arch": ["amd64"]}), "syscalls[1].excludes.arch", "did you mean 'arches'"),
    (_doc(comment=3), "syscalls[1].comment", "expected a string"),
]


@pytest.mark.parametrize("doc, where, words", ERRORS, ids=[str(i) for i in range(len(ERRORS))])
def test_errors_name_file_and_json_path(tmp_path, doc, where, words):
    path = write_json(tmp_path / "bad.json", doc)
    with pytest.raises(isolate.ProfileError) as info:
        S.load_oci(str(path))
    e = info.value
    assert e.file == str(path)
    assert e.key == where
    assert words in e.message, e.message
    assert str(path) in str(e)


def test_unreadable_files(tmp_path):
    with pytest.raises(isolate.ProfileError, match="cannot read the OCI seccomp profile .*No such file"):
        S.load_oci(str(tmp_path / "missing.json"))
    with pytest.raises(isolate.ProfileError, match="is a directory"):
        S.load_oci(str(tmp_path))
    os.mkfifo(tmp_path / "fifo")  # never blocks on a FIFO or a device
    with pytest.raises(isolate.ProfileError, match="not a regular file"):
        S.load_oci(str(tmp_path / "fifo"))
    (tmp_path / "latin1.json").write_bytes(b'{"defaultAction": "\xff"}')
    with pytest.raises(isolate.ProfileError, match="not valid UTF-8"):
        S.load_oci(str(tmp_path / "latin1.json"))


# ---------------------------------------------------------------------------
# translation
# ---------------------------------------------------------------------------


def _rule(syscall, action, *args):
    return {"syscall": syscall, "action": action, "args": [dict(a) for a in args]}


def _rules(rules):
    """rules without their origin"""
    return [{k: v for k, v in r.items() if k != "origin"} for r in rules]


def _eq(index, value):
    return {"index": index, "op": "eq", "value": value, "mask": None}


def test_translate_small():
    p = S.load_oci(str(SMALL))
    default, allow, rules = S.oci_translate(p, caps=(), arch=X86_64, kernel=NEW_KERNEL)
    assert default == "errno:EPERM"
    # unknown names (no_such_syscall_xyz), names absent on x86-64 (socketcall), entries
    # for other arches (sync_file_range2) and entries with the default action (getppid)
    # are left out; ptrace's minKernel 4.8 holds; the CAP_SYS_ADMIN entry is not kept.
    assert allow == ["read", "write", "getpid", "arch_prctl", "ptrace", "mount"]
    assert [r["origin"] for r in rules] == [f"oci syscalls[{i}]" for i in (1, 2, 3, 4, 5, 7, 11, 13, 15)]
    assert _rules(rules) == [
        _rule("getcwd", "errno:ENOENT"),
        _rule("personality", "allow", _eq(0, 0)),            # two entries: ORed
        _rule("personality", "allow", _eq(0, 0xFFFFFFFF)),
        _rule("getpriority", "allow", _eq(0, 0), _eq(1, 0)),  # one entry: ANDed
        _rule("clone", "allow", {"index": 0, "op": "masked_eq", "value": 0, "mask": 0x7E020000}),
        _rule("ioctl", "allow", {"index": 1, "op": "masked_eq", "value": 0x5400, "mask": 0xFFFFFF00}),
        _rule("kill", "kill-thread"),
        _rule("uname", "log"),
        _rule("umount2", "trace:7"),
    ]


def test_translate_caps_arches_kernel():
    p = S.load_oci(str(SMALL))
    _, allow, rules = S.oci_translate(p, caps=["CAP_SYS_ADMIN"], arch=X86_64, kernel=NEW_KERNEL)
    assert "clone" in allow and "unshare" in allow  # includes.caps kept; excludes.caps drops the rule
    assert not [r for r in rules if r["syscall"] == "clone"]
    _, allow, _ = S.oci_translate(p, caps=["sys_admin"], arch=X86_64, kernel=NEW_KERNEL)
    assert "unshare" in allow  # capability names as the profile schema accepts them
    _, allow, _ = S.oci_translate(p, arch=X86_64, kernel=(4, 4))
    assert "ptrace" not in allow  # minKernel 4.8 > 4.4
    _, allow, _ = S.oci_translate(p, arch=X86_64, kernel=(4, 8))
    assert "ptrace" in allow
    _, allow, _ = S.oci_translate(p, arch=AARCH64, kernel=NEW_KERNEL)
    assert "arch_prctl" not in allow  # includes.arches: amd64, x32


def test_arch_names():
    assert {"amd64", "x86_64", "SCMP_ARCH_X86_64"} <= set(S.arch_names(X86_64))
    assert "arm64" in S.arch_names(AARCH64)
    assert S.arch_names() == S.arch_names(sc.system_arch())


def test_includes_excludes_semantics():
    def entry(**kw):
        base = {"caps": (), "arches": (), "min_kernel": None}
        inc = dict(base, **kw.get("includes", {}))
        exc = dict(base, **kw.get("excludes", {}))
        return S.OciEntry(0, ("getpid",), "allow", (), inc, exc)

    inc = entry(includes={"caps": ("CAP_SYS_ADMIN", "CAP_NET_ADMIN")})  # all of them must be kept
    assert not S.oci_included(inc, ["CAP_SYS_ADMIN"], X86_64, NEW_KERNEL)
    assert S.oci_included(inc, ["CAP_NET_ADMIN", "CAP_SYS_ADMIN"], X86_64, NEW_KERNEL)
    exc = entry(excludes={"caps": ("CAP_SYS_ADMIN", "CAP_NET_ADMIN")})  # any of them kept drops it
    assert not S.oci_included(exc, ["CAP_NET_ADMIN"], X86_64, NEW_KERNEL)
    assert S.oci_included(exc, ["CAP_CHOWN"], X86_64, NEW_KERNEL)
    exk = entry(excludes={"min_kernel": (5, 10)})
    assert S.oci_included(exk, (), X86_64, (5, 9)) and not S.oci_included(exk, (), X86_64, (5, 10))
    exa = entry(excludes={"arches": ("AMD64",)})
    assert not S.oci_included(exa, (), X86_64, NEW_KERNEL) and S.oci_included(exa, (), AARCH64, NEW_KERNEL)


def _translate(entries, default="SCMP_ACT_ERRNO", **kw):
    doc = {"defaultAction": default, "syscalls": entries}
    return S.oci_translate(S.parse_oci(json.dumps(doc).encode(), "t.json"), arch=X86_64, kernel=NEW_KERNEL, **kw)


def test_unconditional_entry_decides_its_syscall_like_libseccomp():
    cond = {"names": ["getpid"], "action": "SCMP_ACT_ERRNO", "errnoRet": 5,
            "args": [{"index": 0, "value": 1, "op": "SCMP_CMP_EQ"}]}
    uncond_allow = {"names": ["getpid"], "action": "SCMP_ACT_ALLOW"}
    uncond_log = {"names": ["getpid"], "action": "SCMP_ACT_LOG"}
    # libseccomp 2.5: an unconditional rule drops the conditional ones, before or after
    # it; of two unconditional rules the first stays
    assert _translate([cond, uncond_allow]) == ("errno:EPERM", ["getpid"], [])
    assert _translate([uncond_allow, cond]) == ("errno:EPERM", ["getpid"], [])
    assert _rules(_translate([uncond_log, uncond_allow])[2]) == [_rule("getpid", "log")]
    assert _translate([uncond_allow, uncond_log])[1:] == (["getpid"], [])
    # an entry with the default action is skipped (runc), so the conditional one stays
    default_too = {"names": ["getpid"], "action": "SCMP_ACT_ERRNO"}
    assert _rules(_translate([default_too, cond])[2]) == [_rule("getpid", "errno:EIO", _eq(0, 1))]


def test_args_on_the_same_argument_become_separate_rules_like_runc():
    entry = {"names": ["getpid"], "action": "SCMP_ACT_ALLOW",
             "args": [{"index": 0, "value": 1, "op": "SCMP_CMP_EQ"}, {"index": 0, "value": 2, "op": "SCMP_CMP_EQ"},
                      {"index": 1, "value": 3, "op": "SCMP_CMP_EQ"}]}
    assert _rules(_translate([entry])[2]) == [
        _rule("getpid", "allow", _eq(0, 1)), _rule("getpid", "allow", _eq(0, 2)), _rule("getpid", "allow", _eq(1, 3))]


def test_masked_eq_that_can_never_match_is_dropped(tmp_path):
    never = {"names": ["getpid"], "action": "SCMP_ACT_ALLOW",
             "args": [{"index": 0, "value": 0xF0, "valueTwo": 0x0F, "op": "SCMP_CMP_MASKED_EQ"}]}
    other = {"names": ["getpid"], "action": "SCMP_ACT_ALLOW",
             "args": [{"index": 1, "value": 0xF0, "valueTwo": 0x10, "op": "SCMP_CMP_MASKED_EQ"}]}
    assert _translate([never]) == ("errno:EPERM", [], [])
    path = write_json(tmp_path / "m.json", {"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [never, other]})
    bpf = oci_bpf(path)
    assert run_bpf(bpf, nr("getpid"), [0x0F, 0]) == EPERM
    assert run_bpf(bpf, nr("getpid"), [0, 0x13]) == sc.ALLOW


def test_translate_docker_default():
    p = S.load_oci(str(DOCKER))
    default, allow, rules = S.oci_translate(p, arch=X86_64, kernel=NEW_KERNEL)
    assert default == "errno:EPERM"
    for name in ("read", "write", "execve", "openat", "mmap", "futex", "exit_group", "arch_prctl", "ptrace"):
        assert name in allow, name
    for name in ("socketcall", "_llseek", "chown32", "mount", "reboot", "unshare", "clone", "clone3", "bpf"):
        assert name not in allow, name
    by_name = {}
    for r in _rules(rules):
        by_name.setdefault(r["syscall"], []).append(r)
    assert [r["args"] for r in by_name["personality"]] == [[_eq(0, v)] for v in (0, 8, 0x20000, 0x20008, 0xFFFFFFFF)]
    assert by_name["clone"] == [_rule("clone", "allow", {"index": 0, "op": "masked_eq", "value": 0,
                                                         "mask": 0x7E020000})]  # not the s390 one
    assert by_name["clone3"] == [_rule("clone3", "errno:ENOSYS")]
    assert len(by_name["socket"]) == 3
    assert all(len(v) == 1 for k, v in by_name.items() if k not in ("personality", "socket"))
    # with CAP_SYS_ADMIN kept: clone, clone3, unshare, mount... allowed outright
    _, allow, rules = S.oci_translate(p, caps=["CAP_SYS_ADMIN"], arch=X86_64, kernel=NEW_KERNEL)
    assert {"clone", "clone3", "unshare", "mount", "setns"} <= set(allow)
    assert not [r for r in rules if r["syscall"] in ("clone", "clone3")]
    # an old kernel: ptrace & co. need 4.8
    _, allow, _ = S.oci_translate(p, arch=X86_64, kernel=(4, 4))
    assert "ptrace" not in allow


def test_oci_spec_replaces_policy_and_keeps_protections():
    spec = base_spec(oci=str(SMALL), deny=["mount"], deny_ioctls=["TIOCSTI"], deny_namespace_flags=True,
                     socket_families=["unix"], other_arches="errno:EPERM")
    out = S.oci_spec(spec)
    assert "oci" not in out and out["oci_source"]["path"] == str(SMALL)
    assert out["default_action"] == "errno:EPERM" and "read" in out["allow"]
    for k in ("deny", "deny_ioctls", "deny_namespace_flags", "socket_families", "other_arches", "deny_action"):
        assert out[k] == spec[k]
    assert S.oci_spec(base_spec()) == base_spec()  # no oci: unchanged
    for k, v in (("rules", [_rule("getpid", "allow")]), ("allow", ["read"]), ("default_action", "log")):
        with pytest.raises(ValueError, match=f"seccomp.{k} cannot be combined with seccomp.oci"):
            S.oci_spec(base_spec(oci=str(SMALL), **{k: v}))


# ---------------------------------------------------------------------------
# compiled programs (BPF interpreter)
# ---------------------------------------------------------------------------


def test_compiled_small_semantics():
    bpf = oci_bpf(SMALL)
    assert run_bpf(bpf, nr("read")) == sc.ALLOW
    assert run_bpf(bpf, nr("getppid")) == EPERM                        # default (its entry = default)
    assert run_bpf(bpf, nr("getcwd")) == sc.ERRNO(errno.ENOENT)       # errnoRet of the entry
    assert run_bpf(bpf, nr("personality"), [0]) == sc.ALLOW            # entries ORed
    assert run_bpf(bpf, nr("personality"), [0xFFFFFFFF]) == sc.ALLOW
    assert run_bpf(bpf, nr("personality"), [0x0040000]) == EPERM
    assert run_bpf(bpf, nr("getpriority"), [0, 0]) == sc.ALLOW         # args ANDed
    assert run_bpf(bpf, nr("getpriority"), [0, 1]) == EPERM
    assert run_bpf(bpf, nr("getpriority"), [1, 0]) == EPERM
    assert run_bpf(bpf, nr("clone"), [0x11]) == sc.ALLOW               # (flags & 0x7E020000) == 0
    assert run_bpf(bpf, nr("clone"), [0x10000000]) == EPERM
    assert run_bpf(bpf, nr("ioctl"), [1, 0x5413]) == sc.ALLOW
    assert run_bpf(bpf, nr("ioctl"), [1, 0x40049409]) == EPERM
    assert run_bpf(bpf, nr("kill")) == sc.KILL_THREAD
    assert run_bpf(bpf, nr("uname")) == sc.LOG
    assert run_bpf(bpf, nr("umount2")) == sc.TRACE(7)
    assert run_bpf(bpf, nr("mount")) == sc.ALLOW
    assert run_bpf(bpf, nr("unshare")) == EPERM
    bpf = oci_bpf(SMALL, caps=["CAP_SYS_ADMIN"])
    assert run_bpf(bpf, nr("clone"), [0x10000000]) == sc.ALLOW
    assert run_bpf(bpf, nr("unshare")) == sc.ALLOW


def test_isolate_protections_apply_on_top():
    eacces = sc.ERRNO(errno.EACCES)
    bpf = oci_bpf(SMALL, deny=["@mount"], deny_action="errno:EACCES", deny_ioctls=["TIOCSTI"],
                  deny_namespace_flags=True, socket_families=["unix"], other_arches="errno:EPERM",
                  caps=["CAP_SYS_ADMIN"])
    assert run_bpf(bpf, nr("mount")) == eacces                          # deny beats the file's allow
    assert run_bpf(bpf, nr("umount2")) == eacces                        # ... and its trace rule
    assert run_bpf(bpf, nr("ioctl"), [1, 0x5413]) == sc.ALLOW
    assert run_bpf(bpf, nr("ioctl"), [1, 0x5412]) == eacces             # TIOCSTI, allowed by the file
    assert run_bpf(bpf, nr("clone"), [0x11]) == sc.ALLOW                # allowed outright by the file ...
    assert run_bpf(bpf, nr("clone"), [0x10000011]) == eacces            # ... but not CLONE_NEWUSER
    assert run_bpf(bpf, nr("unshare")) == eacces
    assert run_bpf(bpf, nr("read"), arch=AUDIT_ARCH_I386) == EPERM      # other_arches
    assert run_bpf(bpf, nr("read")) == sc.ALLOW


def test_socket_families_only_deny_with_an_oci_profile(tmp_path):
    # the file allows unix sockets and denies inet6 (default action); the profile lists
    # unix and inet6: inet6 stays denied, netlink (allowed by the file) is denied too
    doc = {"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 13,
           "syscalls": [{"names": ["socket"], "action": "SCMP_ACT_ALLOW",
                         "args": [{"index": 0, "value": 1, "op": "SCMP_CMP_EQ"}]},
                        {"names": ["socket"], "action": "SCMP_ACT_ALLOW",
                         "args": [{"index": 0, "value": 16, "op": "SCMP_CMP_EQ"}]}]}
    path = write_json(tmp_path / "sock.json", doc)
    bpf = oci_bpf(path, socket_families=["unix", "inet6"])
    assert run_bpf(bpf, nr("socket"), [1, 1, 0]) == sc.ALLOW
    assert run_bpf(bpf, nr("socket"), [10, 1, 0]) == sc.ERRNO(13)       # the file's default
    assert run_bpf(bpf, nr("socket"), [16, 3, 0]) == EPERM               # deny_action
    # without an OCI profile the list allows what it names (unchanged)
    plain = S.compile_filter(base_spec(default_action="errno:EACCES", socket_families=["unix", "inet6"]))
    assert run_bpf(plain, nr("socket"), [10, 1, 0]) == sc.ALLOW


def test_compiled_docker_default():
    bpf = oci_bpf(DOCKER)
    assert run_bpf(bpf, nr("read")) == sc.ALLOW
    assert run_bpf(bpf, nr("mount")) == EPERM
    for persona, expected in ((0, sc.ALLOW), (8, sc.ALLOW), (0x20000, sc.ALLOW), (0xFFFFFFFF, sc.ALLOW),
                              (0x0040000, EPERM), (0x0400000, EPERM)):
        assert run_bpf(bpf, nr("personality"), [persona]) == expected, hex(persona)
    assert run_bpf(bpf, nr("clone"), [0x3D0F00]) == sc.ALLOW            # pthread_create's flags
    assert run_bpf(bpf, nr("clone"), [0x10000000 | 17]) == EPERM
    assert run_bpf(bpf, nr("clone3")) == sc.ERRNO(errno.ENOSYS)
    assert run_bpf(bpf, nr("socket"), [2, 1, 0]) == sc.ALLOW
    assert run_bpf(bpf, nr("socket"), [40, 1, 0]) == EPERM               # AF_VSOCK
    assert run_bpf(bpf, nr("socket"), [38, 5, 0]) == EPERM               # AF_ALG
    bpf = oci_bpf(DOCKER, caps=["CAP_SYS_ADMIN"])
    assert run_bpf(bpf, nr("mount")) == sc.ALLOW
    assert run_bpf(bpf, nr("clone"), [0x10000000 | 17]) == sc.ALLOW


def test_compile_filter_and_describe_accept_an_untranslated_spec():
    spec = base_spec(oci=str(SMALL))
    assert S.compile_filter(spec) == oci_bpf(SMALL)
    text = S.describe(spec)
    assert f"# OCI seccomp profile: {SMALL} (sha256 " in text
    assert "default action: errno:EPERM" in text
    lines = {ln.split()[1]: ln for ln in text.splitlines() if ln.startswith("#   ")}
    assert lines["read"].split()[2:] == ["allow"]
    assert "errno:ENOENT [oci syscalls[1]]" in lines["getcwd"]
    assert "allow" in lines["personality"] and "otherwise errno:EPERM" in lines["personality"]


def test_cache_follows_the_file_content(tmp_path, monkeypatch):
    doc = {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["getcwd"], "action": "SCMP_ACT_ERRNO",
                                                            "errnoRet": 2}]}
    path = write_json(tmp_path / "p.json", doc)
    spec = base_spec(oci=str(path))
    first = S.compile_filter(spec)
    assert run_bpf(first, nr("getcwd")) == sc.ERRNO(errno.ENOENT)
    translated = S.oci_spec(spec)
    assert S.CACHE[S_bpf._cache_key(translated)] is first
    assert translated["oci_source"]["sha256"] == S.load_oci(str(path)).sha256

    real_generate = S_bpf._generate
    calls = []

    def counting(plan, method):
        calls.append(method)
        return real_generate(plan, method)

    monkeypatch.setattr(S_bpf, "_generate", counting)
    assert S.compile_filter(spec) is first and calls == []        # same content: cached
    doc["syscalls"][0]["errnoRet"] = 13
    write_json(path, doc)
    second = S.compile_filter(spec)                               # edited: compiled again
    assert calls == ["export_bpf"]
    assert run_bpf(second, nr("getcwd")) == sc.ERRNO(errno.EACCES)
    # for a cache keyed on the profile (whose data only has the path)
    import hashlib
    assert S.oci_digest(spec) == hashlib.sha256(path.read_bytes()).hexdigest()
    assert S.oci_digest(base_spec()) is None
    assert S.oci_digest(base_spec(oci=str(tmp_path / "gone.json"))) == ""


# ---------------------------------------------------------------------------
# profiles
# ---------------------------------------------------------------------------


def test_profile_extends_default_loads_and_compiles():
    p = profile_mod.from_dict({"extends": "default", "seccomp": {"oci": str(DOCKER)}})
    sec = p.data["seccomp"]
    assert sec["oci"] == str(DOCKER)
    # the file replaces default.toml's personality rules; its protections stay
    assert sec["rules"] == () and sec["allow"] == () and sec["default_action"] == "allow"
    assert "@mount" in sec["deny"] and sec["deny_namespace_flags"] and sec["socket_families"]
    assert profile_mod.from_dict(p.to_dict()) == p      # the normalized data loads back as-is
    plan = plans.compile_profile(p)
    assert plan.bpf and len(plan.bpf) % 8 == 0
    assert run_bpf(plan.bpf, nr("mount")) == EPERM                      # default's deny list
    assert run_bpf(plan.bpf, nr("personality"), [0x0040000]) == EPERM   # the file's rules
    assert run_bpf(plan.bpf, nr("personality"), [8]) == sc.ALLOW
    assert run_bpf(plan.bpf, nr("ptrace")) == EPERM                     # allowed by the file, denied by @debug


def test_profile_conflicts_are_profile_errors(tmp_path):
    for key, value in (("rules", [{"syscall": "getpid", "action": "allow"}]), ("allow", ["read"]),
                       ("default_action", "errno:EPERM")):
        with pytest.raises(isolate.ProfileError) as info:
            profile_mod.from_dict({"extends": "default", "seccomp": {"oci": str(SMALL), key: value}})
        assert info.value.key == f"seccomp.{key}"
        assert "cannot be combined with seccomp.oci" in info.value.message
    # default_action = "allow" is the default: accepted
    profile_mod.from_dict({"seccomp": {"oci": str(SMALL), "default_action": "allow"}})
    # a child of a profile with oci cannot add rules either
    parent = tmp_path / "parent.toml"
    parent.write_text(f'extends = "default"\n[seccomp]\noci = "{SMALL}"\n')
    child = tmp_path / "child.toml"
    child.write_text('extends = "./parent.toml"\n[seccomp]\nallow = ["read"]\n')
    with pytest.raises(isolate.ProfileError) as info:
        profile_mod.load(str(child))
    assert info.value.file == str(child) and info.value.key == "seccomp.allow"
    # an override with oci drops the inherited rules too
    p = profile_mod.load("default", overrides=[f"seccomp.oci={SMALL}"])
    assert p.data["seccomp"]["oci"] == str(SMALL) and p.data["seccomp"]["rules"] == ()


def test_relative_paths_are_relative_to_the_profile_file(tmp_path, monkeypatch):
    (tmp_path / "oci").mkdir()
    (tmp_path / "profiles" / "base").mkdir(parents=True)
    target = tmp_path / "oci" / "small.json"
    target.write_bytes(SMALL.read_bytes())
    parent = tmp_path / "profiles" / "base" / "parent.toml"
    parent.write_text('extends = "default"\n[seccomp]\noci = "../../oci/small.json"\n')
    child = tmp_path / "profiles" / "child.toml"
    child.write_text('extends = "base/parent.toml"\n[env]\nset = { A = "1" }\n')
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert profile_mod.load(str(parent)).data["seccomp"]["oci"] == str(target)
    assert profile_mod.load(str(child)).data["seccomp"]["oci"] == str(target)   # the parent's directory
    own = tmp_path / "profiles" / "own.toml"
    own.write_text('[seccomp]\noci = "../oci/small.json"\n')
    assert profile_mod.load(str(own)).data["seccomp"]["oci"] == str(target)
    # without a file (from_dict, from_toml, --set): the current directory, like extends
    (elsewhere / "x.json").write_bytes(SMALL.read_bytes())
    assert profile_mod.from_dict({"seccomp": {"oci": "x.json"}}).data["seccomp"]["oci"] == str(elsewhere / "x.json")
    assert profile_mod.from_toml('[seccomp]\noci = "./x.json"').data["seccomp"]["oci"] == str(elsewhere / "x.json")
    p = profile_mod.load(str(own), overrides=["seccomp.oci=x.json"])
    assert p.data["seccomp"]["oci"] == str(elsewhere / "x.json")


def test_placeholders_are_resolved_by_the_compiler(tmp_path):
    p = profile_mod.from_dict({"extends": "default", "seccomp": {"oci": "{cwd}/oci.json"}})
    assert p.data["seccomp"]["oci"] == "{cwd}/oci.json"  # not read at load time
    with pytest.raises(isolate.ProfileError) as info:
        plans.compile_profile(p, cwd=str(tmp_path))
    assert info.value.key == "seccomp.oci" and "No such file" in info.value.message
    (tmp_path / "oci.json").write_bytes(SMALL.read_bytes())
    plan = plans.compile_profile(p, cwd=str(tmp_path))
    assert run_bpf(plan.bpf, nr("getcwd")) == sc.ERRNO(errno.ENOENT)
    for bad, words in (("{nope}/x.json", "unknown placeholder"), ("/x/{cwd}.json", "only start the path"),
                       ("{cwd/x.json", "unbalanced"), ("", "expected a path")):
        with pytest.raises(isolate.ProfileError) as info:
            profile_mod.from_dict({"seccomp": {"oci": bad}})
        assert info.value.key == "seccomp.oci" and words in info.value.message, (bad, info.value.message)


def test_bad_files_through_a_profile(tmp_path):
    prof = tmp_path / "p.toml"
    prof.write_text('extends = "default"\n[seccomp]\noci = "missing.json"\n')
    with pytest.raises(isolate.ProfileError) as info:
        profile_mod.load(str(prof))
    assert info.value.file == str(prof) and info.value.key == "seccomp.oci"
    assert "No such file" in info.value.message
    doc = docker_doc()
    doc["syscalls"][12]["action"] = "SCMP_ACT_MAYBE"
    write_json(tmp_path / "missing.json", doc)
    with pytest.raises(isolate.ProfileError) as info:
        profile_mod.load(str(prof))
    e = info.value
    assert (e.file, e.key) == (str(tmp_path / "missing.json"), "syscalls[12].action")
    assert "expected one of SCMP_ACT_ALLOW" in e.message and "got string 'SCMP_ACT_MAYBE'" in e.message
    for bad in (7, ["x.json"], {"path": "x.json"}):
        with pytest.raises(isolate.ProfileError) as info:
            profile_mod.from_dict({"seccomp": {"oci": bad}})
        assert info.value.key == "seccomp.oci"


def test_a_file_too_complex_to_compile_is_a_profile_error(tmp_path):
    ops = ["SCMP_CMP_GT", "SCMP_CMP_LT", "SCMP_CMP_NE"]
    entries = [{"names": ["ioctl"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1 + i,
                "args": [{"index": k, "value": (i * 7919 + k * 104729) * 65537 + 1, "op": ops[(i + k) % 3]}
                         for k in range(3)]} for i in range(12)]
    path = write_json(tmp_path / "complex.json", {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": entries})
    p = profile_mod.from_dict({"extends": "default", "seccomp": {"oci": str(path)}})
    with pytest.raises(isolate.ProfileError) as info:
        plans.compile_profile(p)
    assert info.value.file == str(path) and "too complex" in info.value.message


# ---------------------------------------------------------------------------
# a real sandbox
# ---------------------------------------------------------------------------

PROBE = r"""
import ctypes, json, socket
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
NR = json.loads(SYSCALL_NUMBERS)

def call(name, *args):
    ctypes.set_errno(0)
    r = libc.syscall(ctypes.c_long(NR[name]), *(ctypes.c_ulong(a) for a in args))
    return -ctypes.get_errno() if r == -1 else r

buf = ctypes.create_string_buffer(4096)
info = ctypes.create_string_buffer(512)
out = {
    "getpid": call("getpid"),
    "getppid": call("getppid"),
    "sysinfo": call("sysinfo", ctypes.addressof(info)),
    "personality_query": call("personality", 0xFFFFFFFF),
    "personality_no_aslr": call("personality", 0x0040000),
    "getpriority_self": call("getpriority", 0, 0),
    "getpriority_pid1": call("getpriority", 0, 1),
    "getpriority_pgrp": call("getpriority", 1, 0),
    "mount": call("mount", 0, 0, 0, 0, 0),
    "ptrace": call("ptrace", 2, 0x7FFFFFFF, 0, 0),
    "netlink": call("socket", 16, 3, 0),
}
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.close()
out["unix_socket"] = 0
print(json.dumps(out))
"""


def test_in_a_sandbox(tmp_path):
    # Docker's profile, with test entries: getppid and sysinfo dropped from its allow
    # list (getppid then gets the default errno 1, sysinfo an entry of its own with
    # errnoRet 18), getpriority allowed only for (PRIO_PROCESS, 0), mount allowed.
    doc = docker_doc()
    allow = doc["syscalls"][0]
    assert allow["action"] == "SCMP_ACT_ALLOW" and "getppid" in allow["names"]
    allow["names"] = [n for n in allow["names"] if n not in ("getppid", "sysinfo", "getpriority")]
    doc["syscalls"] += [
        {"names": ["sysinfo"], "action": "SCMP_ACT_ERRNO", "errnoRet": errno.EXDEV},
        {"names": ["getpriority"], "action": "SCMP_ACT_ALLOW",
         "args": [{"index": 0, "value": 0, "op": "SCMP_CMP_EQ"}, {"index": 1, "value": 0, "op": "SCMP_CMP_EQ"}]},
        {"names": ["mount", "ptrace"], "action": "SCMP_ACT_ALLOW"},
    ]
    path = write_json(tmp_path / "docker-test.json", doc)
    prof = with_python()
    # the default profile's deny list (@mount, @debug), socket_families, ... stay; a
    # different deny_action shows which side decided
    prof["seccomp"] = {"oci": str(path), "deny_action": "errno:EACCES"}
    numbers = {n: nr(n) for n in ("getpid", "getppid", "sysinfo", "personality", "getpriority", "mount",
                                  "ptrace", "socket")}
    code = PROBE.replace("SYSCALL_NUMBERS", repr(json.dumps(numbers)))
    r = isolate.run([sys.executable, "-c", code], profile=prof, capture_output=True, timeout=60)
    assert r.returncode == 0, r.stderr.decode(errors="replace")
    out = json.loads(r.stdout)
    assert out["getpid"] > 0                                   # allowed by the file
    assert out["getppid"] == -errno.EPERM                       # the file's defaultAction/defaultErrnoRet
    assert out["sysinfo"] == -errno.EXDEV                      # an entry's errnoRet
    assert out["personality_query"] >= 0                       # Docker's personality entries
    assert out["personality_no_aslr"] == -errno.EPERM
    assert out["getpriority_self"] >= 0                        # args ANDed
    assert out["getpriority_pid1"] == -errno.EPERM
    assert out["getpriority_pgrp"] == -errno.EPERM
    assert out["mount"] == -errno.EACCES                       # isolate's deny list beats the file
    assert out["ptrace"] == -errno.EACCES
    assert out["netlink"] == -errno.EACCES                     # socket_families on top
    assert out["unix_socket"] == 0
