"""Faults: a dying caller, programs that resist, flood, hang or go away early.

Every test names its sandboxed processes with a unique marker in their command line
(`sleep <marker>`: a number of seconds nobody else uses), so "nothing is left" is a
search of /proc for that marker. Bounds are generous "within N seconds", never speed.
"""

import gc
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest

import isolate

from conftest import ROOT, open_fds, pids_with_cmdline, zombies_of

MiB = 1 << 20
_seq = iter(range(10**6))


def marker(tag: int) -> str:
    """A unique `sleep` argument: digits only, so sleep accepts it as seconds."""
    return f"{tag}{os.getpid()}{next(_seq):03d}{time.monotonic_ns() % 10**5:05d}"


def left(m: str) -> list:
    """Every process with the marker in its command line: the sleeps, the shells that
    started them and the sandboxes' pid 1s (isolate-init carries the program's argv)."""
    return pids_with_cmdline(m)


def sleepers(m: str) -> list:
    """The `sleep <m...>` processes themselves."""
    out = []
    for pid in pids_with_cmdline(m):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if os.path.basename(argv[0]) == b"sleep" and argv[1].startswith(m.encode()):
            out.append(pid)
    return out


def wait_gone(m: str, seconds: float) -> list:
    """Poll until no process has `sleep <m>` in its command line; what is left at the end."""
    deadline = time.monotonic() + seconds
    while True:
        found = left(m)
        if not found or time.monotonic() >= deadline:
            return found
        time.sleep(0.01)


def wait_present(m: str, count: int = 1, seconds: float = 10) -> list:
    """Poll until `count` sleep processes with the marker run; their pids."""
    deadline = time.monotonic() + seconds
    while True:
        found = sleepers(m)
        if len(found) >= count or time.monotonic() >= deadline:
            return found
        time.sleep(0.01)


def reap_leftovers(m: str) -> None:
    """Cleanup after a failed assertion: never leave our own test processes running."""
    for pid in left(m):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def sig_ignored(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("SigIgn:"):
                return int(line.split()[1], 16)
    return 0


def in_thread(fn, seconds: float):
    """Run fn() in a thread; (finished?, its result or exception). Never blocks longer."""
    box = {}

    def target():
        try:
            box["value"] = fn()
        except BaseException as e:  # handed to the caller
            box["error"] = e

    t = threading.Thread(target=target, daemon=True)
    t.start()
    t.join(seconds)
    if t.is_alive():
        return False, None
    if "error" in box:
        raise box["error"]
    return True, box.get("value")


def _fd_targets() -> dict:
    out = {}
    for fd in open_fds():
        try:
            out[fd] = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            pass
    return out


def settled_fds(timeout: float = 20.0) -> dict:
    """The fd table, except network namespaces (isolate's netns pool refills them in the
    background, as root), once it stopped changing."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        gc.collect()  # a Plan that is garbage (evicted from the cache) closes its fds when collected
        now = {fd: t for fd, t in _fd_targets().items() if not t.startswith(("net:[", "user:["))}
        if now == last or time.monotonic() >= deadline:
            return now
        last = now
        time.sleep(0.2)


# ---- the caller dies ----------------------------------------------------------------------
HELPER = textwrap.dedent("""
    import os, sys, threading
    import isolate

    mark, overrides = os.environ["ISOLATE_FAULT_MARK"], sys.argv[1:]
    started = []

    def start(i):
        argv = ["sleep", f"{mark}{i}"]
        if i in (4, 9):  # and a daemon that left the program's process group and session
            argv = ["sh", "-c", f"(exec setsid sleep {mark}{i}0 &); exec sleep {mark}{i}"]
        started.append(isolate.Popen(argv, overrides=overrides, stdin=isolate.DEVNULL, stdout=isolate.DEVNULL,
                                     stderr=isolate.DEVNULL))

    for i in range(5):
        start(i)
    threads = [threading.Thread(target=start, args=(i,)) for i in range(5, 10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()  # these sandboxes' starting threads are gone
    assert not any(t.is_alive() for t in threads)
    print(" ".join(str(p.pid) for p in started), flush=True)
    sys.stdin.read()
""")


@pytest.mark.parametrize("overrides", [[], ["namespaces.pid=false", "filesystem.proc=false"]],
                         ids=["default", "no-pid-namespace"])
def test_sigkill_of_the_caller_takes_every_sandbox_within_a_second(overrides):
    m = marker(1)
    helper = subprocess.Popen([sys.executable, "-c", HELPER, *overrides], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
                              env=dict(os.environ, ISOLATE_FAULT_MARK=m))
    try:
        line = helper.stdout.readline()
        assert line, helper.communicate()[1]
        pids = [int(x) for x in line.split()]
        assert len(pids) == 10
        # 10 programs and 2 daemons (the helper reads the marker from its environment).
        assert len(wait_present(m, 12)) == 12, sleepers(m)
        # The sandboxes' pid 1s, as pids of our namespace, with their start times (pids get reused).
        inits = {pid: _starttime(pid) for pid in pids}
        assert None not in inits.values()
        helper.kill()
        t0 = time.monotonic()
        helper.wait()
        remaining = wait_gone(m, 1.0 - (time.monotonic() - t0))
        assert remaining == [], (f"{len(remaining)} sandboxed processes outlived their SIGKILLed caller by 1 s: "
                                 f"{_describe(remaining)}")
        # ... and so are their pid 1s (zombies of the host's pid 1 until it reaps them).
        def live_inits():
            return [pid for pid, t in inits.items() if _starttime(pid) == t and _state(pid) not in ("Z", "X")]

        while live_inits() and time.monotonic() - t0 < 1.0:
            time.sleep(0.01)
        assert live_inits() == [], _describe(live_inits())
    finally:
        helper.kill()
        helper.wait()
        helper.stdout.close()
        helper.stdin.close()
        helper.stderr.close()
        reap_leftovers(m)


def _describe(pids) -> list:
    out = []
    for pid in pids:
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                out.append((pid, _state(pid), f.read().replace(b"\0", b" ").decode(errors="replace")[-60:]))
        except OSError:
            out.append((pid, None, "gone"))
    return out


def _starttime(pid: int):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[19])
    except OSError:
        return None


def _state(pid: int):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return None


# ---- programs that resist being stopped ------------------------------------------------------
def test_a_program_ignoring_sigterm_is_still_ended_by_a_timeout():
    m = marker(2)
    try:
        r = isolate.run(["sh", "-c", f"trap '' TERM HUP INT; echo ready; exec sleep {m}"], timeout=1, on_timeout="result",
                        capture_output=True, text=True)
        assert r.timed_out and r.outcome == "timed_out" and r.signal == signal.SIGKILL
        assert r.stdout == "ready\n"
        assert wait_gone(m, 2) == []
    finally:
        reap_leftovers(m)


def test_terminate_is_ignored_but_kill_is_not():
    m = marker(3)
    try:
        with isolate.Popen(["sh", "-c", f"trap '' TERM; echo ready; exec sleep {m}"], stdout=isolate.PIPE) as p:
            assert p.stdout.readline() == b"ready\n"
            (pid,) = wait_present(m)
            assert sig_ignored(pid) & (1 << (signal.SIGTERM - 1))
            p.terminate()  # forwarded by pid 1, and ignored
            with pytest.raises(isolate.TimeoutExpired):
                p.wait(timeout=0.5)
            assert sleepers(m) == [pid]
            p.kill()
            assert p.wait(10) == -signal.SIGKILL
        assert wait_gone(m, 2) == []
    finally:
        reap_leftovers(m)


DAEMON = "( trap '' TERM HUP; exec setsid sleep {m} & ) ; echo started; exec sleep 1000"


def test_timeout_kills_a_double_forked_daemon_that_ignores_term_and_hup():
    m = marker(4)
    try:
        r = isolate.run(["sh", "-c", DAEMON.format(m=m)], timeout=2, on_timeout="result", capture_output=True, text=True)
        assert r.timed_out and r.stdout == "started\n"
        assert wait_gone(m, 2) == []
    finally:
        reap_leftovers(m)


def test_the_daemon_really_escaped_and_ignores_the_signals_then_dies_with_the_sandbox():
    m = marker(5)
    try:
        with isolate.Popen(["sh", "-c", DAEMON.format(m=m)], stdout=isolate.PIPE) as p:
            assert p.stdout.readline() == b"started\n"
            (pid,) = wait_present(m)
            ign = sig_ignored(pid)
            assert ign & (1 << (signal.SIGTERM - 1)) and ign & (1 << (signal.SIGHUP - 1))
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            assert int(fields[3]) == pid  # its own session: out of the program's process group
            with pytest.raises(isolate.TimeoutExpired):
                p.communicate(timeout=1)
            p.kill()
            p.communicate(timeout=10)
            assert p.returncode == -signal.SIGKILL
        assert wait_gone(m, 2) == []
    finally:
        reap_leftovers(m)


def test_without_a_pid_namespace_a_timeout_still_kills_a_setsid_daemon_and_returns():
    """namespaces.pid = false: the daemon leaves the process group the kill is aimed at.

    A timeout must still end the whole sandbox, and isolate.run must return: the
    daemon holds the stdout pipe, so while it lives communicate() never sees EOF.
    """
    m = marker(6)
    prog = f"( exec setsid sleep {m} & ) ; echo started; exec sleep 1000"
    try:
        done, r = in_thread(lambda: isolate.run(["sh", "-c", prog], overrides=["namespaces.pid=false",
                                                                                "filesystem.proc=false"],
                                                timeout=1, on_timeout="result", capture_output=True,
                                                text=True), 10)
        survivors = left(m)
        assert done, (f"isolate.run(timeout=1) had not returned after 10 s; "
                      f"the setsid daemon {survivors} still holds its stdout pipe")
        assert r.timed_out and r.stdout == "started\n"
        assert wait_gone(m, 2) == [], "the setsid daemon outlived the timeout"
    finally:
        reap_leftovers(m)  # also lets a hung run() above return


# ---- floods ---------------------------------------------------------------------------------
def test_flooding_both_pipes_does_not_deadlock_capture_output():
    prog = "yes | head -c 50M & yes e | head -c 50M >&2; wait"
    r = isolate.run(["sh", "-c", prog], capture_output=True, timeout=120)
    assert not r.timed_out and r.returncode == 0
    assert len(r.stdout) == 50 * MiB and len(r.stderr) == 50 * MiB
    assert r.stdout[:4] == b"y\ny\n" and r.stderr[-4:] == b"e\ne\n"


def test_a_flood_then_a_hang_is_ended_by_the_timeout_with_the_output_so_far():
    m = marker(7)
    try:
        r = isolate.run(["sh", "-c", f"yes | head -c 20M; exec sleep {m}"], capture_output=True, timeout=3, on_timeout="result")
        assert r.timed_out and r.signal == signal.SIGKILL
        assert 0 < len(r.stdout) <= 20 * MiB and r.stdout[:len(r.stdout) // 2 * 2] == b"y\n" * (len(r.stdout) // 2)
        assert wait_gone(m, 2) == []
    finally:
        reap_leftovers(m)


def test_endless_flood_while_the_parent_reads_only_stderr():
    """The program blocks on a full stdout nobody reads; kill() still ends it and
    unblocks the parent's read of stderr (nothing else holds the pipe)."""
    with isolate.Popen(["sh", "-c", "echo flooding >&2; exec yes"], stdout=isolate.PIPE,
                       stderr=isolate.PIPE) as p:
        assert p.stderr.readline() == b"flooding\n"
        with pytest.raises(isolate.TimeoutExpired):
            p.wait(timeout=1)
        p.kill()
        done, rest = in_thread(p.stderr.read, 10)
        assert done, "stderr never reached EOF after kill()"
        assert rest == b""
        assert p.wait(10) == -signal.SIGKILL
        assert len(p.stdout.read(1 << 16)) > 0  # what was written before the kill is still there


def test_endless_flood_on_both_pipes_with_capture_output_and_a_timeout():
    # A shell loop rather than `yes`: endless, but slow enough (some MB/s) that what is
    # captured in one second stays small; `yes` would pile up gigabytes in the parent.
    prog = "while :; do echo yyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyy; echo eeeeeeee >&2; done"
    done, r = in_thread(lambda: isolate.run(["sh", "-c", prog], capture_output=True, timeout=1,
                                                        on_timeout="result"), 60)
    assert done, "run(timeout=1) did not return"
    assert r.timed_out and r.signal == signal.SIGKILL
    assert len(r.stdout) > 0 and len(r.stderr) > 0
    assert set(r.stdout.splitlines()[:-1]) == {b"y" * 38}


# ---- programs that go away early ---------------------------------------------------------------
def test_closing_stdout_early_gives_the_parent_eof_while_the_program_runs():
    with isolate.Popen(["sh", "-c", "echo early; exec >&-; sleep 3; echo done >&2; exit 0"],
                       stdout=isolate.PIPE, stderr=isolate.PIPE) as p:
        t0 = time.monotonic()
        done, out = in_thread(p.stdout.read, 5)
        elapsed = time.monotonic() - t0
        assert done and out == b"early\n"
        assert elapsed < 1.0, f"EOF on stdout took {elapsed:.2f} s"
        assert p.poll() is None, "the program should still be running"
        assert p.stderr.read() == b"done\n"
        assert p.wait(10) == 0


def test_a_program_that_never_reads_stdin_while_10mb_are_written():
    m = marker(8)
    try:
        t0 = time.monotonic()
        done, r = in_thread(lambda: isolate.run(["sleep", m], input=os.urandom(10 * MiB), timeout=1, on_timeout="result",
                                                capture_output=True), 30)
        assert done, "run() deadlocked writing input nobody reads"
        assert r.timed_out and r.outcome == "timed_out" and r.signal == signal.SIGKILL
        assert time.monotonic() - t0 < 30
        assert wait_gone(m, 2) == []
    finally:
        reap_leftovers(m)


@pytest.mark.parametrize("argv", [["head", "-c", "10"], ["true"], ["sh", "-c", "exec <&-; sleep 0.2"]])
def test_exiting_while_the_parent_writes_input_is_handled_as_subprocess_does(argv):
    data = b"z" * (10 * MiB)
    expected = subprocess.run(argv, input=data, capture_output=True, timeout=60)
    r = isolate.run(argv, input=data, capture_output=True, timeout=60)
    assert not r.timed_out
    assert (r.returncode, r.stdout, r.stderr) == (expected.returncode, expected.stdout, expected.stderr)


def test_write_to_stdin_of_an_exited_program_raises_brokenpipe_like_subprocess():
    for popen in (subprocess.Popen, isolate.Popen):
        p = popen(["true"], stdin=subprocess.PIPE)
        assert p.wait(10) == 0
        with pytest.raises(BrokenPipeError):
            p.stdin.write(b"x" * MiB)
            p.stdin.flush()
        try:
            p.stdin.close()
        except BrokenPipeError:
            pass
        # communicate() swallows it, as subprocess does.
        q = popen(["true"], stdin=subprocess.PIPE)
        q.wait(10)
        assert q.communicate(b"y" * MiB, timeout=10) == (None, None)
        assert q.returncode == 0


# ---- many at once --------------------------------------------------------------------------------
def test_many_concurrent_sandboxes_killed_at_once():
    m = marker(9)
    n = 24
    before = settled_fds()
    procs = []
    try:
        for i in range(n):
            procs.append(isolate.Popen(["sh", "-c", f"sleep {m}{i:02d} & exec sleep {m}{i:02d}"],
                                       stdout=isolate.PIPE, stderr=isolate.PIPE))
        assert len(wait_present(m, 2 * n)) == 2 * n
        go = threading.Barrier(n)

        def kill(p):
            go.wait(10)
            p.kill()

        killers = [threading.Thread(target=kill, args=(p,)) for p in procs]
        for t in killers:
            t.start()
        for t in killers:
            t.join(10)
        assert not any(t.is_alive() for t in killers)
        for p in procs:
            assert p.wait(10) == -signal.SIGKILL
            assert p.stdout.read() == b"" and p.stderr.read() == b""
            p.stdout.close()
            p.stderr.close()
        assert wait_gone(m, 2) == []
        assert zombies_of(os.getpid()) == []
        after = settled_fds()
        assert after == before, sorted(set(after.items()) ^ set(before.items()))
    finally:
        for p in procs:
            p.kill()
            p.wait(10)
        reap_leftovers(m)


# ---- Popen as a context manager -------------------------------------------------------------------
def test_an_exception_in_the_with_block_leaves_nothing_behind():
    m = marker(10)
    before = settled_fds()
    try:
        with pytest.raises(RuntimeError, match="boom"):
            with isolate.Popen(["sh", "-c", f"(exec setsid sleep {m} &); cat"], stdin=isolate.PIPE,
                               stdout=isolate.PIPE, stderr=isolate.PIPE) as p:
                p.stdin.write(b"hi\n")
                p.stdin.flush()
                assert p.stdout.readline() == b"hi\n"
                assert wait_present(m)
                raise RuntimeError("boom")
        # __exit__ closed our pipe ends (cat saw EOF and exited) and waited.
        assert p.returncode == 0
        assert p.stdin.closed and p.stdout.closed and p.stderr.closed
        assert wait_gone(m, 2) == [], "the daemon outlived its sandbox"
        assert zombies_of(os.getpid()) == []
        assert settled_fds() == before
    finally:
        reap_leftovers(m)


def test_timeout_inside_the_with_block_with_kill_leaves_nothing_behind():
    m = marker(11)
    before = settled_fds()
    try:
        with pytest.raises(isolate.TimeoutExpired):
            with isolate.Popen(["sh", "-c", f"(exec setsid sleep {m} &); exec sleep {m}"],
                               stdout=isolate.PIPE) as p:
                try:
                    p.communicate(timeout=0.5)
                except isolate.TimeoutExpired:
                    p.kill()  # the pattern subprocess documents
                    raise
        assert p.returncode == -signal.SIGKILL
        assert wait_gone(m, 2) == []
        assert zombies_of(os.getpid()) == []
        assert settled_fds() == before
    finally:
        reap_leftovers(m)
