"""Tests of isolate.seccomp / isolate.syscall_groups.

Three layers:
  * unit tests of parsing, names, groups;
  * a small classic-BPF interpreter runs the exported program against synthetic
    seccomp_data and is compared with a direct model of the documented precedence
    (fixed cases plus randomized specs);
  * forked children load the real program into the kernel and try syscalls.
"""

from __future__ import annotations

import ctypes
import errno
import json
import mmap
import os
import random
import resource
import signal
import socket
import struct

import pytest
import pyseccomp as sc

from isolate.kernel import syscalls
from isolate.plan import seccomp as S
from isolate.plan.seccomp import bpf as S_bpf
from isolate.plan.seccomp import policy as S_policy
from isolate.plan.seccomp import regions as S_regions
from isolate.plan.seccomp import verify as S_verify
from isolate.kernel.syscall_groups import DESCRIPTIONS, GROUPS

AUDIT_ARCH_X86_64 = 0xC000003E
AUDIT_ARCH_I386 = 0x40000003
U64 = (1 << 64) - 1

NR = {name: sc.resolve_syscall(sc.Arch.NATIVE, name) for name in (
    "read", "write", "getpid", "mount", "umount2", "sethostname", "socket", "socketpair",
    "ioctl", "clone", "clone3", "unshare", "setns", "personality", "getcwd", "open_tree",
    "chroot", "fsopen", "uname", "kill", "ptrace", "pipe2",
)}


def base_spec(**kw) -> dict:
    spec = {
        "default_action": "allow",
        "deny": [],
        "deny_action": "errno:EPERM",
        "allow": [],
        "rules": [],
        "socket_families": None,
        "deny_ioctls": [],
        "deny_namespace_flags": False,
        "other_arches": "kill",
    }
    spec.update(kw)
    return spec


# ---------------------------------------------------------------------------
# classic BPF interpreter (the subset seccomp allows)
# ---------------------------------------------------------------------------


def run_bpf(prog: bytes, nr: int, args=(0,) * 6, arch: int = AUDIT_ARCH_X86_64) -> int:
    insns = [struct.unpack_from("<HBBI", prog, i) for i in range(0, len(prog), 8)]
    args = tuple(a & U64 for a in args) + (0,) * (6 - len(args))
    data = struct.pack("<iIQ6Q", nr if nr < 0x80000000 else nr - (1 << 32), arch, 0, *args)
    a = x = 0
    mem = [0] * 16
    pc = 0
    for _ in range(100000):
        code, jt, jf, k = insns[pc]
        cls = code & 0x07
        pc += 1
        if cls == 0x00:  # LD
            mode = code & 0xE0
            if mode == 0x20:
                assert code & 0x18 == 0, "only 32-bit loads"
                a = struct.unpack_from("<I", data, k)[0]
            elif mode == 0x00:
                a = k
            elif mode == 0x60:
                a = mem[k]
            elif mode == 0x80:
                a = len(data)
            else:
                raise AssertionError(f"bad LD {code:#x}")
        elif cls == 0x01:  # LDX
            mode = code & 0xE0
            x = {0x00: k, 0x60: mem[k] if k < 16 else 0, 0x80: len(data)}[mode]
        elif cls == 0x02:
            mem[k] = a
        elif cls == 0x03:
            mem[k] = x
        elif cls == 0x04:  # ALU
            op, src = code & 0xF0, (x if code & 0x08 else k)
            a = {
                0x00: lambda: a + src, 0x10: lambda: a - src, 0x20: lambda: a * src,
                0x30: lambda: a // src, 0x40: lambda: a | src, 0x50: lambda: a & src,
                0x60: lambda: a << src, 0x70: lambda: a >> src, 0x80: lambda: -a,
                0x90: lambda: a % src, 0xA0: lambda: a ^ src,
            }[op]() & 0xFFFFFFFF
        elif cls == 0x05:  # JMP
            op, src = code & 0xF0, (x if code & 0x08 else k)
            if op == 0x00:
                pc += k
                continue
            cond = {0x10: a == src, 0x20: a > src, 0x30: a >= src, 0x40: bool(a & src)}[op]
            pc += jt if cond else jf
        elif cls == 0x06:  # RET
            return a if code & 0x18 == 0x10 else k
        elif cls == 0x07:
            if code & 0xF8 == 0x00:
                x = a
            else:
                a = x
    raise AssertionError("BPF program did not terminate")


# ---------------------------------------------------------------------------
# reference model of the documented semantics
# ---------------------------------------------------------------------------

SEVERITY = [sc.KILL_PROCESS, sc.KILL_THREAD, sc.TRAP, 0x00050000, sc.TRACE(0) & 0xFFFF0000, sc.LOG, sc.ALLOW]


def severity(action: int) -> int:
    if action in (sc.KILL_PROCESS, sc.KILL_THREAD, sc.TRAP, sc.LOG, sc.ALLOW):
        return SEVERITY.index(action)
    return SEVERITY.index(action & 0xFFFF0000)


def cond_matches(c: dict, args) -> bool:
    a = args[c["index"]] & U64
    v = c["value"] & U64
    op = c["op"]
    if op == "masked_eq":
        return a & c["mask"] == v
    return {"eq": a == v, "ne": a != v, "lt": a < v, "le": a <= v, "gt": a > v, "ge": a >= v}[op]


def native_set(names) -> set[int]:
    out = set()
    for n in S.expand(names):
        nr = syscalls.native_nr(n)
        if nr is not None:
            out.add(nr)
    return out


def model(spec: dict, nr: int, args) -> int:
    default = S.parse_action(spec["default_action"])
    deny = S.parse_action(spec["deny_action"])
    if nr in native_set(spec["deny"]):
        return deny
    matches = []  # (severity, order, action)
    order = 0
    for rule in spec["rules"]:
        for member in S.expand([rule["syscall"]]):
            order += 1
            if syscalls.native_nr(member) == nr and all(cond_matches(c, args) for c in rule["args"]):
                action = S.parse_action(rule["action"])
                matches.append((severity(action), order, action))
    if spec["deny_namespace_flags"]:
        for flag in S.CLONE_NAMESPACE_FLAGS.values():
            order += 1
            if nr == NR["clone"] and args[0] & flag:
                matches.append((severity(deny), order, deny))
        for name, action in (("unshare", deny), ("setns", deny), ("clone3", sc.ERRNO(errno.ENOSYS))):
            order += 1
            if nr == NR[name]:
                matches.append((severity(action), order, action))
    for item in spec["deny_ioctls"]:
        order += 1
        if nr == NR["ioctl"] and args[1] & 0xFFFFFFFF == S.ioctl_request(item):
            matches.append((severity(deny), order, deny))
    if spec["socket_families"] is not None and nr in (NR["socket"], NR["socketpair"]):
        fams = {S.socket_family(f) for f in spec["socket_families"]}
        order += 1
        action = sc.ALLOW if args[0] & 0xFFFFFFFF in fams else deny
        matches.append((severity(action), order, action))
    if matches:
        return min(matches)[2]
    if nr in native_set(spec["allow"]):
        return sc.ALLOW
    return default


# ---------------------------------------------------------------------------
# parsing and names
# ---------------------------------------------------------------------------


def test_parse_action_forms():
    assert S.parse_action("allow") == sc.ALLOW
    assert S.parse_action("kill") == sc.KILL_PROCESS
    assert S.parse_action("kill-process") == sc.KILL_PROCESS
    assert S.parse_action("kill-thread") == sc.KILL_THREAD
    assert S.parse_action("log") == sc.LOG
    assert S.parse_action("trap") == sc.TRAP
    assert S.parse_action("errno:EPERM") == sc.ERRNO(errno.EPERM)
    assert S.parse_action("errno:eacces") == sc.ERRNO(errno.EACCES)
    assert S.parse_action("errno:38") == sc.ERRNO(38)
    assert S.parse_action("errno:0") == sc.ERRNO(0)
    assert S.parse_action("errno:4095") == sc.ERRNO(4095)
    assert S.parse_action("trace:7") == sc.TRACE(7)
    assert S.parse_action(" Allow ") == sc.ALLOW


@pytest.mark.parametrize("bad", [
    "", "deny", "errno", "errno:", "errno:4096", "errno:-1", "errno:ENOTANERRNO",
    "errno:errorcode", "trace", "trace:x", "trace:70000", "kill:1", "allow:1", None, 1,
])
def test_parse_action_rejects(bad):
    with pytest.raises(ValueError) as info:
        S.parse_action(bad)
    msg = str(info.value)
    assert repr(bad) in msg and "errno:NAME" in msg and "kill-thread" in msg


def test_format_action_roundtrip():
    for text in ("allow", "kill-process", "kill-thread", "log", "trap", "errno:EPERM", "errno:ENOSYS", "trace:3"):
        assert S.format_action(S.parse_action(text)) == text
    assert S.parse_action(S.format_action(sc.ERRNO(4000))) == sc.ERRNO(4000)


def test_check_syscall_name():
    for ok in ("read", "mount", "@mount", "@system-service", "socketcall", "chown32", "open", "mseal"):
        S.check_syscall_name(ok)
    with pytest.raises(ValueError, match=r"^unknown syscall 'foo'$"):
        S.check_syscall_name("foo")
    with pytest.raises(ValueError, match=r"unknown syscall group '@foo' \(known: @aio, @basic-io"):
        S.check_syscall_name("@foo")


def test_groups_data():
    expected = {
        "@aio", "@basic-io", "@chown", "@clock", "@cpu-emulation", "@debug", "@file-system",
        "@io-event", "@ipc", "@keyring", "@memlock", "@module", "@mount", "@network-io",
        "@obsolete", "@pkey", "@privileged", "@process", "@raw-io", "@reboot", "@resources",
        "@sandbox", "@setuid", "@signal", "@swap", "@sync", "@system-service", "@timer",
        "@known", "@default", "@namespaces", "@io-uring", "@bpf", "@perf", "@ptrace",
        "@userfaultfd", "@handle",
    }
    assert set(GROUPS) == expected
    assert set(DESCRIPTIONS) == expected
    for name, members in GROUPS.items():
        assert DESCRIPTIONS[name] and "\n" not in DESCRIPTIONS[name]
        assert isinstance(members, tuple) and members
        for m in members:
            assert not m.startswith("@") or m in GROUPS, (name, m)
    assert not [g for g in GROUPS if g.startswith("@isolate-")]


def test_expand():
    mount = S.expand(["@mount"])
    assert {"mount", "umount2", "pivot_root", "fsopen", "fsmount", "move_mount", "open_tree_attr"} <= set(mount)
    assert set(S.expand(["@module"])) == {"init_module", "finit_module", "delete_module"}
    assert S.expand(["@namespaces"]) == ["clone3", "setns", "unshare"]
    assert S.expand(["@io-uring"]) == ["io_uring_enter", "io_uring_register", "io_uring_setup"]
    assert S.expand(["@ptrace"]) == ["process_vm_readv", "process_vm_writev", "ptrace"]
    assert S.expand(["@handle"]) == ["name_to_handle_at", "open_by_handle_at"]
    assert S.expand(["@bpf", "@perf", "@userfaultfd"]) == ["bpf", "perf_event_open", "userfaultfd"]
    # recursive, sorted, unique
    svc = S.expand(["@system-service"])
    assert svc == sorted(set(svc))
    assert {"read", "execve", "openat", "socket", "clone", "rt_sigaction", "exit_group"} <= set(svc)
    priv = set(S.expand(["@privileged"]))
    assert {"chown", "init_module", "reboot", "swapon", "sethostname", "iopl"} <= priv
    assert S.expand(["read", "read", "@swap"]) == ["read", "swapoff", "swapon"]
    known = set(S.expand(["@known"]))
    assert {"read", "_sysctl", "mount", "clone3", "socketcall"} <= known and len(known) > 450
    with pytest.raises(ValueError, match="unknown syscall group '@nope'"):
        S.expand(["read", "@nope"])


def test_socket_families_and_ioctls():
    assert S.SOCKET_FAMILIES["unix"] == S.SOCKET_FAMILIES["local"] == 1
    assert S.SOCKET_FAMILIES["inet"] == 2 and S.SOCKET_FAMILIES["inet6"] == 10
    assert S.SOCKET_FAMILIES["netlink"] == 16 and S.SOCKET_FAMILIES["packet"] == 17
    assert S.SOCKET_FAMILIES["bluetooth"] == 31 and S.SOCKET_FAMILIES["alg"] == 38
    assert S.SOCKET_FAMILIES["vsock"] == 40 and S.SOCKET_FAMILIES["xdp"] == 44
    assert max(S.SOCKET_FAMILIES.values()) == S.AF_MAX - 1 == 45
    assert S.socket_family("AF_INET6") == S.socket_family("af_inet6") == 10
    assert S.socket_family(socket.AF_NETLINK) == 16
    with pytest.raises(ValueError, match="unknown socket family 'AF_FOO'"):
        S.socket_family("AF_FOO")
    assert S.IOCTLS["TIOCSTI"] == 0x5412 and S.IOCTLS["TIOCLINUX"] == 0x541C
    assert S.IOCTLS["TIOCVHANGUP"] == 0x5437 and S.IOCTLS["TIOCSSERIAL"] == 0x541F
    assert S.ioctl_request("tiocsti") == 0x5412 and S.ioctl_request(0x541B) == 0x541B
    for bad in ("TIOCFOO", 1 << 32, -1):
        with pytest.raises(ValueError):
            S.ioctl_request(bad)


def test_restrict_suid_sgid_rules():
    # chmod-like calls: the mode argument; creating calls: the mode, with O_CREAT or
    # O_TMPFILE for open/openat; openat2: ENOSYS whole; compared on single bits.
    nr = {n: sc.resolve_syscall(sc.Arch.NATIVE, n) for n in (
        "chmod", "fchmod", "fchmodat", "fchmodat2", "mkdir", "mkdirat", "mknod", "mknodat", "creat", "open",
        "openat", "openat2")}
    eperm, enosys = sc.ERRNO(errno.EPERM), sc.ERRNO(errno.ENOSYS)
    for strict in (False, True):
        spec = base_spec(restrict_suid_sgid=True)
        if strict:  # an allowlist: the rules hold there too, the rest falls to allow
            spec.update(default_action="errno:ENOSYS", allow=["@system-service"])
        bpf = S.compile_filter(spec)
        for bit in (0o4000, 0o2000, 0o6000, (1 << 32) | 0o4000):
            mode = bit | 0o755
            assert run_bpf(bpf, nr["chmod"], (0, mode)) == eperm
            assert run_bpf(bpf, nr["fchmod"], (3, mode)) == eperm
            assert run_bpf(bpf, nr["fchmodat"], (-100, 0, mode)) == eperm
            assert run_bpf(bpf, nr["fchmodat2"], (-100, 0, mode, 0)) == eperm
            assert run_bpf(bpf, nr["mkdir"], (0, mode)) == eperm
            assert run_bpf(bpf, nr["mkdirat"], (-100, 0, mode)) == eperm
            assert run_bpf(bpf, nr["mknod"], (0, 0o100000 | mode, 0)) == eperm
            assert run_bpf(bpf, nr["mknodat"], (-100, 0, 0o100000 | mode, 0)) == eperm
            assert run_bpf(bpf, nr["creat"], (0, mode)) == eperm
            for flags in (0o100, 0o101, 0o20200000, 0o20200002):   # O_CREAT, O_TMPFILE, ...
                assert run_bpf(bpf, nr["open"], (0, flags, mode)) == eperm
                assert run_bpf(bpf, nr["openat"], (-100, 0, flags, mode)) == eperm
            # the mode without O_CREAT/O_TMPFILE is ignored by the kernel: allowed
            assert run_bpf(bpf, nr["open"], (0, 0o2, mode)) == sc.ALLOW
            assert run_bpf(bpf, nr["openat"], (-100, 0, 0o2, mode)) == sc.ALLOW
        for mode in (0o755, 0o1777, 0o644, 0o777 | (1 << 40)):
            assert run_bpf(bpf, nr["chmod"], (0, mode)) == sc.ALLOW
            assert run_bpf(bpf, nr["fchmodat2"], (-100, 0, mode, 0)) == sc.ALLOW
            assert run_bpf(bpf, nr["mkdir"], (0, mode)) == sc.ALLOW
            assert run_bpf(bpf, nr["openat"], (-100, 0, 0o101, mode)) == sc.ALLOW
        assert run_bpf(bpf, nr["openat2"], (-100, 0, 0, 24)) == enosys
    # off: nothing
    bpf = S.compile_filter(base_spec(restrict_suid_sgid=False))
    assert run_bpf(bpf, nr["chmod"], (0, 0o4755)) == sc.ALLOW and run_bpf(bpf, nr["openat2"]) == sc.ALLOW
    # the deny list still beats it, with deny_action whatever the mode
    bpf = S.compile_filter(base_spec(restrict_suid_sgid=True, deny=["chmod"], deny_action="errno:EACCES"))
    assert run_bpf(bpf, nr["chmod"], (0, 0o755)) == sc.ERRNO(errno.EACCES)
    assert run_bpf(bpf, nr["fchmod"], (3, 0o4755)) == sc.ERRNO(errno.EACCES)   # deny_action for the rules
    assert "restrict_suid_sgid" in S.describe(base_spec(restrict_suid_sgid=True))


# ---------------------------------------------------------------------------
# compiling
# ---------------------------------------------------------------------------


def test_compile_returns_sock_filter_array_and_caches(monkeypatch):
    spec = base_spec(deny=["@mount"])
    bpf = S.compile_filter(spec)
    assert isinstance(bpf, bytes) and bpf and len(bpf) % 8 == 0
    assert S.CACHE[S_bpf._cache_key(spec)] == bpf

    def boom(*a, **k):
        raise AssertionError("libseccomp used for a cached spec")

    monkeypatch.setattr(S_policy, "build", boom)
    monkeypatch.setattr(S_policy, "plan_filter", boom)
    monkeypatch.setattr(S_bpf, "_generate", boom)
    assert S.compile_filter(dict(reversed(list(spec.items())))) is bpf
    with pytest.raises(AssertionError):
        S.compile_filter(base_spec(deny=["@swap"]))


def test_compile_errors():
    with pytest.raises(ValueError, match="unknown syscall 'nosuchcall'"):
        S.compile_filter(base_spec(deny=["nosuchcall"]))
    with pytest.raises(ValueError, match="unknown syscall group"):
        S.compile_filter(base_spec(allow=["@nosuch"], default_action="errno:EPERM"))
    with pytest.raises(ValueError, match="invalid seccomp action"):
        S.compile_filter(base_spec(deny_action="nope"))
    with pytest.raises(ValueError, match="outside mask"):
        S.compile_filter(base_spec(rules=[{"syscall": "ioctl", "action": "errno:EPERM",
                                           "args": [{"index": 1, "op": "masked_eq", "value": 0x1FF, "mask": 0xFF}]}]))
    with pytest.raises(ValueError, match="index"):
        S.compile_filter(base_spec(rules=[{"syscall": "ioctl", "action": "errno:EPERM",
                                           "args": [{"index": 6, "op": "eq", "value": 1, "mask": None}]}]))
    with pytest.raises(ValueError, match="unknown socket family"):
        S.compile_filter(base_spec(socket_families=["inet", "carrier-pigeon"]))


def test_names_missing_on_native_arch_are_skipped():
    # chown32/socketcall exist only on 32-bit arches: inside groups and as explicit names
    bpf = S.compile_filter(base_spec(deny=["@chown", "socketcall", "chown32"], allow=["@known"],
                                     default_action="errno:EPERM"))
    assert run_bpf(bpf, sc.resolve_syscall(sc.Arch.NATIVE, "chown")) == sc.ERRNO(errno.EPERM)
    assert run_bpf(bpf, NR["read"]) == sc.ALLOW


def test_newer_syscalls_than_libseccomp_are_filtered():
    assert sc.resolve_syscall(sc.Arch.NATIVE, "open_tree_attr") < 0  # libseccomp 2.5.4 does not know it
    bpf = S.compile_filter(base_spec(deny=["@mount"]))
    assert run_bpf(bpf, S.EXTRA_X86_64_SYSCALLS["open_tree_attr"]) == sc.ERRNO(errno.EPERM)
    assert run_bpf(bpf, S.EXTRA_X86_64_SYSCALLS["mseal"]) == sc.ALLOW


def test_attributes_and_x32():
    spec = base_spec(deny=["mount"], other_arches="errno:EACCES")
    plan = S_policy.plan_filter(spec)
    f = S_policy.build(plan, S_policy.emit_rules(plan, S_regions.PLAIN))
    assert f.get_attr(sc.Attr.CTL_NNP) == 0
    assert f.get_attr(sc.Attr.ACT_BADARCH) == sc.ERRNO(errno.EACCES)
    assert f.get_attr(sc.Attr.CTL_OPTIMIZE) == 1  # tiny filter: plain list
    big = S_policy.plan_filter(base_spec(deny=["@privileged"]))
    assert S_policy.build(big, S_policy.emit_rules(big, S_regions.PLAIN)).get_attr(sc.Attr.CTL_OPTIMIZE) == 2
    # no rules at all: the default action still applies (libseccomp#370)
    for default in ("allow", "errno:EPERM", "kill"):
        empty = S.compile_filter(base_spec(default_action=default))
        assert run_bpf(empty, NR["getpid"]) == S.parse_action(default)
    bpf = S.compile_filter(spec)
    # another ABI, x32 numbers on the x86-64 ABI: the bad-arch action
    assert run_bpf(bpf, NR["getpid"], arch=AUDIT_ARCH_I386) == sc.ERRNO(errno.EACCES)
    assert run_bpf(bpf, 0x40000000 | NR["getpid"]) == sc.ERRNO(errno.EACCES)
    assert run_bpf(bpf, 0x40000000 | NR["mount"]) == sc.ERRNO(errno.EACCES)
    assert run_bpf(bpf, 0x7FFFFFFF) == sc.ERRNO(errno.EACCES)
    assert run_bpf(bpf, NR["getpid"]) == sc.ALLOW
    assert run_bpf(bpf, NR["mount"]) == sc.ERRNO(errno.EPERM)
    assert run_bpf(bpf, 0xFFFFFFFF) == sc.ALLOW  # nr -1 (tracer skip) takes the normal path
    assert run_bpf(S.compile_filter(base_spec()), 0x40000000 | 1) == sc.KILL_PROCESS


def test_precedence_fixed_cases():
    ioctl, sock, clone = NR["ioctl"], NR["socket"], NR["clone"]
    eperm, eacces = sc.ERRNO(errno.EPERM), sc.ERRNO(errno.EACCES)

    # deny wins over allow, and over argument rules entirely
    spec = base_spec(default_action="errno:ENOSYS", deny=["ioctl", "personality"], allow=["ioctl", "personality", "read"],
                     deny_ioctls=["TIOCSTI"], rules=[{"syscall": "ioctl", "action": "allow", "args": []}])
    bpf = S.compile_filter(spec)
    assert run_bpf(bpf, ioctl, (0, 0x541B)) == eperm
    assert run_bpf(bpf, NR["personality"]) == eperm
    assert run_bpf(bpf, NR["read"]) == sc.ALLOW
    assert run_bpf(bpf, NR["write"]) == sc.ERRNO(errno.ENOSYS)

    # allowlisted ioctl with denied requests: only those (all 64-bit spellings) are denied
    spec = base_spec(default_action="kill", allow=["ioctl"], deny_ioctls=["TIOCSTI", "TIOCLINUX", 0x541D])
    bpf = S.compile_filter(spec)
    for req in (0x5412, 0x1_0000_5412, 0xFFFFFFFF_00005412, 0x541C, 0x541D):
        assert run_bpf(bpf, ioctl, (3, req)) == eperm, hex(req)
    for req in (0x541B, 0x5413, 0x1_0000_541B, 0, 0xFFFFFFFF, 0x5412 ^ (1 << 31)):
        assert run_bpf(bpf, ioctl, (3, req)) == sc.ALLOW, hex(req)
    assert run_bpf(bpf, NR["read"]) == sc.KILL_PROCESS

    # socket families under default allow and default deny, with deny_action != default
    for default in ("allow", "errno:EPERM", "kill"):
        spec = base_spec(default_action=default, deny_action="errno:EACCES",
                         socket_families=["unix", "AF_INET", "inet6"])
        bpf = S.compile_filter(spec)
        for fam in (1, 2, 10, 0x1_0000_0002):
            assert run_bpf(bpf, sock, (fam, 1, 0)) == sc.ALLOW, (default, fam)
            assert run_bpf(bpf, NR["socketpair"], (fam, 1, 0)) == sc.ALLOW
        for fam in (0, 16, 17, 38, 44, 45, 46, 1000, 0x1_0000_0010, U64):
            assert run_bpf(bpf, sock, (fam, 1, 0)) == eacces, (default, fam)
        assert run_bpf(bpf, NR["read"]) == S.parse_action(default)

    # namespace flags
    spec = base_spec(default_action="errno:EPERM", allow=["clone", "clone3", "unshare", "read"],
                     deny_namespace_flags=True, deny_action="errno:EACCES")
    bpf = S.compile_filter(spec)
    assert run_bpf(bpf, clone, (0x01200011,)) == sc.ALLOW  # glibc fork()
    for flag in S.CLONE_NAMESPACE_FLAGS.values():
        assert run_bpf(bpf, clone, (0x01200011 | flag,)) == eacces, hex(flag)
    assert run_bpf(bpf, NR["unshare"], (0,)) == eacces
    assert run_bpf(bpf, NR["setns"], (3, 0)) == eacces
    assert run_bpf(bpf, NR["clone3"]) == sc.ERRNO(errno.ENOSYS)

    # overlapping argument rules: the most restrictive match wins; no match -> allow/default
    rules = [
        {"syscall": "ioctl", "action": "allow", "args": [{"index": 1, "op": "eq", "value": 0x5412, "mask": None}]},
        {"syscall": "ioctl", "action": "errno:EACCES", "args": [{"index": 1, "op": "masked_eq", "value": 0x5400, "mask": 0xFF00},
                                                               {"index": 0, "op": "eq", "value": 3, "mask": None}]},
        {"syscall": "ioctl", "action": "log", "args": [{"index": 2, "op": "masked_eq", "value": 4, "mask": 6}]},
    ]
    for default in ("allow", "errno:EPERM"):
        spec = base_spec(default_action=default, allow=["ioctl"], rules=rules, deny_ioctls=["TIOCLINUX"])
        bpf = S.compile_filter(spec)
        cases = [((3, 0x5412, 0), eacces), ((30, 0x5412, 0), sc.ALLOW), ((30, 0x5412, 5), sc.LOG),
                 ((30, 0x5412, 1), sc.ALLOW), ((30, 0x541C, 4), eperm), ((3, 0x541C, 4), eacces),
                 ((30, 0x100, 4), sc.LOG), ((3, 0x5401, 4), eacces), ((30, 0x100, 0), sc.ALLOW),
                 ((3, 0x1_0000_5400, 0), eacces), ((4, 0x5400, 0), sc.ALLOW)]
        for args, want in cases:
            assert model(spec, ioctl, args) == want, (default, args)
            assert run_bpf(bpf, ioctl, args) == want, (default, args)

    # range conditions (compiled to aligned masked blocks) next to other rules
    rules = [
        {"syscall": "kill", "action": "trap", "args": [{"index": 0, "op": "gt", "value": 1000, "mask": None}]},
        {"syscall": "kill", "action": "errno:EACCES", "args": [{"index": 1, "op": "eq", "value": 9, "mask": None}]},
        {"syscall": "kill", "action": "allow", "args": [{"index": 0, "op": "ne", "value": 1, "mask": None}]},
    ]
    for default in ("allow", "errno:EPERM"):
        spec = base_spec(default_action=default, rules=rules)
        bpf = S.compile_filter(spec)
        for args, want in [((1001, 9), sc.TRAP), ((1 << 63, 0), sc.TRAP), ((1000, 9), eacces), ((5, 9), eacces),
                           ((5, 15), sc.ALLOW), ((1, 15), S.parse_action(default)), ((1, 9), eacces)]:
            assert model(spec, NR["kill"], args) == want, (default, args)
            assert run_bpf(bpf, NR["kill"], args) == want, (default, args)

    # a rule whose action equals the default is not given to libseccomp, yet still decides
    spec = base_spec(default_action="errno:EPERM", allow=["personality"],
                     rules=[{"syscall": "personality", "action": "errno:EPERM",
                             "args": [{"index": 0, "op": "eq", "value": 8, "mask": None}]}])
    bpf = S.compile_filter(spec)
    assert run_bpf(bpf, NR["personality"], (8,)) == eperm
    assert run_bpf(bpf, NR["personality"], (0,)) == sc.ALLOW
    # and duplicate comparisons on one argument are fine
    spec = base_spec(rules=[{"syscall": "kill", "action": "errno:EPERM", "args": [
        {"index": 0, "op": "ge", "value": 100, "mask": None}, {"index": 0, "op": "le", "value": 200, "mask": None}]}])
    bpf = S.compile_filter(spec)
    assert [run_bpf(bpf, NR["kill"], (p, 9)) for p in (99, 100, 150, 200, 201)] == [sc.ALLOW, eperm, eperm, eperm, sc.ALLOW]


ACTIONS = ["allow", "errno:EPERM", "errno:EACCES", "kill", "kill-thread", "log", "trap", "trace:1"]
VALUES = [0, 1, 2, 3, 5, 10, 16, 0x80, 0x5412, 0x541C, 0x1_0000_5412, 0x10000000, 0xFFFFFFFF, 1 << 32, U64, U64 - 1]
MASKS = [1, 2, 6, 0xFF, 0xFFFFFFFF, 0xFF00, U64, 1 << 63]
CALLS = ["read", "ioctl", "socket", "socketpair", "clone", "clone3", "unshare", "mount", "personality", "kill"]


def random_spec(rng: random.Random) -> dict:
    def cond():
        op = rng.choice(["eq", "eq", "masked_eq", "masked_eq", "masked_eq", "ne", "lt", "le", "gt", "ge"])
        c = {"index": rng.randrange(3), "op": op, "value": rng.choice(VALUES), "mask": None}
        if op == "masked_eq":
            c["mask"] = rng.choice(MASKS)
            c["value"] &= c["mask"]
        return c

    rules = []
    for _ in range(rng.randrange(5)):
        args = [cond() for _ in range(rng.randrange(3))]
        if sum(c["op"] in ("ne", "lt", "le", "gt", "ge") for c in args) > 1:
            args = args[:1]
        rules.append({"syscall": rng.choice(CALLS + ["@namespaces"]), "action": rng.choice(ACTIONS), "args": args})
    return base_spec(
        default_action=rng.choice(ACTIONS),
        deny_action=rng.choice(ACTIONS[1:]),
        deny=rng.sample(CALLS, rng.randrange(3)),
        allow=rng.sample(CALLS, rng.randrange(6)),
        rules=rules,
        socket_families=rng.choice([None, [], ["unix"], ["unix", "inet", "inet6"], ["netlink", "packet"]]),
        deny_ioctls=rng.sample(["TIOCSTI", "TIOCLINUX", 0x541B, 5], rng.randrange(3)),
        deny_namespace_flags=rng.random() < 0.5,
        other_arches=rng.choice(["kill", "errno:EPERM", "allow"]),
    )


def test_randomized_specs_match_model():
    """Random specs (overlapping rules of every kind) against the model.  A spec may be
    refused as too complex (ranges combined with other conditions expand a lot, see
    isolate.plan.seccomp.regions._argset_comparisons), but most must compile, and none may be wrong."""
    rng = random.Random(1234)
    interesting = VALUES + list(S.CLONE_NAMESPACE_FLAGS.values()) + [0x01200011 | 0x10000000, 128, 9, 11]
    compiled = refused = 0
    for _ in range(90):
        spec = random_spec(rng)
        try:
            bpf = S.compile_filter(spec)
        except ValueError as exc:
            assert "too complex" in str(exc) or "too long" in str(exc), exc
            refused += 1
            continue
        compiled += 1
        assert len(bpf) % 8 == 0 and len(bpf) // 8 <= 4096
        for _ in range(60):
            name = rng.choice(CALLS + ["getpid"])
            args = tuple(rng.choice(interesting) + rng.choice([0, 0, 0, 1, -1]) if rng.random() < 0.85
                         else rng.getrandbits(64) for _ in range(6))
            want = model(spec, NR[name], args)
            got = run_bpf(bpf, NR[name], args)
            assert got == want, (spec, name, [hex(a) for a in args], hex(got), hex(want))
        assert run_bpf(bpf, NR["getpid"], arch=AUDIT_ARCH_I386) == S.parse_action(spec["other_arches"])
    assert compiled >= 0.8 * (compiled + refused), (compiled, refused)


def test_verify_rejects_wrong_programs():
    spec_a = base_spec(default_action="errno:EPERM", allow=["ioctl", "read"], deny_ioctls=["TIOCSTI"],
                       deny_action="errno:EACCES")
    spec_b = base_spec(default_action="errno:EPERM", allow=["ioctl", "read"], deny_ioctls=["TIOCLINUX"],
                       deny_action="errno:EACCES")
    plan_a, plan_b = S_policy.plan_filter(spec_a), S_policy.plan_filter(spec_b)
    bpf_a = S.compile_filter(spec_a)
    assert S_verify.verify(bpf_a, plan_a)
    assert not S_verify.verify(bpf_a, plan_b)
    assert not S_verify.verify(S.compile_filter(base_spec(default_action="errno:EPERM", allow=["read"])), plan_a)
    # a masked test off by one bit
    wrong = S_policy.build(plan_a, {NR["ioctl"]: [(sc.ERRNO(errno.EACCES), ((1, sc.MASKED_EQ, 0xFFFFFFFE, 0x5412),))],
                              NR["read"]: [(sc.ALLOW, ())]})
    assert not S_verify.verify(S_bpf._export(wrong, "export_bpf"), plan_a)


def test_libseccomp_range_hang_is_contained():
    """libseccomp 2.5.4 loops forever on these two rules in this order (see _NATIVE_NOTE);
    a form that could do that is only ever built in a child that gets killed."""
    plan = S_policy.plan_filter(base_spec(default_action="errno:EPERM"))
    rules = {NR["ioctl"]: [
        (sc.ALLOW, ((0, sc.GE, 10, 0), (1, sc.EQ, 0x5414, 0))),
        (sc.ALLOW, ((0, sc.GE, 10, 0), (1, sc.EQ, 0x1_0000_5414, 0))),
    ]}
    assert S_bpf._inner_native(rules)
    assert S_bpf._export_in_child(plan, rules, False, "export_bpf", 0.5) is None
    # the order compile_filter uses is fine
    ordered = {nr: sorted(r, key=S_regions.rule_key, reverse=True) for nr, r in rules.items()}
    assert S_bpf._export_in_child(plan, ordered, False, "export_bpf", 5.0)
    # and such rules compile to a correct filter
    spec = base_spec(default_action="errno:EPERM", rules=[
        {"syscall": "ioctl", "action": "allow", "args": [{"index": 0, "op": "ge", "value": 10, "mask": None},
                                                         {"index": 1, "op": "eq", "value": v, "mask": None}]}
        for v in (0x5414, 0x1_0000_5414)])
    bpf = S.compile_filter(spec)
    for args in ((10, 0x5414), (1 << 40, 0x1_0000_5414), (9, 0x5414), (10, 0x5415), (10, 0x2_0000_5414)):
        assert run_bpf(bpf, NR["ioctl"], args) == model(spec, NR["ioctl"], args)


def test_libseccomp_tree_mode_bug_is_caught():
    """In binary-tree mode libseccomp 2.5.4 compiles this (fuzzer-found) spec to a program
    that answers EPERM for socketpair(AF_NETLINK, 3): a jump lands on an AND meant for a0
    while the accumulator holds a1.  _verify must notice whenever a candidate is wrong,
    and compile_filter must return a right program."""
    spec = base_spec(deny=["personality", "mount"], allow=["socket", "clone3", "personality", "mount"],
                     socket_families=["netlink", "packet"], deny_ioctls=[5, 0x541B], rules=[
                         {"syscall": "personality", "action": "errno:EACCES",
                          "args": [{"index": 2, "op": "lt", "value": 0x541C, "mask": None}]},
                         {"syscall": "socketpair", "action": "log",
                          "args": [{"index": 1, "op": "le", "value": 2, "mask": None}]},
                         {"syscall": "kill", "action": "kill", "args": []}])
    plan = S_policy.plan_filter(spec)
    probes = [(16, 3), (17, 5), (16, 1), (1, 3), (16, 1 << 33), (0x1_0000_0011, 2)]
    wrong_seen = 0
    for form in (S_regions.ANYWHERE, S_regions.LAST_ONLY, S_regions.PLAIN):
        rules = S_policy.emit_rules(plan, form)
        for tree in (True, False):
            bpf = S_bpf._export(S_policy.build(plan, rules, tree), "export_bpf")
            right = all(run_bpf(bpf, NR["socketpair"], a) == model(spec, NR["socketpair"], a) for a in probes)
            if not right:
                wrong_seen += 1
                assert not S_verify.verify(bpf, plan)
    bpf = S.compile_filter(spec)
    assert S_verify.verify(bpf, plan)
    for a in probes:
        assert run_bpf(bpf, NR["socketpair"], a) == model(spec, NR["socketpair"], a)
    assert wrong_seen <= 3  # (3 with libseccomp 2.5.4: every form in tree mode)


def test_describe():
    spec = base_spec(default_action="errno:EPERM", allow=["@basic-io", "ioctl"], deny=["mount"],
                     deny_ioctls=["TIOCSTI"], socket_families=["unix"])
    text = S.describe(spec)
    assert "default action: errno:EPERM" in text
    assert "other architectures" in text and "kill-process" in text
    lines = [ln for ln in text.splitlines() if ln.startswith("#   ")]
    names = [ln.split()[1] for ln in lines]
    assert names == sorted(names)
    assert any(ln.split()[1:] == ["mount", "errno:EPERM"] for ln in lines)
    assert any(ln.split()[1:] == ["read", "allow"] for ln in lines)
    ioctl_line = next(ln for ln in lines if ln.split()[1] == "ioctl")
    assert "by arguments" in ioctl_line and "otherwise allow" in ioctl_line
    assert "pseudo filter code start" in text and 'filter for syscall "ioctl"' in text


# ---------------------------------------------------------------------------
# the real kernel
# ---------------------------------------------------------------------------

libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
SYS_seccomp = 317
PR_SET_NO_NEW_PRIVS = 38
SECCOMP_SET_MODE_FILTER = 1


class SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def sys(nr: int, *args: int) -> int:
    """Raw syscall: result, or -errno."""
    ctypes.set_errno(0)
    r = libc.syscall(ctypes.c_long(nr), *(ctypes.c_ulong(a & U64) for a in args))
    return -ctypes.get_errno() if r == -1 else r


def in_child(bpf: bytes | None, probe, prepare=None):
    """Fork; the child runs prepare(), loads `bpf` (None: no filter), runs probe() and sends its JSON result.
    Returns (result or None, wait status).  The child never returns into pytest."""
    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        code = 0
        try:
            os.close(rfd)
            if prepare:
                prepare()
            if bpf is not None:
                buf = ctypes.create_string_buffer(bpf, len(bpf))
                prog = SockFprog(len(bpf) // 8, ctypes.addressof(buf))
                if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
                    raise OSError(ctypes.get_errno(), "prctl")
                rc = sys(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, ctypes.addressof(prog))
                if rc != 0:
                    raise OSError(-rc, "seccomp")
            out = json.dumps({"ok": probe()}).encode()
        except BaseException as exc:  # noqa: BLE001 - report everything to the parent
            out = json.dumps({"error": repr(exc)}).encode()
            code = 1
        try:
            os.write(wfd, out)
        finally:
            os._exit(code)
    os.close(wfd)
    chunks = []
    while chunk := os.read(rfd, 65536):
        chunks.append(chunk)
    os.close(rfd)
    _, status = os.waitpid(pid, 0)
    data = b"".join(chunks)
    result = json.loads(data) if data else None
    if result and "error" in result:
        raise AssertionError(f"child failed: {result['error']}")
    return (result or {}).get("ok"), status


def private_namespaces():
    # belt and braces: if the filter failed to deny, mount/sethostname stay private
    if libc.unshare(0x00020000 | 0x04000000) != 0:
        raise OSError(ctypes.get_errno(), "unshare")


def no_core():
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def socket_result(family: int) -> int:
    fd = sys(NR["socket"], family, socket.SOCK_STREAM if family == 1 else socket.SOCK_DGRAM, 0)
    if fd >= 0:
        os.close(fd)
        return 0
    return fd


def test_kernel_deny_mount_group():
    bpf = S.compile_filter(base_spec(deny=["@mount", "sethostname"]))

    def probe():
        res = {}
        ctypes.set_errno(0)
        r = libc.sethostname(b"isolate-test", 12)
        res["sethostname"] = -ctypes.get_errno() if r else 0
        res["mount"] = sys(NR["mount"], 0, 0, 0, 0, 0)
        res["umount2"] = sys(NR["umount2"], 0, 0)
        res["fsopen"] = sys(NR["fsopen"], 0, 0)
        res["getpid"] = sys(NR["getpid"])
        res["uname"] = len(os.uname().sysname)
        return res

    res, status = in_child(bpf, probe, prepare=private_namespaces)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
    assert res["sethostname"] == res["mount"] == res["umount2"] == res["fsopen"] == -errno.EPERM
    assert res["getpid"] > 0 and res["uname"] > 0


def test_kernel_socket_families_ioctls_and_namespaces():
    bpf = S.compile_filter(base_spec(socket_families=["unix", "inet", "inet6"], deny_ioctls=["TIOCSTI", "TIOCLINUX"],
                                     deny_namespace_flags=True, deny_action="errno:EACCES"))

    def probe():
        res = {f: socket_result(getattr(socket, f)) for f in ("AF_UNIX", "AF_INET", "AF_INET6", "AF_NETLINK", "AF_PACKET")}
        res["AF_INET|hi"] = socket_result(socket.AF_INET | (1 << 32))
        res["AF_NETLINK|hi"] = socket_result(socket.AF_NETLINK | (1 << 32))
        r, w = os.pipe()
        c = ctypes.c_char(b"x")
        res["TIOCSTI"] = sys(NR["ioctl"], r, 0x5412, ctypes.addressof(c))
        res["TIOCSTI|hi"] = sys(NR["ioctl"], r, 0x1_0000_5412, ctypes.addressof(c))
        res["TIOCLINUX"] = sys(NR["ioctl"], r, 0x541C, ctypes.addressof(c))
        n = ctypes.c_int(-1)
        res["FIONREAD"] = (sys(NR["ioctl"], r, 0x541B, ctypes.addressof(n)), n.value)
        # clone with CLONE_NEWUSER: denied (if it ever succeeded, the copy exits at once)
        pid = sys(NR["clone"], 0x10000000 | signal.SIGCHLD, 0, 0, 0, 0)
        if pid == 0:
            os._exit(0)
        res["clone NEWUSER"] = pid if pid < 0 else "created"
        if pid > 0:
            os.waitpid(pid, 0)
        res["unshare"] = sys(NR["unshare"], 0x04000000)
        res["setns"] = sys(NR["setns"], r, 0)
        res["clone3"] = sys(NR["clone3"], 0, 0)
        child = os.fork()
        if child == 0:
            os._exit(7)
        _, st = os.waitpid(child, 0)
        res["fork"] = os.WEXITSTATUS(st)
        return res

    res, status = in_child(bpf, probe)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
    assert res["AF_UNIX"] == res["AF_INET"] == res["AF_INET6"] == 0
    assert res["AF_NETLINK"] == res["AF_PACKET"] == -errno.EACCES
    assert res["AF_INET|hi"] == 0 and res["AF_NETLINK|hi"] == -errno.EACCES
    assert res["TIOCSTI"] == res["TIOCSTI|hi"] == res["TIOCLINUX"] == -errno.EACCES
    assert res["FIONREAD"] == [0, 0]
    assert res["clone NEWUSER"] == -errno.EACCES
    assert res["unshare"] == res["setns"] == -errno.EACCES
    assert res["clone3"] == -errno.ENOSYS
    assert res["fork"] == 7


def test_kernel_without_filter_controls():
    """The same probes without a filter behave differently (so the tests above prove something)."""
    def probe():
        r, _ = os.pipe()
        c = ctypes.c_char(b"x")
        return {"TIOCSTI|hi": sys(NR["ioctl"], r, 0x1_0000_5412, ctypes.addressof(c)),
                "netlink": socket_result(socket.AF_NETLINK),
                "x32": sys(0x40000000 | NR["getpid"])}

    res, status = in_child(None, probe)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
    assert res["TIOCSTI|hi"] == -errno.ENOTTY  # the kernel really truncates the request
    assert res["netlink"] == 0
    assert res["x32"] == -errno.ENOSYS  # this kernel has no x32 ABI; only the filter says EACCES


def test_kernel_allowlist():
    spec = base_spec(default_action="errno:EPERM", allow=["@default", "@basic-io", "@signal", "ioctl"],
                     socket_families=["unix"], deny_ioctls=["TIOCSTI"], other_arches="errno:EACCES")
    bpf = S.compile_filter(spec)
    pipe_r, pipe_w = os.pipe()  # pipe2 is not on the list

    def probe():
        res = {"getpid": sys(NR["getpid"]) > 0}
        try:
            os.getcwd()
            res["getcwd"] = 0
        except OSError as exc:
            res["getcwd"] = -exc.errno
        res["uname"] = sys(NR["uname"], 0)
        res["AF_UNIX"] = socket_result(socket.AF_UNIX)
        res["AF_INET"] = socket_result(socket.AF_INET)
        n = ctypes.c_int(-1)
        res["FIONREAD"] = sys(NR["ioctl"], pipe_r, 0x541B, ctypes.addressof(n))
        res["TIOCSTI"] = sys(NR["ioctl"], pipe_r, 0x5412, ctypes.addressof(n))
        res["pipe"] = sys(NR["pipe2"], ctypes.addressof((ctypes.c_int * 2)()), 0)
        res["x32 getpid"] = sys(0x40000000 | NR["getpid"])
        return res

    try:
        res, status = in_child(bpf, probe)
    finally:
        os.close(pipe_r)
        os.close(pipe_w)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
    assert res["getpid"] is True and res["pipe"] == -errno.EPERM
    assert res["getcwd"] == res["uname"] == -errno.EPERM
    assert res["AF_UNIX"] == 0 and res["AF_INET"] == -errno.EPERM
    assert res["FIONREAD"] == 0 and res["TIOCSTI"] == -errno.EPERM
    assert res["x32 getpid"] == -errno.EACCES


def test_kernel_other_arches():
    # int 0x80 (the i386 ABI) from a 64-bit process: mov eax, 20 (getpid); int 0x80; ret
    code = bytes([0xB8, 20, 0, 0, 0, 0xCD, 0x80, 0xC3])
    page = mmap.mmap(-1, mmap.PAGESIZE, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    page.write(code)
    func = ctypes.CFUNCTYPE(ctypes.c_int)(ctypes.addressof(ctypes.c_char.from_buffer(page)))

    bpf = S.compile_filter(base_spec(other_arches="errno:EACCES"))
    res, status = in_child(bpf, lambda: {"int80": func(), "x32": sys(0x40000000 | NR["getpid"]), "getpid": sys(NR["getpid"])})
    assert res["int80"] == -errno.EACCES
    assert res["x32"] == -errno.EACCES
    assert res["getpid"] > 0

    # the profile default, "kill": the whole process dies of SIGSYS (without a core file)
    bpf = S.compile_filter(base_spec(other_arches="kill"))
    res, status = in_child(bpf, lambda: sys(0x40000000 | NR["getpid"]), prepare=no_core)
    assert res is None and os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGSYS
    res, status = in_child(bpf, lambda: func(), prepare=no_core)
    assert res is None and os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGSYS
