"""Fuzzing engines sandboxed (isolate.fuzz: one sandbox of the fuzz profile per job) against
the same engine unsandboxed, side by side in one run, same target and seed.

    .venv/bin/python -m benchmarks.fuzz [--time 15] [--rounds 1] [--out docs/performance.md]

Models: libFuzzer in-process (clang -fsanitize=fuzzer), AFL++ forkserver (afl-clang-fast,
input file @@), AFL++ persistent (afl-clang-fast -fsanitize=fuzzer: libAFLDriver, shared-memory
input). The unsandboxed run is the very command line the job runs (engines.command), started
with subprocess; the sandboxed one is isolate.fuzz.run_fuzz. Rounds interleave the two; the
table gives the median exec/s and the ratio. With --out the section "Fuzzing" of that file
(between <!-- fuzz:begin --> and <!-- fuzz:end -->) is replaced.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

from isolate import fuzz
from isolate.fuzz import engines, jobs

BEGIN, END = "<!-- fuzz:begin -->", "<!-- fuzz:end -->"

TARGET = r"""
#include <stdint.h>
#include <stddef.h>
#include <stdio.h>
int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n) {
  volatile unsigned s = 0;
  for (size_t i = 0; i < n; i++) { if (d[i] == 'a') s += 1; else if (d[i] == 'b') s += 2; else s ^= d[i]; }
  return 0;
}
#ifdef FILE_MAIN
int main(int argc, char **argv) {
  uint8_t buf[4096]; FILE *f = fopen(argv[1], "rb"); if (!f) return 1;
  size_t n = fread(buf, 1, sizeof buf, f); fclose(f); return LLVMFuzzerTestOneInput(buf, n);
}
#endif
"""

MODELS = (
    ("libFuzzer in-process", "libfuzzer", ["clang", "-O1", "-fsanitize=fuzzer"], []),
    ("AFL++ forkserver", "afl", ["afl-clang-fast", "-O1", "-DFILE_MAIN"], ["@@"]),
    ("AFL++ persistent", "afl", ["afl-clang-fast", "-O1", "-fsanitize=fuzzer"], []),
)


def build(d: str) -> dict:
    src = os.path.join(d, "t.c")
    with open(src, "w") as f:
        f.write(TARGET)
    out = {}
    for name, _engine, cc, _args in MODELS:
        exe = os.path.join(d, name.split()[0].replace("+", "p") + ("_" + name.split()[-1]))
        subprocess.run([*cc, src, "-o", exe], check=True, capture_output=True,
                       env={**os.environ, "AFL_QUIET": "1"})
        out[name] = exe
    return out


def unsandboxed(engine: str, exe: str, args: list, seeds: str, time_s: float) -> float:
    job_dir = tempfile.mkdtemp(prefix="bench-fuzz-host-")
    spec = engines.command(engine, exe, args, seeds=seeds, job_dir=job_dir, time_s=time_s, timeout_s=5,
                           rss_limit_mb=2048)
    argv = spec.argv + (["-seed=1"] if engine == "libfuzzer" else [])
    if engine == "afl":
        argv = argv[:1] + ["-s", "1"] + argv[1:]
    stats = engines.Stats()
    p = subprocess.run(argv, env=jobs.environment(spec.env), stdin=subprocess.DEVNULL, capture_output=True,
                       text=True, errors="replace", timeout=time_s + 60)
    for line in (p.stdout + p.stderr).splitlines():
        engines.parse_line(engine, line, stats)
    if engine == "afl":
        engines.read_afl_stats(job_dir, stats)
    return stats.exec_per_s


def sandboxed(engine: str, exe: str, args: list, seeds: str, time_s: float) -> float:
    out = tempfile.mkdtemp(prefix="bench-fuzz-out-")
    s = fuzz.run_fuzz(exe, args, engine=engine, corpus=seeds, out=out, time_s=time_s, timeout_s=5)
    return s["jobs"][0]["exec_per_s"]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--time", type=float, default=15.0)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--out")
    a = ap.parse_args(argv)
    d = tempfile.mkdtemp(prefix="bench-fuzz-")
    exes = build(d)
    seeds = os.path.join(d, "seeds")
    os.makedirs(seeds)
    with open(os.path.join(seeds, "s"), "wb") as f:
        f.write(b"abc")
    rows = []
    for name, engine, _cc, args in MODELS:
        host, box = [], []
        for _ in range(a.rounds):
            host.append(unsandboxed(engine, exes[name], args, seeds, a.time))
            box.append(sandboxed(engine, exes[name], args, seeds, a.time))
        h, b = statistics.median(host), statistics.median(box)
        rows.append((name, h, b, b / h if h else 0.0))
        print(f"{name:22} unsandboxed {h:12,.0f}  sandboxed {b:12,.0f}  ratio {rows[-1][3]:.2f}", flush=True)
    load = os.getloadavg()[0]
    lines = [BEGIN, "## Fuzzing", "",
             f"`python -m benchmarks.fuzz --time {a.time:g} --rounds {a.rounds}` on {platform.node()} "
             f"({os.cpu_count()} CPUs, load {load:.1f} at the end): exec/s of one job, the same target and seed, "
             "the engine unsandboxed and in one sandbox of the `fuzz` profile (isolate.fuzz.run_fuzz).", "",
             "| model | unsandboxed exec/s | sandboxed exec/s | ratio |", "|---|---|---|---|"]
    lines += [f"| {n} | {h:,.0f} | {b:,.0f} | {r:.2f} |" for n, h, b, r in rows]
    lines += ["", END]
    text = "\n".join(lines) + "\n"
    if a.out:
        doc = open(a.out).read() if os.path.exists(a.out) else ""
        if BEGIN in doc and END in doc:
            doc = doc[:doc.index(BEGIN)] + text + doc[doc.index(END) + len(END) + 1:]
        else:
            doc = doc.rstrip("\n") + "\n\n" + text
        with open(a.out, "w") as f:
            f.write(doc)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
