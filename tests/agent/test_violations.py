"""Violations as data: a denied syscall and a refused connection appear in ExecResult.violations."""

import pytest

import isolate
from isolate.agent import violations

from agent_helpers import session  # noqa: F401 (fixture)


def test_refused_connection_is_listed(session):
    r = session.exec("python3 -c \"import socket; socket.create_connection(('1.2.3.4', 443), timeout=5)\"")
    assert r.returncode == 1 and "unreachable" in r.stderr
    net = [v for v in r.violations if v["kind"] == "network"]
    assert net == [{"kind": "network", "host": "1.2.3.4", "port": 443, "family": "inet", "reason": "no network",
                    "refused": True}]
    assert "[the sandbox denied: connect to 1.2.3.4:443 (no network)]" in r.for_model()
    r = session.exec(["python3", "-c", "import socket; socket.create_connection(('2001:db8::1', 80), timeout=5)"])
    assert [(v["host"], v["port"], v["family"]) for v in r.violations] == [("2001:db8::1", 80, "inet6")]


def test_loopback_is_not_a_violation(session):
    r = session.exec("(echo > /dev/tcp/127.0.0.1/9) 2>/dev/null; echo done")
    assert r.violations == []


def test_denied_syscalls_are_listed(session):
    assert violations.status()["syscalls"], violations.status()["why"]
    r = session.exec(["python3", "-c", "import socket; socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 0)"])
    assert r.returncode == 1 and "Operation not permitted" in r.stderr
    assert [(v["kind"], v["syscall"], v["program"]) for v in r.violations] == [("syscall", "socket", "python3")]
    assert "socket_families" in r.violations[0]["reason"]
    assert r.violations[0]["argument"] == "family AF_NETLINK (16), type SOCK_RAW"  # the one that decided
    assert r.violations[0]["errno"] == "EPERM"
    r = session.exec("unshare -U true")
    assert ("syscall", "unshare", "unshare") in [(v["kind"], v["syscall"], v["program"]) for v in r.violations]
    assert "the sandbox denied: unshare(flags CLONE_NEWUSER) by unshare" in r.for_model()
    r = session.exec("python3 -c 'import ctypes; raise SystemExit(ctypes.CDLL(None).ptrace(0, 0, 0, 0))'")
    assert [v["syscall"] for v in r.violations] == ["ptrace"]


def test_a_clean_command_has_none(session):
    session.exec(["unshare", "-U", "true"])
    r = session.exec("echo fine")
    assert r.violations == [] and "denied" not in r.for_model()


def test_violations_off(tmp_path):
    with isolate.Session("agent", workspace=tmp_path, violations=False) as s:
        r = s.exec(["unshare", "-U", "true"])
        assert r.returncode == 1 and r.violations == []


def test_render():
    text = violations.render([
        {"kind": "network", "host": "1.2.3.4", "port": 443, "reason": "no network", "refused": True},
        {"kind": "syscall", "syscall": "ptrace", "program": "gdb", "reason": "denied by policy", "count": 2}])
    assert text == "[the sandbox denied: connect to 1.2.3.4:443 (no network); ptrace by gdb (denied by policy) x2]"
    assert violations.render([{"kind": "syscall", "syscall": "socket", "program": "curl", "reason": "r",
                               "argument": "family AF_NETLINK (16), type SOCK_RAW"}]) == (
        "[the sandbox denied: socket(family AF_NETLINK (16), type SOCK_RAW) by curl (r)]")
