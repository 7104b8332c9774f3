"""What a warm task costs its caller, measured with counts that depend little on load.

    .venv/bin/python -m benchmarks.warmcost [--rounds 300] [--profile strict] [--program static|true]

`isolate.WarmPool(profile).run([prog])` and `subprocess.run([prog])` of the same program,
interleaved (A, B, A, B, ...), the pool refilled after each task outside the timed window
(as benchmarks/latency.py does). Per call:

* `wall_ms`: median and 10th percentile of the call's wall time (load-dependent: on a
  shared machine every hand-over between processes may wait behind other work);
* `thread_cpu_us`: mean user + system CPU time of the calling thread
  (getrusage(RUSAGE_THREAD)): what the call itself runs in this thread, none of the
  program's, pid 1's, the zygote's or the refill thread's;
* `calls`: Python and C function calls seen by sys.setprofile in one call (a pass of its
  own: the hook is slow).

`strace -f -o FILE` around a loop of tasks gives the calling thread's system calls per
task (docs/warm-path.md has the figures).
"""

from __future__ import annotations

import argparse
import gc
import os
import resource
import subprocess
import sys
import time

import isolate

from . import programs
from .pycost import count_calls
from .stats import median, percentile


def thread_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_THREAD)
    return ru.ru_utime + ru.ru_stime


def measure(rounds: int, profile: str = "strict", program: str = "static") -> dict:
    prog = str(programs.build_noop()) if program == "static" else programs.TRUE
    pool, kwargs, _note = programs.warm_pool(prog, profile)
    argv = [prog]
    calls = {"subprocess.run": lambda: subprocess.run(argv),
             f"WarmPool({profile!r}).run": lambda: pool.run(argv, **kwargs)}
    wall = {k: [] for k in calls}
    cpu = {k: [] for k in calls}
    try:
        assert pool.wait_ready(30)
        counts = {k: count_calls(f) for k, f in calls.items()}
        assert pool.wait_ready(30)
        gc.collect()
        gc.disable()
        try:
            for r in range(rounds + 5):
                for k, f in calls.items():
                    c0, t0 = thread_cpu(), time.perf_counter_ns()
                    f()
                    t1, c1 = time.perf_counter_ns(), thread_cpu()
                    if not pool.wait_ready(30):
                        raise RuntimeError(f"the warm pool did not refill in 30 s: {pool.stats}")
                    if r >= 5:
                        wall[k].append((t1 - t0) / 1e6)
                        cpu[k].append((c1 - c0) * 1e6)
        finally:
            gc.enable()
    finally:
        pool.close()
    return {k: {"wall_ms": median(wall[k]), "wall_p10_ms": percentile(wall[k], 10),
                "thread_cpu_us": sum(cpu[k]) / len(cpu[k]), "calls": counts[k]} for k in calls}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.warmcost", description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=300)
    ap.add_argument("--profile", default="strict")
    ap.add_argument("--program", choices=("static", "true"), default="static")
    a = ap.parse_args(argv)
    if a.rounds < 1:
        ap.error("--rounds: must be at least 1")
    load = os.getloadavg()[0]
    out = measure(a.rounds, a.profile, a.program)
    print(f"{a.program}, {a.rounds} rounds, load {load:.1f} -> {os.getloadavg()[0]:.1f}")
    base = out["subprocess.run"]
    for k, v in out.items():
        print(f"  {k:28s} wall {v['wall_ms']:.3f} ms (p10 {v['wall_p10_ms']:.3f}, "
              f"{v['wall_ms'] / base['wall_ms']:.2f}x)  thread CPU {v['thread_cpu_us']:.0f} us "
              f"({v['thread_cpu_us'] / base['thread_cpu_us']:.2f}x)  calls {v['calls']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
