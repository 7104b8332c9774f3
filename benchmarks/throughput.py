"""4. Throughput: launches per second from several threads of one parent.

Each configuration (1, 2, 8, 32 threads) launches the static program a fixed number
of times with the default profile, the launches split evenly over the threads, all
threads released together. The configurations are interleaved round-robin and
repeated; a figure is the median over the repetitions. Every launch also records
its wall time and phase timings, to show which phase grows under concurrency.
"""

from __future__ import annotations

import dataclasses
import gc
import os
import resource
import threading
import time

import isolate

from . import phases, programs
from .stats import Ratio, Summary

THREADS = [1, 2, 8, 32]


@dataclasses.dataclass
class Config:
    threads: int
    rates: list[float]                    # launches/s, one per repetition
    walls: list[float]                    # per-launch wall time, ms (all repetitions)
    cpu_busy: list[float]                 # CPU time used / (wall time x CPUs), per repetition
    breakdown: phases.Breakdown           # per-launch phases (all repetitions)

    @property
    def rate(self) -> Summary:
        return Summary.of(self.rates)


@dataclasses.dataclass
class ThroughputResult:
    launches: int                         # per configuration and repetition
    repetitions: int
    configs: dict[int, Config]
    cpus: int
    seconds: float

    def ratio(self, threads: int) -> Ratio:
        """Throughput with `threads` over throughput with one thread (paired by repetition)."""
        return Ratio.of(self.configs[threads].rates, self.configs[1].rates)


def _cpu_seconds() -> float:
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def _one_config(prog: str, threads: int, launches: int, profile, kwargs: dict):
    """Run `launches` launches over `threads` threads; (wall s, cpu s, [(wall ms, timings)])."""
    shares = [launches // threads + (1 if i < launches % threads else 0) for i in range(threads)]
    records: list[list] = [[] for _ in range(threads)]
    errors: list[BaseException] = []
    start = threading.Barrier(threads + 1)
    clock = time.perf_counter_ns

    def worker(i: int):
        out = records[i]
        argv = [prog]
        start.wait()
        try:
            for _ in range(shares[i]):
                t0 = clock()
                r = isolate.run(argv, profile=profile, check=True, **kwargs)
                out.append(((clock() - t0) / 1e6, r.timings))
        except BaseException as e:  # noqa: BLE001 - reported after join
            errors.append(e)

    pool = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(threads)]
    for t in pool:
        t.start()
    cpu0, t0 = _cpu_seconds(), time.perf_counter()
    start.wait()
    for t in pool:
        t.join()
    wall, cpu = time.perf_counter() - t0, _cpu_seconds() - cpu0
    if errors:
        raise errors[0]
    return wall, cpu, [rec for per_thread in records for rec in per_thread]


def measure(launches: int, repetitions: int, deadline: float | None = None, log=print) -> ThroughputResult:
    t_begin = time.monotonic()
    prog = str(programs.build_noop())
    profile, kwargs, _ = programs.prepare_isolate(prog, "default")
    cpus = len(os.sched_getaffinity(0))
    raw = {n: {"rates": [], "cpu": [], "records": []} for n in THREADS}
    log(f"  throughput: {launches} launches x {THREADS} threads, {repetitions} repetitions")
    _one_config(prog, 2, min(launches, 20), profile, kwargs)  # warm-up
    gc.collect()
    gc.disable()
    try:
        for rep in range(repetitions):
            for n in THREADS:  # interleaved: 1, 2, 8, 32, 1, 2, 8, 32, ...
                wall, cpu, records = _one_config(prog, n, launches, profile, kwargs)
                raw[n]["rates"].append(launches / wall)
                raw[n]["cpu"].append(cpu / (wall * cpus))
                raw[n]["records"].extend(records)
            if deadline is not None and rep >= 1 and time.monotonic() > deadline:
                break
    finally:
        gc.enable()
    configs = {}
    for n, d in raw.items():
        walls = [w for w, _ in d["records"]]
        per_launch = [phases.deltas(t, wall_ms=w) for w, t in d["records"]]
        configs[n] = Config(n, d["rates"], walls, d["cpu"], phases.Breakdown.of(per_launch, walls))
    return ThroughputResult(launches, len(raw[1]["rates"]), configs, cpus, time.monotonic() - t_begin)




def main(argv=None) -> int:
    """python -m benchmarks.throughput [--launches N] [--repetitions R]: rates, ratios, CPU
    per launch and the phases, for a quick side-by-side look (the full benchmark is
    benchmarks.run)."""
    import argparse
    ap = argparse.ArgumentParser(prog="python -m benchmarks.throughput")
    ap.add_argument("--launches", type=int, default=200)
    ap.add_argument("--repetitions", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=None)
    ap.add_argument("--phases", action="store_true", help="also each phase's median per configuration")
    args = ap.parse_args(argv)
    r = measure(args.launches, args.repetitions,
                deadline=None if args.seconds is None else time.monotonic() + args.seconds, log=lambda *a: None)
    print(f"{r.launches} launches x {r.repetitions} repetitions, {r.cpus} CPUs, {r.seconds:.0f} s, "
          f"load {os.getloadavg()[0]:.1f}")
    for n, c in r.configs.items():
        cpu_ms = sorted(b * r.cpus * 1e3 / rate for b, rate in zip(c.cpu_busy, c.rates))[len(c.rates) // 2]
        out = c.breakdown.phases.get(phases.OUTSIDE)
        print(f"  {n:2d} threads: {c.rate.median:6.0f}/s  x{r.ratio(n).value:.2f} of 1 "
              f"(pairs {r.ratio(n).p10:.2f}-{r.ratio(n).p90:.2f})  CPU busy "
              f"{sorted(c.cpu_busy)[len(c.cpu_busy) // 2] * 100:3.0f}%  CPU/launch {cpu_ms:.2f} ms  "
              f"wall {c.breakdown.total.median:.2f} ms  outside {out.median if out else 0:.2f} ms")
    if args.phases:
        names = r.configs[1].breakdown.order
        print("  phase medians, ms: " + "  ".join(f"{n:>8.8}" for n in names))
        for n, c in r.configs.items():
            print(f"  {n:2d} threads:        " + "  ".join(
                f"{c.breakdown.phases[p].median:8.3f}" if p in c.breakdown.phases else " " * 8 for p in names))
    print(f"  32 / 8 threads: x{Ratio.of(r.configs[32].rates, r.configs[8].rates).value:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
