"""What makes a WarmPool.run task cheaper (docs/warm-path.md, "quiet tasks") changes
nothing the program or the caller can see: each test runs a program in a warm strict
sandbox that reports what it sees, and checks it against what it must see.

- pid 1 of a quiet task (run()'s direct path) is not woken at the exec; it reports the
  start with the end and stays until the pool kills it: every other process of the
  sandbox is still dead when run() returns, and a Popen task still learns of its start
  at the exec.
- The zygote moves only the fds below the program's table: the program still has
  exactly 0, 1, 2 and pass_fds, each the caller's object.
- The environment's C strings and the exec paths are kept between tasks: a change of
  the caller's environment, of env= or of PATH is still seen by the next task.
"""

import os
import select
import sys
import threading

import pytest

import isolate

from conftest import given_back, with_python

FDS_SEEN = ("import os, sys\n"
            "def is_open(fd):\n"
            "    try:\n"
            "        os.fstat(fd)\n"
            "        return True\n"
            "    except OSError:\n"
            "        return False\n"
            "fds = [fd for fd in range(256) if is_open(fd)]\n"
            "for fd in fds[3:]:\n"
            "    os.write(fd, b'%d' % fd)\n"
            "print(repr((fds, os.getppid(), sorted(int(p) for p in os.listdir('/proc') if p.isdigit()))))\n"
            "sys.stdout.flush()\n")


@pytest.fixture(scope="module")
def pool():
    profile = isolate.load_profile(with_python("strict", env={"keep": ["ISOLATE_QUIET_T"]}))
    with isolate.WarmPool(profile, size=2) as p:
        assert p.wait_ready(30)
        yield p


def _eof_within(fd: int, seconds: float) -> bool:
    ready, _, _ = select.select([fd], [], [], seconds)
    return bool(ready) and os.read(fd, 100) == b""


@pytest.mark.parametrize("script", [
    "sleep 30 >&%d & echo $!",        # a child of the program: reparented to pid 1 at the end
    "(sleep 30 >&%d &); echo sub",    # a grandchild, reparented to pid 1 before the program ends
])
def test_every_other_process_is_dead_when_a_quiet_task_returns(pool, script):
    r, w = os.pipe()
    try:
        res = pool.run(["sh", "-c", script % w], pass_fds=[w], capture_output=True, text=True, timeout=30)
        os.close(w)
        w = -1
        assert res.returncode == 0 and res.outcome == "exited", res
        assert res.rusage is not None and res.rusage.maxrss_kb > 0
        # The background sleep held the pipe: it was killed before run() returned (not in 30 s).
        assert _eof_within(r, 5)
    finally:
        os.close(r)
        if w >= 0:
            os.close(w)


def test_a_quiet_tasks_pid1_is_reaped_by_the_pool_off_the_callers_path(pool):
    with given_back(pool) as taken:
        res = pool.run([sys.executable, "-c", FDS_SEEN], capture_output=True, text=True, timeout=30)
    # From the inside: pid 1 and the program, nothing else; its parent is pid 1.
    fds, ppid, pids = eval(res.stdout)
    assert (fds, ppid, pids) == ([0, 1, 2], 1, [1, 2]), res.stdout
    assert res.returncode == 0 and len(taken) == 1
    # pid 1 stayed for the pool's refill thread, which kills and reaps it after run() returned.
    assert pool.wait_ready(30)
    for _ in range(300):
        if not os.path.exists(f"/proc/{taken[0]}"):
            break
        threading.Event().wait(0.01)
    assert not os.path.exists(f"/proc/{taken[0]}")


def test_a_popen_task_still_learns_of_its_start_at_the_exec(pool):
    # The program waits for a line that is only sent once Popen() has returned: Popen()
    # returning proves that pid 1 reported "started" at the exec, not with the end.
    done = {}

    def start():
        done["p"] = pool.Popen(["sh", "-c", "read line; echo got $line"], stdin=isolate.PIPE, stdout=isolate.PIPE,
                               text=True)

    t = threading.Thread(target=start, daemon=True)
    t.start()
    t.join(30)
    assert not t.is_alive(), "WarmPool.Popen did not return before the program ended"
    p = done["p"]
    out, _ = p.communicate("x\n", timeout=30)
    assert (p.returncode, out) == (0, "got x\n")


def test_the_fd_table_is_exactly_the_tasks(pool):
    pipes = [os.pipe() for _ in range(3)]
    writers = [w for _r, w in pipes]
    try:
        for passed in ([writers[0]], writers[:2], writers):
            res = pool.run([sys.executable, "-c", FDS_SEEN], pass_fds=passed, capture_output=True, text=True,
                           timeout=30)
            assert res.returncode == 0, res.stderr
            fds, _ppid, _pids = eval(res.stdout)
            assert fds == [0, 1, 2, *sorted(passed)], (passed, res.stdout)
            # Each passed number is the caller's pipe of that number: its own number came through it.
            for r, w in pipes:
                if w in passed:
                    assert os.read(r, 100) == b"%d" % w
    finally:
        for r, w in pipes:
            os.close(r)
            os.close(w)
    # Standard streams given one by one, with the others the profile's (inherited).
    res = pool.run(["sh", "-c", "cat; echo err >&2"], input=b"in\n", stdout=isolate.PIPE, stderr=isolate.STDOUT)
    assert (res.returncode, res.stdout) == (0, b"in\nerr\n")


def test_changes_of_the_environment_and_path_reach_the_next_task(pool):
    argv = ["sh", "-c", "echo ${ISOLATE_QUIET_T-unset}"]
    old = os.environ.pop("ISOLATE_QUIET_T", None)
    try:
        assert pool.run(argv, capture_output=True, text=True).stdout == "unset\n"
        os.environ["ISOLATE_QUIET_T"] = "a"
        assert pool.run(argv, capture_output=True, text=True).stdout == "a\n"
        os.environ["ISOLATE_QUIET_T"] = "b"
        assert pool.run(argv, capture_output=True, text=True).stdout == "b\n"
        del os.environ["ISOLATE_QUIET_T"]
        assert pool.run(argv, capture_output=True, text=True).stdout == "unset\n"
    finally:
        if old is not None:
            os.environ["ISOLATE_QUIET_T"] = old
    # env= given: its PATH finds the program, or does not; the same name each time.
    assert pool.run(["true"], env={"PATH": "/usr/bin"}).returncode == 0
    with pytest.raises(isolate.ExecutableNotFound):
        pool.run(["true"], env={"PATH": "/no/such/dir"})
    assert pool.run(["true"], env={"PATH": "/usr/bin"}).returncode == 0
    # The same variables in another order reach the program in that order.
    show = [sys.executable, "-c", "import os; print([k for k in os.environ if k.startswith('Q_')])"]
    one = pool.run(show, env={"PATH": "/usr/bin", "Q_A": "1", "Q_B": "2"}, capture_output=True, text=True)
    two = pool.run(show, env={"PATH": "/usr/bin", "Q_B": "2", "Q_A": "1"}, capture_output=True, text=True)
    assert (one.stdout, two.stdout) == ("['Q_A', 'Q_B']\n", "['Q_B', 'Q_A']\n"), (one, two)
    with pytest.raises(ValueError, match="environment variable"):
        pool.run(["true"], env={"PATH": "/usr/bin", "A=B": "1"})
