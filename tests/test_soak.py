"""Soak: many launches from many threads of one parent leave nothing behind.

10,000 launches of `true` with the full default profile from 32 threads: afterwards
the parent has the same fds, no zombie, no child, no sandbox pid 1 left anywhere
below it, and its memory has not grown (beyond allocator noise) after a warm-up.

Running as root, isolate keeps a pool of prepared network namespaces (isolate/net.py),
refilled by a background thread: the pool's namespace fds come and go on their own.
The fd comparison therefore waits for the fd table to settle, requires every other
fd to be exactly the one that was there before, and bounds the namespace fds by the
pool's size (a leak of one per launch would be thousands).
"""

import os
import time

import isolate

from conftest import launch_many, open_fds, zombies_of

PROFILE = "default"     # the full default profile: all seven namespaces, pid 1, seccomp, new root
TOTAL = 10_000
WARMUP = 500
THREADS = 32
JOIN_TIMEOUT = 600      # seconds for all of it; measured here: ~15 s for 10,000
RSS_GROWTH_LIMIT_KB = 20 * 1024


def _stat(pid) -> list | None:
    """Fields of /proc/PID/stat after the command name (state is [0], ppid is [1])."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None


def _pids() -> list:
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def children_of(pid: int) -> set:
    """Processes (not threads: /proc lists thread-group leaders only) whose parent is `pid`."""
    out = set()
    for p in _pids():
        st = _stat(p)
        if st is not None and int(st[1]) == pid:
            out.add(p)
    return out


def _descends_from(pid: int, ancestor: int) -> bool:
    seen = set()
    while pid > 1 and pid not in seen:
        seen.add(pid)
        st = _stat(pid)
        if st is None:
            return False
        pid = int(st[1])
        if pid == ancestor:
            return True
    return False


def sandbox_inits_below(ancestor: int) -> list:
    """isolate-init processes whose ancestry leads to `ancestor`."""
    found = []
    for p in _pids():
        try:
            exe = os.readlink(f"/proc/{p}/exe")
        except OSError:
            continue
        if exe.removesuffix(" (deleted)").endswith("isolate-init") and _descends_from(p, ancestor):
            found.append(p)
    return found


def _pool_size() -> int:
    try:
        from isolate.launch import net
    except ImportError:  # no pool in this version
        return 0
    pool = net.pool() if hasattr(net, "pool") else None
    return getattr(pool, "size", 8) if pool is not None else 0


def fd_table() -> dict:
    out = {}
    for fd in open_fds():
        try:
            out[fd] = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:  # closed in between (the listing's own fd, a refill in progress)
            pass
    return out


def settled_fds(timeout: float = 20.0) -> dict:
    """The fd table once it stopped changing (the netns pool refills in the background)."""
    deadline = time.monotonic() + timeout
    last = fd_table()
    while time.monotonic() < deadline:
        time.sleep(0.25)
        now = fd_table()
        if now == last:
            return now
        last = now
    return last


def assert_no_fd_leak(before: dict) -> None:
    after = settled_fds()
    is_ns = lambda target: target.startswith(("net:[", "user:["))  # noqa: E731 (pools kept on purpose)
    plain_before = {fd: t for fd, t in before.items() if not is_ns(t)}
    plain_after = {fd: t for fd, t in after.items() if not is_ns(t)}
    assert plain_after == plain_before, (
        f"fds leaked: {sorted(set(plain_after.items()) - set(plain_before.items()))[:20]}; "
        f"fds gone: {sorted(set(plain_before.items()) - set(plain_after.items()))[:20]}")
    ns_before = sum(1 for t in before.values() if is_ns(t))
    ns_after = sum(1 for t in after.values() if is_ns(t))
    assert ns_after <= max(ns_before, _pool_size()), \
        f"{ns_after} network namespace fds open (pool size {_pool_size()}, {ns_before} before)"


def vm_rss_kb() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS in /proc/self/status")


def _run_true():
    r = isolate.run(["true"], profile=PROFILE, timeout=120)
    if r.returncode != 0 or r.timed_out:
        return r
    return None


def test_10000_launches_from_32_threads_leave_nothing_behind():
    me = os.getpid()
    # One launch first: it opens what a process keeps for all its launches (the
    # isolate-init fd, a pidfd of itself) and what the cached plan keeps (its
    # seccomp memfd). Those are there once, not per launch.
    assert _run_true() is None
    fds_before = settled_fds()
    children_before = children_of(me)

    t0 = time.monotonic()
    errors, threads = launch_many(WARMUP, THREADS, _run_true, JOIN_TIMEOUT)
    assert not [t.name for t in threads if t.is_alive()], "warm-up workers hung"
    assert not errors, errors[:3]
    rss_warm = vm_rss_kb()

    errors, threads = launch_many(TOTAL - WARMUP, THREADS, _run_true, JOIN_TIMEOUT)
    elapsed = time.monotonic() - t0
    hung = [t.name for t in threads if t.is_alive()]
    assert not hung, f"{len(hung)} worker threads still running after {JOIN_TIMEOUT} s: a launch hung"
    assert not errors, f"{len(errors)} failed launches, e.g. {errors[:3]}"
    rss_after = vm_rss_kb()
    print(f"\n{TOTAL} launches of the default profile from {THREADS} threads in {elapsed:.1f} s "
          f"({TOTAL / elapsed:.0f}/s); VmRSS {rss_warm} kB after warm-up, {rss_after} kB after")

    assert_no_fd_leak(fds_before)
    assert zombies_of(me) == []
    stray = children_of(me) - children_before
    assert not stray, f"processes still children of the parent: {sorted(stray)}"
    assert sandbox_inits_below(me) == []
    assert rss_after - rss_warm < RSS_GROWTH_LIMIT_KB, \
        f"VmRSS grew by {(rss_after - rss_warm) / 1024:.1f} MB over {TOTAL - WARMUP} launches"


def test_launches_with_pipes_and_timeouts_leave_nothing_behind():
    """The pipe path (capture_output, input, timeout) too: every launch has pipes to close."""
    me = os.getpid()

    def launch():
        r = isolate.run(["cat"], profile=PROFILE, input=b"x" * 100, capture_output=True, timeout=120)
        if r.returncode != 0 or r.stdout != b"x" * 100 or r.stderr != b"":
            return r
        return None

    assert launch() is None
    fds_before = settled_fds()
    children_before = children_of(me)
    errors, threads = launch_many(2000, THREADS, launch, JOIN_TIMEOUT)
    assert not [t.name for t in threads if t.is_alive()], "a launch hung"
    assert not errors, f"{len(errors)} failed launches, e.g. {errors[:3]}"
    assert_no_fd_leak(fds_before)
    assert zombies_of(me) == []
    assert not children_of(me) - children_before
    assert sandbox_inits_below(me) == []
