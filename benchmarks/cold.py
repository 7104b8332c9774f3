"""The cold launch against subprocess.run, side by side, and where its time goes.

    .venv/bin/python -m benchmarks.cold [--rounds N] [--seconds S] [--throughput]

subprocess.run, isolate.run(profile="default") and isolate.run(profile="strict") of the
same static no-op are called round-robin in one process (stats.interleaved: same
order every round, garbage collector paused), so that a busy machine slows all three
alike; the report is each median, each ratio to subprocess.run (median of the
medians, and the 10th-90th percentile of the per-round ratios), the targets, and the
median of every launch phase (Result.timings, plus `python` for what the call spends
outside the launch path: before it, and the wait and clean-up after it).

--throughput adds benchmarks.throughput's 1/2/8/32-thread launch rates.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

import isolate

from . import programs
from .stats import Ratio, interleaved, median

DEFAULT_TARGET = 1.4   # isolate.run(profile="default") <= 1.4x subprocess.run
STRICT_TARGET = 1.5    # isolate.run(profile="strict") <= 1.5x subprocess.run
TWO_THREADS = 1.8      # throughput from 2 threads >= 1.8x one thread (2 CPUs)


def _isolate(prog: str, name: str):
    profile, kwargs, note = programs.prepare_isolate(prog, name)
    if not isinstance(profile, str):
        profile = isolate.load_profile(profile)  # loaded once, as a caller launching often would
    argv = [prog]

    def call():
        r = isolate.run(argv, profile=profile, **kwargs)
        if r.returncode:
            raise RuntimeError(f"isolate.run({name}) exited with {r.returncode}")
        return r.timings
    return call, note


def phase_medians(timings: list[dict], walls: list[float]) -> dict[str, float]:
    """Median ms per phase: the gaps between the launch path's stamps, and `python`."""
    per: dict[str, list[float]] = {}
    for t, wall in zip(timings, walls):
        prev = 0.0
        for stamp, name in sorted((v, k) for k, v in t.items()):
            if name != "start":
                per.setdefault(name, []).append(stamp - prev)
            prev = stamp
        per.setdefault("python", []).append(wall - t.get("returned", prev))
    return {name: median(v) for name, v in per.items()}


def measure(rounds: int, seconds: float, log=print) -> dict:
    prog = str(programs.build_noop())
    argv = [prog]

    def sub():
        if subprocess.run(argv).returncode:
            raise RuntimeError("subprocess.run failed")

    calls = {"subprocess.run": sub}
    for name in ("default", "strict"):
        calls[name], note = _isolate(prog, name)
        if note:
            log(f"  note: {note}")
    samples = interleaved(calls, rounds, warmup=20, deadline=time.monotonic() + seconds)
    out = {"rounds": len(samples.wall_ms["subprocess.run"]), "median_ms": {}, "ratio": {}, "phases": {}}
    for name in calls:
        out["median_ms"][name] = median(samples.wall_ms[name])
        if name != "subprocess.run":
            out["ratio"][name] = samples.ratio(name, "subprocess.run")
            out["phases"][name] = phase_medians(samples.extras[name], samples.wall_ms[name])
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.cold", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=2000)
    ap.add_argument("--seconds", type=float, default=120.0, help="stop early after this long")
    ap.add_argument("--throughput", action="store_true", help="also the 1/2/8/32-thread launch rates")
    args = ap.parse_args(argv)
    os.chdir(programs.REPO)
    print(f"load average at start: {os.getloadavg()[0]:.2f} ({os.cpu_count()} CPUs)")
    res = measure(args.rounds, args.seconds)
    print(f"{res['rounds']} rounds, interleaved")
    for name, ms in res["median_ms"].items():
        line = f"  {name:15s} {ms:7.3f} ms"
        if name in res["ratio"]:
            r: Ratio = res["ratio"][name]
            target = DEFAULT_TARGET if name == "default" else STRICT_TARGET
            line += (f"   x{r.value:.2f} subprocess.run (per round p10-p90 {r.p10:.2f}-{r.p90:.2f}); "
                     f"target <= {target}: {'MET' if r.value <= target else 'NOT MET'}")
        print(line)
    for name, ph in res["phases"].items():
        print(f"  phases of {name} (median ms): " + ", ".join(f"{k} {v:.3f}" for k, v in ph.items()))
    if args.throughput:
        from . import throughput  # noqa: PLC0415 - only with --throughput
        t = throughput.measure(200, 5, deadline=time.monotonic() + args.seconds, log=lambda *a: None)
        for n, c in t.configs.items():
            extra = "" if n == 1 else f"  x{t.ratio(n).value:.2f} one thread"
            print(f"  {n:2d} threads: {c.rate.median:6.0f} launches/s{extra}")
        two = t.ratio(2).value
        print(f"  2 threads >= {TWO_THREADS}x one: {'MET' if two >= TWO_THREADS else 'NOT MET'} ({two:.2f}); "
              f"32 threads no worse than 8: "
              f"{'MET' if t.configs[32].rate.median >= t.configs[8].rate.median else 'NOT MET'}")
    print(f"load average at end: {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
