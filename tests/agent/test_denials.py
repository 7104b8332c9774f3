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


def test_a_filter_that_refuses_what_the_notifier_needs_keeps_the_audit_records(tmp_path):
    # The process that answers the notifications calls prctl(PR_SET_DUMPABLE) and
    # pidfd_open under the same filter: refused, it would wait for its own answer. Such a
    # plan is not run in notify mode.
    deny = ['seccomp.deny=["pidfd_open", "unshare"]']
    assert not denials.usable(plans.plan_for("agent", deny))
    with isolate.Session("agent", workspace=tmp_path, overrides=deny) as s:
        assert not s.notify
        r = s.exec(["unshare", "-U", "true"])
        assert r.returncode != 0
        v = [v for v in r.violations if v.get("syscall") == "unshare"]
        assert v and v[0]["program"] == "unshare" and "argument" not in v[0]
        # connect() is watched by agentd's own filter then
        r = s.exec(["python3", "-c", "import socket; socket.create_connection(('1.2.3.4', 443), timeout=5)"])
        assert [(v["host"], v["port"]) for v in r.violations if v["kind"] == "network"] == [("1.2.3.4", 443)]


def test_a_refused_call_in_agentds_own_child_is_answered_not_waited_on(tmp_path):
    # agentd's vforked child calls setsid() before its exec while agentd waits for it: the
    # notifier (another process) answers, the command runs, the refusal is listed.
    deny = ['seccomp.deny=["setsid", "unshare"]']
    assert denials.usable(plans.plan_for("agent", deny))
    with isolate.Session("agent", workspace=tmp_path, overrides=deny) as s:
        assert s.notify
        r = s.exec(["sh", "-c", "echo ran"], timeout=20)
        assert r.stdout == "ran\n" and not r.timed_out
        assert [v["errno"] for v in r.violations if v.get("syscall") == "setsid"] == ["EPERM"]


def test_the_notifier_is_not_dumpable_and_its_fds_cannot_be_taken(session):
    # A process of the session has agentd's uid: with the listener it could answer the
    # filter's notifications itself (CONTINUE) and lift the filter. It can reach neither
    # the fd (/proc/PID/fd, pidfd_getfd) nor the process (ptrace) of the one holding it.
    script = r"""
import ctypes, glob, json, os
libc = ctypes.CDLL(None, use_errno=True)
assert os.getpid() != 1 and os.path.exists("/proc/1/status")  # in the session's pid namespace
out = {}
for d in glob.glob("/proc/[0-9]*"):
    pid = int(d.split("/")[-1])
    try:
        names = [os.readlink(d + "/fd/" + n) for n in os.listdir(d + "/fd")]
    except OSError as e:
        names = e.errno
    comm = open(d + "/comm").read().strip()
    st = dict(l.split(":	", 1) for l in open(d + "/status").read().splitlines() if ":	" in l)
    out[pid] = {"comm": comm, "ppid": int(st["PPid"]), "fds": names}
print(json.dumps(out))
"""
    r = session.exec(["python3", "-c", script])
    procs = {int(k): v for k, v in __import__("json").loads(r.stdout).items()}
    agent = next(p for p, v in procs.items() if p == session.agent_pid_inside)
    notifier = procs[agent]["ppid"]
    assert notifier not in (0, 1) and procs[notifier]["fds"] == 13   # not dumpable: EACCES on its fds
    assert isinstance(procs[agent]["fds"], list)                     # (agentd's are readable, as before)
    probe = (f"import ctypes, os\nlibc = ctypes.CDLL(None, use_errno=True)\n"
             f"pfd = os.pidfd_open({notifier})\nres = []\n"
             f"for fd in range(3, 8):\n    r = libc.syscall(438, pfd, fd, 0)\n    res.append(ctypes.get_errno() if r < 0 else 0)\n"
             f"r = libc.syscall(101, 16, {notifier}, 0, 0)\nres.append(ctypes.get_errno() if r < 0 else 0)\n"
             f"print(res)")
    r = session.exec(["python3", "-c", probe])
    got = eval(r.stdout)
    assert 0 not in got   # neither pidfd_getfd nor ptrace(PTRACE_ATTACH) worked


def test_killing_the_notifier_ends_the_session(session):
    # A hostile program may kill the process that reports its refusals: the session then
    # ends (agentd dies with it), it does not go on with refusals unreported.
    notifier = int(session.exec(["sh", "-c", f"grep PPid /proc/{session.agent_pid_inside}/status"])
                   .stdout.split()[1])
    session.exec(["kill", "-9", str(notifier)])
    import time
    for _ in range(100):
        if session.closed:
            break
        time.sleep(0.05)
    assert session.closed
    with pytest.raises(isolate.agent.SessionClosed):
        session.exec("true")


@pytest.mark.parametrize("name", ["default", "strict", "agent"])
def test_every_call_agentd_makes_is_checked_against_the_shipped_profiles(name):
    plan = plans.plan_for(name)
    assert denials.usable(plan) == (plan.bpf is not None and plan.use_init)
