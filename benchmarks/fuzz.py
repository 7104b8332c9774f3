"""Fuzzing engines sandboxed (isolate.fuzz: one sandbox of the fuzz profile per job) against
the same engine unsandboxed, side by side in one run, same target, same seed, same command
line and environment.

    .venv/bin/python -m benchmarks.fuzz [--time 5] [--rounds 5]

Models: libFuzzer in-process (clang -fsanitize=fuzzer), AFL++ forkserver (afl-clang-fast,
input file @@), AFL++ persistent (afl-clang-fast -fsanitize=fuzzer: libAFLDriver, shared-memory
input). The unsandboxed run is the very command line and environment a job runs
(engines.command with -seed / -s fixed, jobs.environment), started with subprocess; the
sandboxed one is isolate.fuzz.run_fuzz with the same seed. exec/s on both sides is the
engine's executions over the engine process's wall time as measured here (libFuzzer's own
figure divides by whole seconds: 5 s or 6 s for a 5-second run). Rounds are short and
interleaved, the order alternating (unsandboxed first, then sandboxed first): the ratio is the
median of the per-round ratios, so that load from other work hits both sides alike. Beside
it, executions per CPU-second (user + system of the whole process tree) on each side, which
load does not move. `measure()` returns the rows; benchmarks.run puts them into
docs/performance.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from isolate import fuzz
from isolate.fuzz import engines, jobs

SEED = 1

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


def build(d: str, skip=()) -> dict:
    src = os.path.join(d, "t.c")
    with open(src, "w") as f:
        f.write(TARGET)
    out = {}
    for name, _engine, cc, _args in MODELS:
        if name in skip:
            continue
        exe = os.path.join(d, name.split()[0].replace("+", "p") + ("_" + name.split()[-1]))
        subprocess.run([*cc, src, "-o", exe], check=True, capture_output=True,
                       env={**os.environ, "AFL_QUIET": "1"})
        out[name] = exe
    return out


@dataclasses.dataclass
class Run:
    execs: int
    wall_s: float
    cpu_s: float

    @property
    def exec_per_s(self) -> float:
        return self.execs / self.wall_s if self.wall_s > 0 else 0.0

    @property
    def exec_per_cpu_s(self) -> float:
        return self.execs / self.cpu_s if self.cpu_s > 0 else 0.0


@dataclasses.dataclass
class Row:
    model: str
    host: list = dataclasses.field(default_factory=list)    # Run per round, unsandboxed
    box: list = dataclasses.field(default_factory=list)     # Run per round, sandboxed

    def _ratios(self, attr) -> list:
        return [getattr(b, attr) / getattr(h, attr) for h, b in zip(self.host, self.box) if getattr(h, attr)]

    @property
    def ratio(self) -> float:
        """Median over the rounds of sandboxed / unsandboxed exec/s."""
        r = self._ratios("exec_per_s")
        return statistics.median(r) if r else 0.0

    @property
    def ratio_range(self) -> tuple:
        r = self._ratios("exec_per_s")
        return (min(r), max(r)) if r else (0.0, 0.0)

    @property
    def cpu_ratio(self) -> float:
        """Median over the rounds of sandboxed / unsandboxed executions per CPU-second."""
        r = self._ratios("exec_per_cpu_s")
        return statistics.median(r) if r else 0.0

    def median(self, side: str, attr: str = "exec_per_s") -> float:
        runs = getattr(self, side)
        return statistics.median(getattr(x, attr) for x in runs) if runs else 0.0

    def as_dict(self) -> dict:
        return {"model": self.model, "unsandboxed_exec_per_s": round(self.median("host")),
                "sandboxed_exec_per_s": round(self.median("box")), "ratio": round(self.ratio, 3),
                "ratio_min": round(self.ratio_range[0], 3), "ratio_max": round(self.ratio_range[1], 3),
                "cpu_ratio": round(self.cpu_ratio, 3), "rounds": len(self.box)}


@dataclasses.dataclass
class FuzzResult:
    rows: list
    time_s: float
    rounds: int
    seconds: float
    cpus: int
    load_end: float
    missing: list = dataclasses.field(default_factory=list)   # models not run (engine not installed)


# The unsandboxed engine's parent: a child subreaper, so that the CPU time of every process
# of the engine's tree is counted, orphans too (afl-fuzz's forkserver can end before its last
# target child), as the sandbox's pid 1 counts them; it writes wall and CPU seconds to argv[1].
_REAPER = r"""
import ctypes, os, resource, sys, time
ctypes.CDLL(None).prctl(36, 1, 0, 0, 0)   # PR_SET_CHILD_SUBREAPER
t = time.monotonic()
pid = os.fork()
if pid == 0:
    os.execve(sys.argv[2], sys.argv[2:], os.environ)
os.waitpid(pid, 0)
wall = time.monotonic() - t
while True:
    try:
        os.wait()
    except ChildProcessError:
        break
ru = resource.getrusage(resource.RUSAGE_CHILDREN)
with open(sys.argv[1], "w") as f:
    f.write(f"{wall} {ru.ru_utime + ru.ru_stime}")
"""


def unsandboxed(engine: str, exe: str, args: list, seeds: str, time_s: float) -> Run:
    """The job's own command line and environment (engines.command, jobs.environment), no sandbox."""
    out = tempfile.mkdtemp(prefix="bench-fuzz-host-")
    try:
        job_dir = os.path.join(out, "jobs", "0")
        os.makedirs(job_dir)
        shared = os.path.join(out, "corpus" if engine == "libfuzzer" else "afl")
        os.makedirs(shared)
        spec = engines.command(engine, exe, args, seeds=seeds, job_dir=job_dir, time_s=time_s, timeout_s=5,
                               rss_limit_mb=2048, shared=shared, seed=SEED)
        stats = engines.Stats()
        times = os.path.join(out, "times")
        argv = [sys.executable, "-c", _REAPER, times, shutil.which(spec.argv[0]) or spec.argv[0], *spec.argv[1:]]
        p = subprocess.Popen(argv, env=jobs.environment(spec.env), stdin=subprocess.DEVNULL,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace",
                             cwd=job_dir)
        for line in p.stdout:
            engines.parse_line(engine, line, stats)
        p.wait()
        p.stdout.close()
        with open(times) as f:
            wall, cpu = (float(x) for x in f.read().split())
        if engine == "afl":
            engines.read_afl_stats(job_dir, stats, spec.stats_dir)
        return Run(stats.execs, wall, cpu)
    finally:
        shutil.rmtree(out, ignore_errors=True)


def sandboxed(engine: str, exe: str, args: list, seeds: str, time_s: float) -> Run:
    out = tempfile.mkdtemp(prefix="bench-fuzz-out-")
    try:
        s = fuzz.run_fuzz(exe, args, engine=engine, corpus=seeds, out=out, time_s=time_s, timeout_s=5, seed=SEED)
        j = s["jobs"][0]
        return Run(j["execs"], j["engine_s"], j["cpu_s"])
    finally:
        shutil.rmtree(out, ignore_errors=True)


def measure(time_s: float = 5.0, rounds: int = 5, log=lambda msg: None) -> FuzzResult:
    """Each model `rounds` times on both sides, interleaved, the order alternating."""
    t0 = time.monotonic()
    d = tempfile.mkdtemp(prefix="bench-fuzz-")
    try:
        missing = [name for name, engine, _cc, _a in MODELS if not engines.detect()[engine].found]
        exes = build(d, skip=missing)
        seeds = os.path.join(d, "seeds")
        os.makedirs(seeds)
        with open(os.path.join(seeds, "s"), "wb") as f:
            f.write(b"abc")
        rows = []
        for name, engine, _cc, args in MODELS:
            if name in missing:
                continue
            row = Row(name)
            for r in range(rounds):
                sides = [("host", unsandboxed), ("box", sandboxed)]
                for side, fn in (sides if r % 2 == 0 else sides[::-1]):
                    getattr(row, side).append(fn(engine, exes[name], args, seeds, time_s))
                log(f"fuzz {name} round {r + 1}/{rounds}: unsandboxed {row.host[-1].exec_per_s:,.0f} exec/s, "
                    f"sandboxed {row.box[-1].exec_per_s:,.0f} exec/s")
            rows.append(row)
        return FuzzResult(rows, time_s, rounds, time.monotonic() - t0, os.cpu_count() or 1, os.getloadavg()[0],
                          missing)
    finally:
        shutil.rmtree(d, ignore_errors=True)


def rows(time_s: float = 5.0, rounds: int = 5) -> list[dict]:
    """The exec/s table as dicts (model, unsandboxed/sandboxed exec/s, ratio, cpu_ratio, ...)."""
    return [r.as_dict() for r in measure(time_s, rounds).rows]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--time", type=float, default=5.0)
    ap.add_argument("--rounds", type=int, default=5)
    a = ap.parse_args(argv)
    res = measure(a.time, a.rounds, log=lambda m: print(m, file=sys.stderr, flush=True))
    print(f"{platform.node()}: {res.cpus} CPUs, load {res.load_end:.1f} at the end, {a.rounds} rounds of "
          f"{a.time:g} s, {res.seconds:.0f} s")
    for r in res.rows:
        lo, hi = r.ratio_range
        print(f"{r.model:22} unsandboxed {r.median('host'):12,.0f}  sandboxed {r.median('box'):12,.0f}  "
              f"ratio {r.ratio:.2f} ({lo:.2f}-{hi:.2f})  per CPU-second {r.cpu_ratio:.2f}")
    for m in res.missing:
        print(f"{m}: not measured (engine not installed)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
