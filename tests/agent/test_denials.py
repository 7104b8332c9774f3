"""The filter's refusals reported by isolate-agentd (notify mode), with their arguments,
and answered with exactly the errno the profile gives."""

import json

import pytest

import isolate
from isolate.agent import denials, violations
from isolate.launch import plans

from agent_helpers import session  # noqa: F401 (fixture)

# Each probe prints the errno (0: allowed) of one raw syscall, made through ctypes.
PROBES = {
    "socket_netlink": "libc.syscall(41, 16, 3, 0)",
    "socket_packet": "libc.syscall(41, 17, 3, 0)",
    "unshare_user": "libc.syscall(272, 0x10000000)",
    "clone3": "libc.syscall(435, 0, 0)",
    "mount": "libc.syscall(165, b'none', b'/tmp', b'tmpfs', 0, 0)",
    "ptrace": "libc.syscall(101, 0, 0, 0, 0)",
    "tiocsti": "libc.syscall(16, 0, 0x5412, b'x')",
    "chmod_suid": "libc.syscall(90, b'/tmp/f', 0o4755)",
    "getpid": "libc.syscall(39)",
}
SCRIPT = ("import ctypes, json, os\nopen('/tmp/f', 'w').close()\nlibc = ctypes.CDLL(None, use_errno=True)\n"
          "out = {}\n" + "".join(
              f"ctypes.set_errno(0); r = {expr}; out[{name!r}] = 0 if r >= 0 else ctypes.get_errno()\n"
              for name, expr in PROBES.items()) + "print(json.dumps(out))\n")


def _probe_errnos(run) -> dict:
    return json.loads(run(["python3", "-c", SCRIPT]).strip().splitlines()[-1])


def test_the_program_gets_the_profiles_own_errno(session, tmp_path):
    # The same calls in a plain sandbox of the same profile (the filter as compiled, no
    # notify) and in the session (notify variant, answered by agentd): the same errnos.
    assert session.notify
    plain = _probe_errnos(lambda argv: isolate.run(argv, profile="agent", cwd=str(tmp_path), capture_output=True,
                                                   text=True, overrides=[f"filesystem.rw=[{json.dumps(str(tmp_path))}]"]
                                                   ).stdout)
    r = session.exec(["python3", "-c", SCRIPT])
    seen = json.loads(r.stdout.strip().splitlines()[-1])
    assert seen == plain
    assert seen["getpid"] == 0 and seen["socket_netlink"] != 0 and seen["clone3"] == 38  # ENOSYS
    by_call = {v["syscall"]: v for v in r.violations if v["kind"] == "syscall"}
    assert by_call["socket"]["argument"] in ("family AF_NETLINK (16), type SOCK_RAW",
                                             "family AF_PACKET (17), type SOCK_RAW")
    assert {v["argument"] for v in r.violations if v.get("syscall") == "socket"} == {
        "family AF_NETLINK (16), type SOCK_RAW", "family AF_PACKET (17), type SOCK_RAW"}
    assert by_call["unshare"]["argument"] == "flags CLONE_NEWUSER"
    assert by_call["ioctl"]["argument"] == "request TIOCSTI (0x5412)"
    assert by_call["chmod"]["argument"] == "mode 0o4755"
    assert by_call["mount"].get("argument") is None and by_call["mount"]["errno"] == "EPERM"
    assert by_call["clone3"]["errno"] == "ENOSYS"
    for v in by_call.values():
        assert v["program"] == "python3" and v["result"] == "an error"
    assert "getpid" not in by_call
    text = r.for_model()
    assert "socket(family AF_NETLINK (16), type SOCK_RAW) by python3" in text
    assert "ioctl(request TIOCSTI (0x5412)) by python3" in text


def test_a_repeated_refusal_is_one_entry_with_its_count(session):
    r = session.exec(["python3", "-c", "import ctypes\nlibc = ctypes.CDLL(None)\n"
                      "for _ in range(3000): libc.syscall(41, 16, 3, 0)\nprint('done')"])
    assert r.stdout == "done\n"
    socks = [v for v in r.violations if v.get("syscall") == "socket"]
    assert len(socks) == 1 and socks[0]["count"] == 3000
    assert "x3000" in r.for_model()
    assert session.exec("echo next").violations == []


def test_past_the_limit_refusals_are_counted_not_kept(session, monkeypatch):
    monkeypatch.setattr(violations, "MAX_EVENTS", 5)
    r = session.exec(["python3", "-c", "import ctypes\nlibc = ctypes.CDLL(None)\n"
                      "for f in range(17, 37): libc.syscall(41, f, 3, 0)"])
    kinds = [v["kind"] for v in r.violations]
    assert kinds.count("syscall") == 5 and r.violations[-1]["kind"] == "omitted"
    assert r.violations[-1]["count"] == 15
    assert "15 more not listed" in r.for_model()


def test_connect_denied_by_the_profile_stays_denied_while_watched(tmp_path):
    # With the connect watch (network "none"), every connect() goes to agentd first; one
    # the profile's filter refuses must get the profile's errno, not go through.
    with isolate.Session("agent", workspace=tmp_path, overrides=['seccomp.deny=["connect"]']) as s:
        assert s.notify
        r = s.exec(["python3", "-c", "import ctypes, socket\nlibc = ctypes.CDLL(None, use_errno=True)\n"
                    "s = socket.socket(socket.AF_UNIX)\n"
                    "try:\n    s.connect('/nonexistent')\nexcept OSError as e:\n    print(e.errno)"])
        assert r.stdout.strip() == "1"  # EPERM from the filter, not ENOENT from the kernel
        assert [(v["syscall"], v["errno"]) for v in r.violations if v["kind"] == "syscall"] == [("connect", "EPERM")]
        r = s.exec(["python3", "-c", "import socket; socket.create_connection(('1.2.3.4', 443), timeout=5)"])
        assert r.returncode == 1 and r.violations[0]["syscall"] == "connect"


def test_a_filter_that_refuses_what_agentd_needs_keeps_the_audit_records(tmp_path):
    # agentd's vfork child calls setsid before its exec: under notify it would wait for
    # agentd, which waits for it. Such a plan is not run in notify mode.
    plan = plans.plan_for("agent", ['seccomp.deny=["setsid", "unshare"]'])
    assert not denials.usable(plan)
    with isolate.Session("agent", workspace=tmp_path, overrides=['seccomp.deny=["setsid", "unshare"]']) as s:
        assert not s.notify
        r = s.exec(["unshare", "-U", "true"])
        assert r.returncode != 0
        v = [v for v in r.violations if v.get("syscall") == "unshare"]
        assert v and v[0]["program"] == "unshare" and "argument" not in v[0]


@pytest.mark.parametrize("name", ["default", "strict", "agent"])
def test_every_call_agentd_makes_is_checked_against_the_shipped_profiles(name):
    plan = plans.plan_for(name)
    assert denials.usable(plan) == (plan.bpf is not None and plan.use_init)
