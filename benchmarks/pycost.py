"""The Python part of a cold launch, measured with counts that do not depend on load.

    .venv/bin/python -m benchmarks.pycost [--n 1000] [--profile strict] [--session N] [--cprofile]

For `isolate.run(["/bin/true"], profile=...)` in a loop (after a warm-up), per launch:

* `user_us`: user CPU time of the calling thread (getrusage(RUSAGE_THREAD)): Python and
  the extension's own code in this thread, none of the child's, the pools' threads' or
  the kernel's (system time is reported apart: it includes the clone and the waits'
  bookkeeping, which Python does not decide); `python_user_us` / `python_sys_us`: the
  same without the time spent inside the extension's spawn (the C launch path);
* `calls`: Python and C function calls seen by sys.setprofile in one launch (a
  separate pass: the hook itself is slow);
* with --cprofile, the functions with the most own time.

`perf stat -e instructions:u --no-inherit -- python -m benchmarks.pycost --n 1000`
counts the user instructions of this main thread only (no child, no pool thread);
divide by the launches (the warm-up and start-up are one run with --n 0 apart).

With --session N: the same for N cold isolate.Session("agent") starts (each closed
after; the close is not counted in `start_user_us`).
"""

from __future__ import annotations

import argparse
import resource
import sys
import time

import isolate


def thread_cpu() -> tuple[float, float]:
    ru = resource.getrusage(resource.RUSAGE_THREAD)
    return ru.ru_utime, ru.ru_stime


def count_calls(fn) -> int:
    n = 0

    def hook(frame, event, arg):
        nonlocal n
        if event in ("call", "c_call"):
            n += 1

    sys.setprofile(hook)
    try:
        fn()
    finally:
        sys.setprofile(None)
    return n - 1  # the setprofile(None) call itself


class SpawnMeter:
    """Wraps the extension's spawn (the C launch path) to take its thread CPU apart: what
    is left of a launch's thread CPU is Python's (and its system calls')."""

    def __init__(self):
        from isolate.launch import _launch  # the C launch path, measured from outside

        self.mod, self.orig, self.user, self.sys = _launch, _launch.spawn, 0.0, 0.0

    def __enter__(self):
        def spawn(*args):
            u0, s0 = thread_cpu()
            try:
                return self.orig(*args)
            finally:
                u1, s1 = thread_cpu()
                self.user += u1 - u0
                self.sys += s1 - s0

        self.mod.spawn = spawn
        return self

    def __exit__(self, *exc):
        self.mod.spawn = self.orig


def launches(n: int, profile: str) -> dict:
    def one():
        isolate.run(["/bin/true"], profile=profile)

    for _ in range(20):
        one()
    calls = count_calls(one)
    with SpawnMeter() as m:
        u0, s0 = thread_cpu()
        w0 = time.perf_counter()
        for _ in range(n):
            one()
        w1 = time.perf_counter()
        u1, s1 = thread_cpu()
    n = max(n, 1)
    return {"user_us": (u1 - u0) / n * 1e6, "sys_us": (s1 - s0) / n * 1e6,
            "python_user_us": (u1 - u0 - m.user) / n * 1e6, "python_sys_us": (s1 - s0 - m.sys) / n * 1e6,
            "wall_us": (w1 - w0) / n * 1e6, "calls": calls}


def sessions(n: int) -> dict:
    for _ in range(2):
        isolate.Session("agent").close()
    s = isolate.Session("agent")
    s.close()
    calls = count_calls(lambda: isolate.Session("agent").close())
    user = walls = 0.0
    with SpawnMeter() as m:
        for _ in range(n):
            u0, _s0 = thread_cpu()
            w0 = time.perf_counter()
            s = isolate.Session("agent")
            w1 = time.perf_counter()
            u1, _s1 = thread_cpu()
            s.close()
            user += u1 - u0
            walls += w1 - w0
    n = max(n, 1)
    return {"start_user_us": user / n * 1e6, "start_python_user_us": (user - m.user) / n * 1e6,
            "start_wall_us": walls / n * 1e6, "calls_start_and_close": calls}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--profile", default="strict")
    ap.add_argument("--session", type=int, default=0)
    ap.add_argument("--cprofile", action="store_true")
    a = ap.parse_args(argv)
    if a.cprofile:
        import cProfile
        import pstats

        for _ in range(20):
            isolate.run(["/bin/true"], profile=a.profile)
        pr = cProfile.Profile()
        pr.enable()
        for _ in range(a.n):
            isolate.run(["/bin/true"], profile=a.profile)
        pr.disable()
        pstats.Stats(pr).sort_stats("tottime").print_stats(30)
        return 0
    if a.n:
        print("launch", a.profile, launches(a.n, a.profile))
    if a.session:
        print("session", sessions(a.session))
    return 0


if __name__ == "__main__":
    sys.exit(main())
