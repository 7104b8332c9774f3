"""What WarmPool.run keeps between tasks to do less per task (docs/warm-path.md, "the
direct path") changes nothing the program sees: each test runs a program in a warm
strict sandbox that reports what it sees, and checks it against what it must see.

- run(args) alone, with args seen before, sends the task's strings as kept: a change
  of the caller's environment (a kept variable), of its umask or of the args is still
  seen by the next task, and only lists of exact str are taken as seen before.
- The caller's umask is read with one pread of a kept /proc/thread-self/status per
  thread: a closed and reused fd number is never read as ours nor closed by the pool.

The profile's stdout is "pipe": run(args) without any keyword captures it.
"""

import os
import threading

import pytest

import isolate

from conftest import fill_fds, given_back, with_python

SHOW = ["sh", "-c", "echo ${ISOLATE_PREP_T-unset} $(umask) $0", "arg0"]


@pytest.fixture(scope="module")
def pool():
    profile = isolate.load_profile(with_python("strict", env={"keep": ["ISOLATE_PREP_T"]},
                                               fds={"stdout": "pipe"}))
    with isolate.WarmPool(profile, size=2) as p:
        assert p.wait_ready(30)
        yield p


def _seen(pool, argv=SHOW) -> str:
    res = pool.run(argv)
    assert res.returncode == 0, res
    return res.stdout.decode()


def test_a_task_seen_before_still_sees_the_callers_environment_and_umask(pool):
    old_env = os.environ.pop("ISOLATE_PREP_T", None)
    old_mask = os.umask(0o022)
    try:
        assert _seen(pool) == "unset 0022 arg0\n"
        assert tuple(SHOW) in pool._prepared  # the second run(SHOW) takes the kept strings
        os.umask(0o077)
        assert _seen(pool) == "unset 0077 arg0\n"
        os.environ["ISOLATE_PREP_T"] = "a"
        assert _seen(pool) == "a 0077 arg0\n"
        os.environ["ISOLATE_PREP_T"] = "b"
        os.umask(0o027)
        assert _seen(pool) == "b 0027 arg0\n"
        del os.environ["ISOLATE_PREP_T"]
        assert _seen(pool) == "unset 0027 arg0\n"
        # Other args: their own strings.
        assert _seen(pool, SHOW[:-1] + ["other"]) == "unset 0027 other\n"
        assert _seen(pool) == "unset 0027 arg0\n"
    finally:
        os.umask(old_mask)
        if old_env is not None:
            os.environ["ISOLATE_PREP_T"] = old_env


class _Str(str):
    """Equal to its str and hashed alike, but not a str: never taken as seen before."""


def test_only_exact_strings_are_taken_as_seen_before(pool):
    _seen(pool)
    odd = SHOW[:-1] + [_Str("arg0")]
    assert odd == SHOW and hash(tuple(odd)) == hash(tuple(SHOW))
    calls = []
    orig = pool._run_direct

    def spy(args, **kw):
        calls.append(kw.get("prepared"))
        return orig(args, **kw)

    pool._run_direct = spy
    try:
        assert _seen(pool, odd).endswith(" arg0\n")
        assert _seen(pool).endswith(" arg0\n")
    finally:
        del pool._run_direct
    assert calls[0] is None and calls[1] is not None
    with pytest.raises(TypeError):
        pool.run(SHOW[:-1] + [["a list"]])  # unhashable: the checks say what is wrong
    with pytest.raises(ValueError, match="null byte"):
        pool.run(SHOW[:-1] + ["a\0b"])


def test_the_kept_status_fd_of_a_thread_is_never_taken_for_another_file(pool):
    old_mask = os.umask(0o022)
    mine: list = []
    try:
        assert _seen(pool).split()[1] == "0022"
        assert pool.wait_ready(30)  # the refill thread opens nothing meanwhile
        kept = pool._status.kept
        assert kept is not None
        # The caller closes our fd and opens a file of its own at that number.
        os.close(kept.fd)
        mine = fill_fds("/etc/passwd", kept.fd)
        assert kept.fd in mine
        os.umask(0o077)
        assert _seen(pool).split()[1] == "0077"
        assert pool._status.kept is not kept
        for fd in mine:
            os.fstat(fd)  # still open: the pool did not close the caller's files
    finally:
        os.umask(old_mask)
        for fd in mine:
            os.close(fd)


def test_each_thread_reads_its_own_status(pool):
    seen = {}
    all_ran = threading.Barrier(3, timeout=60)

    def task(name):
        seen[name] = (_seen(pool).split()[1], pool._status.kept.fd)
        all_ran.wait()  # no thread ends (and closes its fd) before each has its own

    old_mask = os.umask(0o007)
    try:
        threads = [threading.Thread(target=task, args=(n,)) for n in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    finally:
        os.umask(old_mask)
    assert sorted(m for m, _fd in seen.values()) == ["0007"] * 3
    assert len({fd for _m, fd in seen.values()}) == 3  # one kept fd per thread


def test_a_sandbox_given_back_without_waking_the_refill_is_still_cleaned_up(pool):
    # run() gives its sandbox back without waking the refill thread (while `low` are ready):
    # the refill thread's own look finds it, with no further call into the pool.
    assert pool.wait_ready(30)
    with given_back(pool) as taken:
        assert _seen(pool).endswith(" arg0\n")
    for _ in range(500):
        if not os.path.exists(f"/proc/{taken[0]}"):
            break
        threading.Event().wait(0.01)
    assert not os.path.exists(f"/proc/{taken[0]}")
    assert pool.wait_ready(30)


SCHED = ("import ctypes, struct\n"
         "libc = ctypes.CDLL(None, use_errno=True)\n"
         "buf = ctypes.create_string_buffer(48)\n"
         "assert libc.syscall(315, 0, buf, 48, 0) == 0\n"
         "size, policy, flags, nice, prio, runtime, _d, _p = struct.unpack('=IIQiIQQQ', buf.raw)\n"
         "print(policy, nice, runtime)\n")


def _sched_of(pid: int) -> tuple:
    import ctypes
    import struct
    libc = ctypes.CDLL(None, use_errno=True)
    buf = ctypes.create_string_buffer(48)
    assert libc.syscall(315, pid, buf, 48, 0) == 0, ctypes.get_errno()
    _size, policy, _flags, nice, _prio, runtime, _d, _p = struct.unpack("=IIQiIQQQ", buf.raw)
    return policy, nice, runtime


def test_pid1_and_the_zygote_wait_with_a_short_slice_and_the_program_has_the_callers(pool):
    import sys
    assert pool.wait_ready(30)
    slot = pool._ready[0]
    # Seen from here: pid 1 of a ready sandbox and its zygote (the program's process to
    # be) have the kernel's shortest slice (0.1 ms), this thread's policy and nice value.
    mine = _sched_of(0)
    zygote = int(open(f"/proc/{slot.pid}/task/{slot.pid}/children").read().split()[0])
    assert _sched_of(slot.pid) == _sched_of(zygote) == (mine[0], mine[1], 100_000)
    # Seen from the inside: the program's policy, nice value and slice are the caller's.
    res = pool.run([sys.executable, "-c", SCHED])
    assert res.returncode == 0, res
    assert tuple(int(x) for x in res.stdout.split()) == mine


def _set_slice(ns: int) -> None:
    import ctypes
    import struct
    libc = ctypes.CDLL(None, use_errno=True)
    policy, nice, _runtime = _sched_of(0)
    buf = ctypes.create_string_buffer(struct.pack("=IIQiIQQQ", 48, policy, 0, nice, 0, ns, 0, 0))
    assert libc.syscall(314, 0, buf, 0) == 0, ctypes.get_errno()


def test_a_custom_slice_of_the_caller_reaches_the_program():
    import sys
    out = {}

    def in_thread():  # a thread of its own: its slice (and its pool's refill thread's) is 3 ms
        _set_slice(3_000_000)
        profile = isolate.load_profile(with_python("strict", fds={"stdout": "pipe"}))
        with isolate.WarmPool(profile, size=1) as p:
            assert p.wait_ready(30)
            out["pid1"] = _sched_of(p._ready[0].pid)[2]
            res = p.run([sys.executable, "-c", SCHED])
            out["seen"] = (res.returncode, res.stdout)

    t = threading.Thread(target=in_thread)
    t.start()
    t.join(120)
    assert out["pid1"] == 100_000
    rc, seen = out["seen"]
    assert rc == 0 and int(seen.split()[2]) == 3_000_000, seen
