"""Sessions are independent; close(), TTL, idle timeout and caller death leave nothing behind;
bad input gets clear errors and starts nothing."""

import json
import math
import os
import signal
import subprocess
import sys
import time

import pytest

import isolate
from isolate.launch import hostids
from isolate.agent import SessionClosed

from agent_helpers import names_in, session  # noqa: F401 (fixture)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def footprint(s) -> dict:
    """What a session holds on the host: its processes, cgroup dirs, mount namespace, host id."""
    from isolate.agent.session import _tree

    cgroups = []
    with open(f"/proc/{s.pid}/cgroup") as f:
        for line in f:
            _, ctrls, path = line.strip().split(":", 2)
            for c in ctrls.split(","):
                if c in ("memory", "pids") and path != "/":
                    cgroups.append(f"/sys/fs/cgroup/{c}{path}")
    return {"pids": _tree(s.pid), "cgroups": cgroups, "mntns": os.readlink(f"/proc/{s.agent_pid}/ns/mnt"),
            "uid": s.uid, "agent_pid": s.agent_pid}


def hold(fp: dict) -> dict:
    """Keep the session's mount namespace open until assert_gone: a namespace's number is
    given to the next new namespace once it is freed, and other processes make them all
    the time; held, the number stays the session's, and mntns_alive asks about it alone."""
    fp["held"] = os.open(f"/proc/{fp['agent_pid']}/ns/mnt", os.O_RDONLY | os.O_CLOEXEC)
    return fp


def mntns_alive(ns: str) -> bool:
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                if os.readlink(f"/proc/{p}/ns/mnt") == ns:
                    return True
            except OSError:
                pass
    return False


def lock_holders(id_: int) -> set:
    """Pids holding the flock on the host id's lock file (/proc/locks)."""
    try:
        ino = os.stat(os.path.join(hostids.LOCK_DIR, str(id_))).st_ino
    except FileNotFoundError:
        return set()
    out = set()
    with open("/proc/locks") as f:
        for line in f:
            parts = line.split()
            if "FLOCK" in parts and int(parts[-3].split(":")[-1]) == ino:
                out.add(int(parts[-4]))
    return out


def assert_gone(fp: dict, check_cgroups: bool = True, caller: int | None = None) -> None:
    try:
        _assert_gone(fp, check_cgroups, caller)
    finally:
        if "held" in fp:
            os.close(fp.pop("held"))


def _assert_gone(fp: dict, check_cgroups: bool, caller: int | None) -> None:
    for pid in fp["pids"]:
        assert not os.path.exists(f"/proc/{pid}"), f"process {pid} of the session is still there"
    assert not mntns_alive(fp["mntns"]), "the session's mount namespace is still in use"
    if check_cgroups:
        assert fp["cgroups"] and not [d for d in fp["cgroups"] if os.path.exists(d)]
    if fp["uid"] != os.geteuid():
        # (Other processes on this machine may take the id right away: ask who holds it.)
        assert fp["uid"] not in hostids.held(), "the session's host id is still held"
        assert (caller or os.getpid()) not in lock_holders(fp["uid"])


def test_two_sessions_cannot_see_each_other(tmp_path):
    with isolate.Session("agent", workspace=tmp_path) as a, isolate.Session("agent", workspace=tmp_path) as b:
        a.exec("echo mine > /tmp/private; sleep 600 & ipcmk -M 4096 >/dev/null")
        a.exec("python3 -c \"import socket,os; s=socket.socket(); s.bind(('127.0.0.1', 8777)); s.listen(); "
               "os.fork() or __import__('time').sleep(600)\" >/dev/null 2>&1 &")
        a.exec("for i in $(seq 100); do (echo > /dev/tcp/127.0.0.1/8777) 2>/dev/null && break; sleep 0.05; done")
        assert a.exec("cat /tmp/private").stdout == "mine\n"
        assert a.exec("(echo > /dev/tcp/127.0.0.1/8777) 2>/dev/null && echo open").stdout == "open\n"
        assert "shmid" in a.exec("ipcs -m").stdout and "4096" in a.exec("ipcs -m").stdout
        r = b.exec("cat /tmp/private; ps -eo comm; ipcs -m; (echo > /dev/tcp/127.0.0.1/8777) 2>&1 || echo refused")
        assert "No such file" in r.stderr
        assert "sleep" not in r.stdout and "python3" not in r.stdout
        assert "4096" not in r.stdout and r.stdout.rstrip().endswith("refused")
        assert a.uid == b.uid or a.uid != b.uid   # (root: each has a host id of its own)
        if os.geteuid() == 0:
            assert a.uid != b.uid


def test_close_leaves_nothing_behind(tmp_path):
    s = isolate.Session("agent", workspace=tmp_path)
    s.exec("sleep 600 & setsid sleep 601 & echo started")
    job = s.spawn(["sleep", "602"])
    fp = hold(footprint(s))
    assert len(fp["pids"]) >= 5
    s.close()
    assert_gone(fp)
    assert job.done
    with pytest.raises(SessionClosed, match="closed"):
        s.exec("true")
    s.close()   # idempotent


def test_ttl_and_idle_timeout_close_the_session(tmp_path):
    # (A TTL long enough for the session's first command on a loaded machine: the test is
    # about what the TTL does once it expires, not about how soon.)
    s = isolate.Session("agent", workspace=tmp_path, ttl=3)
    fp = hold(footprint(s))
    s.exec("sleep 600 &")
    for _ in range(600):
        if s.closed:
            break
        time.sleep(0.05)
    with pytest.raises(SessionClosed, match="TTL"):
        s.exec("true")
    s.close()   # returns once the teardown (in the watchdog's thread) is complete
    assert_gone(fp)
    s = isolate.Session("agent", workspace=tmp_path, idle_timeout=0.3)
    fp = hold(footprint(s))
    for _ in range(200):
        if s.closed:
            break
        time.sleep(0.05)
    with pytest.raises(SessionClosed, match="idle"):
        s.exec("true")
    s.close()
    assert_gone(fp)


CALLER = r"""
import json, sys, time, isolate
s = isolate.Session("agent", workspace=sys.argv[1])
s.exec("sleep 600 & setsid sleep 601 &")
s.spawn(["sleep", "602"])
sys.path.insert(0, sys.argv[2])
from test_lifecycle import footprint
print(json.dumps(footprint(s)), flush=True)
time.sleep(600)
"""


def test_caller_death_leaves_nothing_behind(tmp_path):
    here = os.path.dirname(os.path.abspath(__file__))
    p = subprocess.Popen([sys.executable, "-c", CALLER, str(tmp_path), here], stdout=subprocess.PIPE, text=True,
                         cwd=ROOT, env=dict(os.environ, PYTHONPATH=here))
    try:
        fp = hold(json.loads(p.stdout.readline()))
        assert len(fp["pids"]) >= 5
    finally:
        p.kill()
        p.wait()
    for _ in range(400):   # isolate-init sees its caller's pidfd become readable and kills the sandbox
        if not any(os.path.exists(f"/proc/{pid}") for pid in fp["pids"]):
            break
        time.sleep(0.05)
    assert_gone(fp, check_cgroups=False, caller=p.pid)
    # The empty cgroups of a dead caller are swept by the next process that makes one.
    subprocess.run([sys.executable, "-c", "import isolate; isolate.run(['true'], profile='agent')"], check=True,
                   cwd=ROOT)
    assert not [d for d in fp["cgroups"] if os.path.exists(d)]


@pytest.mark.parametrize("kw, err", [
    ({"timeout": -1}, ValueError), ({"timeout": math.nan}, ValueError), ({"timeout": math.inf}, ValueError),
    ({"timeout": "5"}, TypeError), ({"yield_after": -0.5}, ValueError), ({"yield_after": math.nan}, ValueError),
    ({"yield_when_quiet": -1}, ValueError), ({"yield_when_quiet": math.inf}, ValueError), ({"yield_when_quiet": "1"}, TypeError),
    ({"max_output": -1}, ValueError), ({"max_output": 1.5}, ValueError), ({"env": {"A=B": "x"}}, ValueError),
    ({"env": {"A": "x\0y"}}, ValueError), ({"cwd": "a\0b"}, ValueError), ({"input": 5}, TypeError),
    ({"on_stdout": "print"}, TypeError),
])
def test_bad_exec_arguments_start_nothing(session, kw, err):
    before = names_in(session)
    with pytest.raises(err) as e:
        session.exec("touch /tmp/ran; sleep 600", **kw)
    name = next(iter(kw))
    assert name in str(e.value) or name == "env" or name == "cwd"
    assert names_in(session) == before
    assert session.exec("ls /tmp/ran 2>/dev/null || echo no").stdout == "no\n"


@pytest.mark.parametrize("cmd, err", [([], ValueError), (5, TypeError), (["a\0b"], ValueError), ("a\0b", ValueError),
                                      ([1], TypeError)])
def test_bad_commands(session, cmd, err):
    with pytest.raises(err, match="cmd"):
        session.exec(cmd)
    with pytest.raises(err, match="cmd"):
        session.spawn(cmd)


def test_bad_session_arguments_start_nothing(tmp_path):
    with pytest.raises(ValueError, match="ttl"):
        isolate.Session("agent", ttl=-1)
    with pytest.raises(ValueError, match="idle_timeout"):
        isolate.Session("agent", idle_timeout=math.nan)
    with pytest.raises(ValueError, match="overlay"):
        isolate.Session("agent", overlay=True)
    with pytest.raises(FileNotFoundError, match="workspace"):
        isolate.Session("agent", workspace=tmp_path / "missing")
    with pytest.raises(isolate.ProfileError):
        isolate.Session("no-such-profile")
    from isolate.agent import SessionError

    with pytest.raises(SessionError, match="cannot hold a session.*filesystem.proc"):
        isolate.Session({"extends": "agent", "filesystem": {"proc": False}})


def test_closed_session_refuses_everything(tmp_path):
    s = isolate.Session("agent", workspace=tmp_path)
    s.close()
    for call in (lambda: s.exec("true"), lambda: s.exec(["true"]), lambda: s.spawn(["true"]), lambda: s.jobs(),
                 lambda: s.job(1), lambda: s.write_file("/tmp/x", "y"), lambda: s.read_file("/tmp/x"),
                 lambda: s.list_dir("/")):
        with pytest.raises(SessionClosed, match="the session is closed"):
            call()


def test_a_sandbox_that_ends_closes_the_session(session):
    os.kill(session.pid, signal.SIGKILL)
    for _ in range(200):
        if session.closed:
            break
        time.sleep(0.05)
    with pytest.raises(SessionClosed, match="sandbox ended"):
        session.exec("true")


def test_init_keeps_its_fds_in_a_gap_of_pass_fds():
    # pass_fds=[N] with 3..N-1 free: isolate-init's signalfd lands in that gap of the
    # program's table; it used to close the whole table after the fork, its signalfd
    # with it, and then spun on POLLNVAL.
    fd = os.open(os.devnull, os.O_RDONLY)
    import fcntl

    high = fcntl.fcntl(fd, fcntl.F_DUPFD, 40)   # the lowest free fd from 40 on, inheritable
    os.close(fd)
    try:
        with isolate.Popen(["sleep", "600"], profile="agent", pass_fds=[high], stdin=isolate.DEVNULL,
                           stdout=isolate.DEVNULL, stderr=isolate.DEVNULL) as p:
            try:
                init_fds = {}
                for name in os.listdir(f"/proc/{p.pid}/fd"):
                    try:
                        init_fds[int(name)] = os.readlink(f"/proc/{p.pid}/fd/{name}")
                    except OSError:
                        pass
                assert [n for n, what in init_fds.items() if "signalfd" in what], init_fds
            finally:
                p.kill()
    finally:
        os.close(high)


def test_sessions_leave_no_fds_in_the_caller(tmp_path):
    from conftest import open_fds

    with isolate.Session("agent", workspace=tmp_path) as s:   # one-time: pools, caches
        s.exec("true")
    before = open_fds()
    for _ in range(3):
        with isolate.Session("agent", workspace=tmp_path) as s:
            s.exec("echo hi; sleep 600 &")
            s.exec(["true"])
            s.spawn(["sleep", "1"])
            s.exec("sleep 5", timeout=0.2)
            s.exec("sleep 1", yield_after=0.1)
            s.write_file("/tmp/x", "y")
    # No fd more than before (one of the caller's may have closed meanwhile: a plan the
    # cache evicted, a sandbox of an earlier test reaped by subprocess's own clean-up).
    after = open_fds()
    new = {fd: os.readlink(f"/proc/self/fd/{fd}") for fd in after - before if os.path.exists(f"/proc/self/fd/{fd}")}
    assert after <= before, new


@pytest.mark.parametrize("first", ["exec", "exec_argv", "spawn", "read_file", "agent_pid"])
def test_an_agent_that_ends_before_its_hello_fails_the_first_call(monkeypatch, tmp_path, first):
    # Session() returns once agentd has been exec'd (pid 1 reports the exec); agentd's
    # hello is read by the first call that needs it. A program that is exec'd but ends
    # without a hello (here /bin/false in agentd's place) must make that first call,
    # whatever it is, raise the start error, close the session and leave nothing behind.
    from isolate.agent import SessionError
    from isolate.agent import session as session_mod

    monkeypatch.setattr(session_mod, "AGENTD", os.path.realpath("/bin/false"))
    s = isolate.Session("agent", workspace=tmp_path)
    pid = s.pid
    calls = {"exec": lambda: s.exec("true"), "exec_argv": lambda: s.exec(["true"]),
             "spawn": lambda: s.spawn(["true"]), "read_file": lambda: s.read_file("/etc/hostname"),
             "agent_pid": lambda: s.agent_pid}
    with pytest.raises(SessionError, match=r"sandbox did not start \(its program ended with 1\)"):
        calls[first]()
    assert s.closed
    assert not os.path.exists(f"/proc/{pid}")   # its sandbox was reaped
    # Every later call says the same (not a different, later surprise).
    for call in calls.values():
        with pytest.raises(SessionError, match="did not start"):
            call()
    s.close()   # idempotent


def test_hello_is_read_when_first_needed(tmp_path):
    # Ready before agentd's hello was read: the first command (or a look at agent_pid/uid)
    # reads it; the pid and host ids are agentd's own, as the kernel reported them.
    with isolate.Session("agent", workspace=tmp_path) as s:
        r = s.exec(["sh", "-c", "echo $PPID; id -u"])
        ppid, uid = r.stdout.split()
        assert int(ppid) == s.agent_pid_inside
        assert os.stat(f"/proc/{s.agent_pid}").st_uid == s.uid
        with open(f"/proc/{s.agent_pid}/status") as f:
            assert f"NSpid:\t{s.agent_pid}\t{s.agent_pid_inside}\n" in f.read()
        assert uid == "0"   # root inside; s.uid is its host id


def test_a_caller_with_many_fds_starts_sessions(tmp_path):
    # agentd's binary is handed in at a fixed low number (above the profile's own passed
    # fds) whatever the caller's number for it: a caller whose free fds start above the
    # agent profile's rlimits.nofile (1024) starts a session, and neither agentd nor its
    # commands see an fd of the caller's.
    import resource

    from conftest import fill_fds

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 1400:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(1400, hard), hard))
    held = fill_fds(os.devnull, 1100)
    try:
        with isolate.Session("agent", workspace=tmp_path) as s:
            r = s.exec(["sh", "-c", "ls /proc/self/fd; ls /proc/$PPID/fd"])
            assert r.returncode == 0, r
            fds = [int(x) for x in r.stdout.split()]
            assert fds and max(fds) < 1024, fds
            assert s.agent_pid > 0
    finally:
        for fd in held:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
