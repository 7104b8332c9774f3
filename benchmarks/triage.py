"""Triage replay rate: replays/s of a small crashing input (issue 12's goal: >= 200/s).

    .venv/bin/python -m benchmarks.triage [--inputs 100] [--runs 3] [--rounds 3]

Builds tests/fuzz/planted.c with clang (-fsanitize=fuzzer,address,undefined), makes
--inputs distinct inputs that all hit the same heap-buffer-overflow WRITE, and times
isolate.fuzz.triage.triage over them (each replayed --runs times, each replay a fresh
sandbox, symbolized, parsed, merged into one crash, recorded in SQLite), once with the
replay shim (the default: LLVMFuzzerTestOneInput called without libFuzzer's start) and once
with libFuzzer's own main (replayer="libfuzzer"). Beside them, the same replays by both
replayers sandboxed without the triage around them (a WarmPool as triage uses; isolate.run
cold for the shim; the shim with ASan's own frame lookup instead of bare addresses and the
shim's module map) and unsandboxed (subprocess.run, the same environment, the same
parallelism): where the time goes. All variants run in every round, side by side.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import isolate
from isolate.fuzz import shim, triage

ROOT = Path(__file__).resolve().parent.parent
GOAL = 200.0   # replays/s (issue 12)

TRIAGE_SHIM = "triage(), shim replay (sandboxed, parsed, merged, recorded)"
TRIAGE_MAIN = "triage(), libFuzzer-main replay"
# triage() with a WarmPool instead of a cold isolate.run per replay (triage.WARM_REPLAYS),
# with the default REPLAY_WORKERS and with one per CPU (the defaults before): judge the rates
# on a quiet machine (with other work on the CPUs, more threads also take a larger share).
TRIAGE_SHIM_WARM = "triage(), shim replay, WarmPool sandboxes"
TRIAGE_SHIM_WARM_1X = "triage(), shim replay, WarmPool sandboxes, one worker per CPU"
POOL_SHIM = "WarmPool.run only, shim"
# The same shim replays with ASan's own frames (module+offset: its report refreshes its module
# list), i.e. without shim.RAW_FRAME_OPTIONS: what the bare addresses and the shim's map save.
POOL_SHIM_ASAN = "WarmPool.run only, shim, ASan's own frame lookup"
POOL_MAIN = "WarmPool.run only, libFuzzer main"
COLD_SHIM = "isolate.run (cold) only, shim"
PLAIN_SHIM = "subprocess.run (unsandboxed), shim"
PLAIN_MAIN = "subprocess.run (unsandboxed), libFuzzer main"
VARIANTS = (TRIAGE_SHIM, TRIAGE_SHIM_WARM, TRIAGE_SHIM_WARM_1X, TRIAGE_MAIN, POOL_SHIM, POOL_SHIM_ASAN, POOL_MAIN,
            COLD_SHIM, PLAIN_SHIM, PLAIN_MAIN)


@dataclasses.dataclass
class TriageResult:
    rates: dict          # variant -> [replays/s per round]
    cpu: dict            # variant -> [ms of CPU (this process and its children) per replay, per round]
    replays: int         # per variant and round
    rounds: int
    cpus: int
    load_end: float
    replayer: str        # what triage() reported for the shim rounds ("shim" if the shim ran)

    def rate(self, variant: str) -> float:
        return statistics.median(self.rates[variant])

    def cpu_ms(self, variant: str) -> float:
        return statistics.median(self.cpu[variant])

    def ceiling(self, variant: str) -> float:
        """CPUs / CPU per replay: the most replays/s this machine gives that variant."""
        return self.cpus * 1000 / self.cpu_ms(variant)


def _cpu() -> float:
    a, b = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return a.ru_utime + a.ru_stime + b.ru_utime + b.ru_stime


def build(d: str) -> str:
    clang = shutil.which("clang") or shutil.which("clang-14")
    if not clang:
        sys.exit("clang not found (scripts/install.sh installs clang-14)")
    exe = os.path.join(d, "planted")
    subprocess.run([clang, "-g", "-O1", "-fsanitize=fuzzer,address,undefined", "-fno-sanitize=object-size,null",
                    str(ROOT / "tests/fuzz/planted.c"), "-o", exe], check=True)
    return exe


def measure(inputs: int = 100, runs: int = 3, rounds: int = 3, log=None) -> TriageResult:
    with tempfile.TemporaryDirectory() as d:
        exe = build(d)
        ind = os.path.join(d, "in")
        os.mkdir(ind)
        files = []
        for i in range(inputs):
            p = os.path.join(ind, f"crash-{i}")
            Path(p).write_bytes(b"HW" + str(i).encode())
            files.append(p)
        n = inputs * runs
        workers = triage.REPLAY_WORKERS
        spec = shim.target_spec(exe, 25)
        assert spec.ok, spec.reason
        shim_copy = os.path.join(d, "isolate-replay.so")
        shutil.copy(shim.PATH, shim_copy)
        argv = [exe, "-timeout=25", "-rss_limit_mb=2048"]
        main_env = triage.sanitizer_env(None)   # as triage: symbolized afterwards, once per address
        shim_env = triage.shim_environment(main_env, shim_copy, spec, 2048)   # as triage() gives a shim replay
        rates = {k: [] for k in VARIANTS}
        cpu = {k: [] for k in VARIANTS}
        replayer = ""
        for r in range(rounds):
            prof = isolate.load_profile(triage.replay_profile(None, [d], [], main_env, 3072))
            warm = isolate.WarmPool(prof, size=workers, cwd="/tmp")
            box_shim_env = triage.shim_environment(warm.plan.environment(), shim_copy, spec, 2048)
            box_asan_env = {k: v.replace(":" + shim.RAW_FRAME_OPTIONS, "") for k, v in box_shim_env.items()}

            def pooled_shim(p):
                return warm.run(argv + [p], capture_output=True, cwd="/tmp", env=box_shim_env).returncode

            def pooled_shim_asan(p):
                return warm.run(argv + [p], capture_output=True, cwd="/tmp", env=box_asan_env).returncode

            def pooled_main(p):
                return warm.run(argv + [p], capture_output=True, cwd="/tmp").returncode

            def cold_shim(p):
                return isolate.run(argv + [p], profile=prof, capture_output=True, cwd="/tmp",
                                   env=box_shim_env).returncode

            def plain_shim(p):
                return subprocess.run(argv + [p], env=dict(os.environ, **shim_env), capture_output=True).returncode

            def plain_main(p):
                return subprocess.run(argv + [p], env=dict(os.environ, **main_env), capture_output=True).returncode

            def triaged(replayer_arg, replay_workers=workers, warm_replays=triage.WARM_REPLAYS):
                def go():
                    saved = triage.REPLAY_WORKERS, triage.WARM_REPLAYS
                    triage.REPLAY_WORKERS, triage.WARM_REPLAYS = replay_workers, warm_replays
                    try:
                        out = os.path.join(d, f"out-{replayer_arg}-{replay_workers}-{warm_replays}-{r}")
                        crashes = triage.triage(exe, [], files, out, engine="libfuzzer", runs=runs,
                                                replayer=replayer_arg)
                    finally:
                        triage.REPLAY_WORKERS, triage.WARM_REPLAYS = saved
                    assert len(crashes) == 1 and crashes[0]["reproduced"] == n, crashes
                    return crashes[0]["replayer"]
                return go

            def looped(fn):
                def go():
                    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
                        codes = list(pool.map(fn, files * runs))
                    assert all(c != 0 for c in codes), set(codes)
                return go

            order = [(TRIAGE_SHIM, triaged("auto")), (TRIAGE_SHIM_WARM, triaged("auto", warm_replays=True)),
                     (TRIAGE_SHIM_WARM_1X, triaged("auto", max(2, os.cpu_count() or 1), warm_replays=True)),
                     (TRIAGE_MAIN, triaged("libfuzzer")),
                     (POOL_SHIM, looped(pooled_shim)), (POOL_SHIM_ASAN, looped(pooled_shim_asan)),
                     (POOL_MAIN, looped(pooled_main)),
                     (COLD_SHIM, looped(cold_shim)), (PLAIN_SHIM, looped(plain_shim)),
                     (PLAIN_MAIN, looped(plain_main))]
            if r % 2:
                order.reverse()   # alternate, so that a drift of the load is shared out
            for label, go in order:
                t, c = time.perf_counter(), _cpu()
                out = go()
                rates[label].append(n / (time.perf_counter() - t))
                cpu[label].append((_cpu() - c) / n * 1000)
                if label == TRIAGE_SHIM:
                    replayer = out
            warm.close()
            if log:
                log(f"triage round {r + 1}/{rounds}: {rates[TRIAGE_SHIM][-1]:.0f} replays/s with the shim, "
                    f"{rates[TRIAGE_MAIN][-1]:.0f} with libFuzzer's main")
        return TriageResult(rates, cpu, n, rounds, os.cpu_count() or 1, os.getloadavg()[0], replayer)


def table(res: TriageResult) -> list[str]:
    lines = ["| | replays/s (median, min–max) | CPU per replay | CPUs / CPU per replay |", "|---|---|---|---|"]
    for label in VARIANTS:
        v = res.rates[label]
        lines.append(f"| {label} | {res.rate(label):.1f} ({min(v):.1f}–{max(v):.1f}) | {res.cpu_ms(label):.1f} ms | "
                     f"{res.ceiling(label):.0f}/s |")
    return lines


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--inputs", type=int, default=100)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args(argv)
    res = measure(a.inputs, a.runs, a.rounds)
    print(f"{res.replays} replays of a 3-byte heap-buffer-overflow input per variant, {res.cpus} CPUs, load "
          f"{res.load_end:.1f} at the end, {res.rounds} rounds side by side (triage() replayer: {res.replayer}):")
    print("\n".join(table(res)))
    print(f"goal {GOAL:.0f} replays/s: triage() with the shim {res.rate(TRIAGE_SHIM):.1f}/s -> "
          f"{'MET' if res.rate(TRIAGE_SHIM) >= GOAL else 'NOT MET'}; "
          f"{res.rate(TRIAGE_SHIM) / res.rate(TRIAGE_MAIN):.2f}x the libFuzzer-main triage")


if __name__ == "__main__":
    main()
