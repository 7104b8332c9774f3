"""The whole benchmark suite, one command:

    .venv/bin/python -m benchmarks.run            # full run, a few minutes
    .venv/bin/python -m benchmarks.run --quick    # smoke run, well under a minute
    .venv/bin/python -m benchmarks.run --out DIR  # write DIR/performance.md and DIR/perf/*.png

By default it writes docs/performance.md and docs/perf/*.png.
"""

from __future__ import annotations

import argparse
import datetime
import os
import shlex
import sys
import time
from pathlib import Path

from isolate.launch import net

from . import cli, fuzz, latency, mounts, netpool, netproxy, parent_size, phases, programs, report, targets, throughput
from . import triage as triage_bench

# The full run: about five minutes on a quiet 2-CPU machine; the *_seconds caps stop a
# measurement early (with fewer rounds, reported) when the machine is much slower.
FULL = {
    "latency_rounds": 3000, "latency_seconds": 180,
    "phases_rounds": 2000, "phases_seconds": 60,
    "netpool_rounds": 2000, "netpool_seconds": 40,
    "throughput_launches": 400, "throughput_repetitions": 15, "throughput_seconds": 120,
    "parent_rounds": {50: 600, 1024: 240, 4096: 120, 8192: 60}, "parent_rounds_alone": 600, "parent_passes": 3,
    "mounts_rounds": 900, "mounts_passes": 3,
    "cli_passes": 5, "cli_runs": 40, "cli_rounds": 200,
    "fuzz_time": 5, "fuzz_rounds": 5,
    "netproxy_rounds": 60,
    "triage_inputs": 100, "triage_rounds": 3,
    "warmup": 5,
}
# A smoke run: few iterations, and only the 50 MB and 1 GB parents (touching 8 GB alone
# takes ten seconds or more on a busy machine), so that it stays well below a minute.
QUICK = {
    "latency_rounds": 20, "latency_seconds": 15,
    "phases_rounds": 20, "phases_seconds": 10,
    "netpool_rounds": 20, "netpool_seconds": 5,
    "throughput_launches": 64, "throughput_repetitions": 1, "throughput_seconds": 10,
    "parent_rounds": {50: 8, 1024: 4}, "parent_rounds_alone": 20, "parent_passes": 1,
    "mounts_rounds": 12, "mounts_passes": 1,
    "cli_passes": 1, "cli_runs": 5, "cli_rounds": 5,
    "fuzz_time": 1, "fuzz_rounds": 1,
    "netproxy_rounds": 5,
    "triage_inputs": 10, "triage_rounds": 1,
    "warmup": 1,
}


def _log(msg: str):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def _command(argv: list[str]) -> str:
    exe = Path(sys.executable)
    try:
        shown = str(exe.relative_to(programs.REPO)) if exe.is_relative_to(programs.REPO) else str(exe)
    except ValueError:
        shown = str(exe)
    return shlex.join([shown, "-m", "benchmarks.run", *argv])


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    ap = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="few iterations: a smoke run (< 60 s)")
    ap.add_argument("--out", type=Path, default=programs.REPO / "docs",
                    help="directory for performance.md and perf/*.png [docs/]")
    args = ap.parse_args(argv)
    out_dir = args.out.resolve()
    os.chdir(programs.REPO)  # the sandboxes' working directory; the build dir is relative to it
    opts = QUICK if args.quick else FULL
    started = datetime.datetime.now(datetime.timezone.utc)
    t0 = time.monotonic()
    load_start = os.getloadavg()
    info = report.machine_info()
    _log(f"{'quick' if args.quick else 'full'} run; static program: {programs.build_noop()}")

    res = targets.Results()
    now = time.monotonic
    _log("launch latency")
    res.latency = latency.measure(opts["latency_rounds"], warmup=opts["warmup"],
                                  deadline=now() + opts["latency_seconds"], log=_log)
    _log("phases")
    res.phases = phases.measure(opts["phases_rounds"], warmup=opts["warmup"],
                                deadline=now() + opts["phases_seconds"], log=_log)
    _log("network namespace pool")
    res.netpool = netpool.measure(opts["netpool_rounds"], warmup=opts["warmup"],
                                  deadline=now() + opts["netpool_seconds"], log=_log)
    _log("throughput")
    res.throughput = throughput.measure(opts["throughput_launches"], opts["throughput_repetitions"],
                                        deadline=now() + opts["throughput_seconds"], log=_log)
    _log("parent size")
    res.parent_size = parent_size.measure(opts["parent_rounds"], opts["parent_rounds_alone"],
                                          passes=opts["parent_passes"],
                                          warmup=min(opts["warmup"], 3), log=_log)
    _log("mount table")
    res.mounts = mounts.measure(opts["mounts_rounds"], passes=opts["mounts_passes"], warmup=min(opts["warmup"], 3),
                                log=_log)
    _log("command line against its peers (hyperfine)")
    res.cli = cli.measure(passes=opts["cli_passes"], runs=opts["cli_runs"], warmup=min(opts["warmup"], 3),
                          rounds=opts["cli_rounds"], log=_log)
    _log("fuzzing engines")
    res.fuzz = fuzz.measure(opts["fuzz_time"], opts["fuzz_rounds"], log=_log)
    _log("network allowlist (a request through the proxy and direct)")
    res.netproxy = netproxy.measure_all(opts["netproxy_rounds"], log=_log)
    _log("fuzz triage replays")
    res.triage = triage_bench.measure(opts["triage_inputs"], 3, opts["triage_rounds"], log=_log)
    pool = net.pool()
    res.netns_stats_end = dict(pool.stats) if pool is not None else None

    elapsed = time.monotonic() - t0
    path = report.write(res, out_dir, info, _command(argv), elapsed, opts, started, load_start, os.getloadavg())
    _log(f"wrote {path} and {out_dir / 'perf'}/*.png in {time.monotonic() - t0:.0f} s")
    for t in targets.evaluate(res):
        _log(f"{t.status:>13}  {t.goal}: {t.measured}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
