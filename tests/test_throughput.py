"""Launches from many threads at once: the admission limit of the launch path (FIFO,
never a wait on a launch that hangs, fork-safe) and the thread that holds the reaped
sandboxes' mount namespaces outside the process's fd table (docs/launch-path.md,
"Throughput")."""

from __future__ import annotations

import os
import threading
import time

import isolate
from isolate.launch import _launch
from conftest import held_by_closer, open_fds


def _wait_for(cond, what: str, seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    while not cond():
        assert time.monotonic() < deadline, what
        time.sleep(0.001)


class _Limit:
    """set_admission(n) for the block, the previous limit back after."""

    def __init__(self, n: int):
        self.n = n

    def __enter__(self):
        self.old = _launch.set_admission(self.n)
        return self

    def __exit__(self, *exc):
        _launch.set_admission(self.old)


def test_the_default_limit_lets_eight_per_cpu_in():
    limit, busy, waiting = _launch.admission()[:3]
    assert limit == max(16, 8 * len(os.sched_getaffinity(0)))
    assert (busy, waiting) == (0, 0)


def test_many_threads_at_once_all_succeed_and_nothing_is_left(tmp_path):
    # 24 threads, 3 launches each, with 4 let into the launch path at once: every
    # sandbox reports from the inside that it ran in its own mount namespace, every
    # namespace is released, no fd stays in the process, nobody waits any more.
    isolate.run(["true"])  # the plan's and the process's own fds exist from the first launch on
    before = open_fds()
    errors, seen = [], []

    def one():
        try:
            for _ in range(3):
                r = isolate.run(["sh", "-c", "readlink /proc/self/ns/mnt"], capture_output=True)
                assert r.returncode == 0 and r.stdout.startswith(b"mnt:["), r
                seen.append(r.stdout)
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    with _Limit(4):
        start = _launch.admission()
        threads = [threading.Thread(target=one) for _ in range(24)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        end = _launch.admission()
    assert not errors, errors
    assert len(seen) == 72 and len(set(seen)) > 1
    assert end[1:3] == (0, 0)                       # nobody in the path, nobody waiting
    assert end[3] + end[4] - start[3] - start[4] >= 72 and end[5] == start[5]  # all admitted, none went ahead
    _launch.drain_deferred()
    assert _launch.deferred() == 0
    assert held_by_closer() == set()
    assert open_fds() == before


def test_waiting_launches_are_let_in_first_come_first_served():
    # One slot; it is held (admitted_read: what spawn does, with a read of one byte in
    # place of the launch) while five more queue up one after the other; then every
    # one of them may go: they are admitted in the order they came.
    pipes = [os.pipe() for _ in range(6)]
    order: dict = {}

    def enter(i):
        order[i] = _launch.admitted_read(pipes[i][0])

    with _Limit(1):
        threads = [threading.Thread(target=enter, args=(0,))]
        threads[0].start()
        _wait_for(lambda: _launch.admission()[1] == 1, "the first did not get the slot")
        for i in range(1, 6):
            threads.append(threading.Thread(target=enter, args=(i,)))
            threads[i].start()
            _wait_for(lambda: _launch.admission()[2] == i, f"waiter {i} did not queue")
        for i in (5, 4, 3, 2, 1, 0):  # the bytes arrive last to first: the order is the queue's
            os.write(pipes[i][1], b"x")
        for t in threads:
            t.join()
    seqs = [order[i] for i in range(6)]
    assert seqs == sorted(seqs) and len(set(seqs)) == 6 and all(s > 0 for s in seqs)
    for r, w in pipes:
        os.close(r)
        os.close(w)


def test_a_launch_never_waits_for_one_that_hangs_and_a_fork_starts_with_none_admitted():
    # The only slot is taken by something that does not come back: a launch waits a
    # moment, then goes ahead (and runs), counted as such.
    r, w = os.pipe()
    with _Limit(1):
        holder = threading.Thread(target=_launch.admitted_read, args=(r,))
        holder.start()
        _wait_for(lambda: _launch.admission()[1] == 1, "the slot was not taken")
        ahead = _launch.admission()[5]
        res = isolate.run(["sh", "-c", "echo ran"], capture_output=True)
        assert res.returncode == 0 and res.stdout == b"ran\n"
        assert _launch.admission()[5] == ahead + 1
        # A forked child: the slot's holder is not in it; its launches go in at once.
        pid = os.fork()
        if pid == 0:
            ok = _launch.admission()[1:3] == (0, 0)
            res = isolate.run(["sh", "-c", "echo ran"], capture_output=True)
            ok = ok and res.returncode == 0 and _launch.admission()[5] == ahead + 1
            os._exit(0 if ok else 1)
        assert os.waitpid(pid, 0)[1] == 0
        os.write(w, b"x")
        holder.join()
    os.close(r)
    os.close(w)
    assert _launch.admission()[1:3] == (0, 0)


def test_set_admission_refuses_what_is_not_a_limit():
    import pytest  # noqa: PLC0415 - (pytest is only a test dependency)

    for bad in (-1, 65537):
        with pytest.raises(ValueError, match="set_admission"):
            _launch.set_admission(bad)


def test_held_namespaces_from_many_threads_all_go_and_a_fork_holds_none():
    # 16 threads launch at once: every launch succeeds, every namespace is released, none stays held,
    # no fd is left in the process.
    isolate.run(["true"])
    before = open_fds()
    errors = []

    def one():
        try:
            for _ in range(3):
                r = isolate.run(["sh", "-c", "readlink /proc/self/ns/mnt"], capture_output=True)
                assert r.returncode == 0 and r.stdout.startswith(b"mnt:[")
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=one) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    _launch.drain_deferred()
    assert _launch.deferred() == 0
    assert held_by_closer() == set()
    assert open_fds() == before
    # A forked child has no copy of the holding socket's namespaces, and holds its own.
    with isolate.Popen(["sh", "-c", "read x || true"], stdin=isolate.PIPE) as p:
        pid = os.fork()
        if pid == 0:
            ok = _launch.closer_fds() == [] and _launch.closer_tid() == 0
            r = isolate.run(["sh", "-c", "readlink /proc/self/ns/mnt"], capture_output=True)
            _launch.drain_deferred()
            os._exit(0 if ok and r.returncode == 0 and _launch.deferred() == 0 else 1)
        assert os.waitpid(pid, 0)[1] == 0
        p.stdin.close()
    _launch.drain_deferred()
    assert held_by_closer() == set()




def test_with_holding_off_the_namespace_stays_in_the_process_table_as_before():
    # The knob that measures one against the other: off, the held namespace is an fd of
    # the process (as before the holding thread), still closed once reaped.
    was = _launch.set_holding(False)
    try:
        with isolate.Popen(["sh", "-c", "readlink /proc/self/ns/mnt; read x || true"], stdin=isolate.PIPE,
                           stdout=isolate.PIPE) as p:
            inside = int(p.stdout.readline().decode().strip()[5:-1])
            assert 0 <= p._mntns < 2 ** 32 and os.fstat(p._mntns).st_ino == inside
            p.stdin.close()
            assert p.wait(30) == 0
        _launch.drain_deferred()
        assert inside not in held_by_closer()
    finally:
        _launch.set_holding(was)
    assert _launch.set_holding(True) is True
