"""Triage replay rate: replays/s of a small crashing input (issue 12's goal: >= 200/s).

    .venv/bin/python -m benchmarks.triage [--inputs 100] [--runs 3] [--rounds 3]

Builds tests/fuzz/planted.c with clang (-fsanitize=fuzzer,address,undefined), makes
--inputs distinct inputs that all hit the same heap-buffer-overflow WRITE, and times
isolate.fuzz.triage.triage over them (each replayed --runs times, each replay a fresh
sandbox, symbolized, parsed, merged into one crash, recorded in SQLite). Beside it, the
same replays unsandboxed (subprocess.run, the same environment, the same parallelism) and
sandboxed without the triage around it (a WarmPool as triage uses, and isolate.run cold):
where the time goes.
"""

from __future__ import annotations

import argparse
import concurrent.futures
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
from isolate.fuzz import triage

ROOT = Path(__file__).resolve().parent.parent


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


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--inputs", type=int, default=100)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as d:
        exe = build(d)
        ind = os.path.join(d, "in")
        os.mkdir(ind)
        files = []
        for i in range(a.inputs):
            p = os.path.join(ind, f"crash-{i}")
            Path(p).write_bytes(b"HW" + str(i).encode())
            files.append(p)
        n = a.inputs * a.runs
        env = dict(os.environ, **triage.sanitizer_env(None))  # as triage: symbolized afterwards, once per address
        workers = triage.REPLAY_WORKERS
        rates = {"triage (sandboxed, parsed, merged, recorded)": [], "WarmPool.run only": [],
                 "isolate.run only": [], "subprocess.run": []}
        cpu = {k: [] for k in rates}   # ms of CPU (this process and its children) per replay
        for r in range(a.rounds):
            out = os.path.join(d, f"out{r}")
            t, c = time.perf_counter(), _cpu()
            crashes = triage.triage(exe, [], files, out, engine="libfuzzer", runs=a.runs)
            rates["triage (sandboxed, parsed, merged, recorded)"].append(n / (time.perf_counter() - t))
            cpu["triage (sandboxed, parsed, merged, recorded)"].append((_cpu() - c) / n * 1000)
            assert len(crashes) == 1 and crashes[0]["reproduced"] == n, crashes
            prof = isolate.load_profile(triage.replay_profile(None, [d], [], triage.sanitizer_env(None), 3072))
            warm = isolate.WarmPool(prof, size=workers, cwd="/tmp")

            def pooled(p):
                return warm.run([exe, "-timeout=25", "-rss_limit_mb=2048", p], capture_output=True,
                                cwd="/tmp").returncode

            def sandboxed(p):
                return isolate.run([exe, "-timeout=25", "-rss_limit_mb=2048", p], profile=prof,
                                   capture_output=True, cwd="/tmp").returncode

            def plain(p):
                return subprocess.run([exe, "-timeout=25", "-rss_limit_mb=2048", p], env=env,
                                      capture_output=True).returncode
            for label, fn in (("WarmPool.run only", pooled), ("isolate.run only", sandboxed),
                              ("subprocess.run", plain)):
                t, c = time.perf_counter(), _cpu()
                with concurrent.futures.ThreadPoolExecutor(workers) as pool:
                    codes = list(pool.map(fn, files * a.runs))
                rates[label].append(n / (time.perf_counter() - t))
                cpu[label].append((_cpu() - c) / n * 1000)
                assert all(c != 0 for c in codes), set(codes)
            warm.close()
        print(f"{n} replays of a 3-byte heap-buffer-overflow input, {os.cpu_count()} CPUs, load "
              f"{os.getloadavg()[0]:.1f}, {a.rounds} rounds (median, min-max):")
        for label, v in rates.items():
            print(f"  {label:48} {statistics.median(v):7.1f} replays/s  ({min(v):.1f}-{max(v):.1f}), "
                  f"{statistics.median(cpu[label]):5.1f} ms CPU per replay")
        print(f"  ({os.cpu_count()} CPUs / the unsandboxed CPU per replay = the most any replayer gets here: "
              f"{(os.cpu_count() or 1) * 1000 / statistics.median(cpu['subprocess.run']):.0f} replays/s)")


if __name__ == "__main__":
    main()
