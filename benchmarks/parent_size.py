"""2. Launch cost against the size of the parent.

For each size, a fresh child Python process (this module with --child) allocates a
bytearray of that size and writes one byte per 4096 so that every page is resident.
It then measures launches of the static program in two interleaved blocks:

* isolate (default profile) and subprocess.run, round-robin;
* isolate, os.fork + os.execv + waitpid and subprocess.run, round-robin.

Two blocks, because forking a big parent slows whatever launch comes right after it
(the first block is the cost of a launch, the second shows how fork grows and how
much it disturbs its neighbours). The child writes its samples to a JSON file and
exits, so its memory is freed before the next size starts.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import sys
import tempfile
import time

from . import phases, programs
from .stats import Ratio, Summary, interleaved, median, ratio_across_runs

MB = 1 << 20
ISOLATE = "isolate (default profile)"                    # first block
SUBPROCESS = "subprocess.run"                            # first block
FORK = "os.fork + os.execv + waitpid"                    # second block, and:
ISOLATE_NEAR_FORK = "isolate, interleaved with fork"
SUBPROCESS_NEAR_FORK = "subprocess.run, interleaved with fork"
METHODS = [ISOLATE, SUBPROCESS, FORK]
SERIES = [ISOLATE, SUBPROCESS, FORK, ISOLATE_NEAR_FORK, SUBPROCESS_NEAR_FORK]
PAGE = 4096


@dataclasses.dataclass
class SizeResult:
    size_mb: int
    rss_mb: list[float]                   # measured VmRSS of each child after touching
    touch_seconds: list[float]            # time each child took to allocate and touch
    wall_ms: dict[str, list[float]]       # series -> samples (every pass)
    pass_medians: dict[str, list[float]]  # series -> median of each pass
    phase_samples: list[dict]             # isolate's phase deltas per launch

    def summary(self, method: str) -> Summary:
        return Summary.of(self.wall_ms[method])

    @property
    def isolate_phases(self) -> phases.Breakdown:
        return phases.Breakdown.of(self.phase_samples, self.wall_ms[ISOLATE])


@dataclasses.dataclass
class ParentSizeResult:
    sizes: dict[int, SizeResult]          # size in MB -> result
    skipped: dict[int, str]               # size in MB -> why
    rounds: dict[int, int]                # rounds of the block with fork, per size, over all passes
    rounds_alone: int                     # rounds of the block without fork, per size, over all passes
    passes: int
    seconds: float

    def base(self) -> int:
        return min(self.sizes)

    def ratio_to_base(self, size_mb: int, method: str) -> Ratio:
        """median at this size / median at the smallest size; spread over the passes."""
        a, b = self.sizes[size_mb], self.sizes[self.base()]
        return ratio_across_runs(a.wall_ms[method], a.pass_medians[method], b.wall_ms[method],
                                 b.pass_medians[method])

    def ratio_between(self, size_mb: int, method: str, to: str) -> Ratio:
        """method / `to` at one size: interleaved in the same process, so paired."""
        w = self.sizes[size_mb].wall_ms
        return Ratio.of(w[method], w[to])


def _mem_available_mb() -> float:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 1024
    return float("inf")


def _run_child(size_mb: int, rounds_alone: int, rounds_fork: int, warmup: int, prog: str) -> dict:
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        cmd = [sys.executable, "-m", "benchmarks.parent_size", "--child", "--size-mb", str(size_mb),
               "--rounds-alone", str(rounds_alone), "--rounds-fork", str(rounds_fork), "--warmup", str(warmup),
               "--prog", prog, "--result", out.name]
        r = subprocess.run(cmd, cwd=programs.REPO, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                           stderr=subprocess.PIPE, text=True)
        if r.returncode != 0:
            raise RuntimeError(f"the child failed ({r.returncode}): {r.stderr.strip()[-300:]}")
        with open(out.name) as f:
            return json.load(f)


def _share(total: int, passes: int, p: int) -> int:
    return total // passes + (1 if p < total % passes else 0)


def measure(rounds: dict[int, int], rounds_alone: int, passes: int = 1, warmup: int = 3,
            log=print) -> ParentSizeResult:
    """Per size: `rounds_alone` rounds without fork and `rounds[size_mb]` with it, split
    over `passes` passes through the sizes.

    The sizes cannot share a process, so they are interleaved at the process level
    instead: 50 MB, 1 GB, ..., 50 MB, 1 GB, ... with one fresh child per size and pass.
    """
    t_begin = time.monotonic()
    prog = str(programs.build_noop())
    sizes: dict[int, SizeResult] = {}
    skipped: dict[int, str] = {}
    for p in range(passes):
        for size_mb, total in rounds.items():
            if size_mb in skipped:
                continue
            n_alone, n_fork = _share(rounds_alone, passes, p), _share(total, passes, p)
            avail = _mem_available_mb()
            if avail < size_mb + 1024:
                skipped[size_mb] = f"only {avail:.0f} MB of memory available"
                log(f"  parent size: skipping {size_mb} MB: {skipped[size_mb]}")
                continue
            log(f"  parent size: pass {p + 1}/{passes}, {size_mb} MB parent, {n_alone} + {n_fork} rounds")
            try:
                data = _run_child(size_mb, n_alone, n_fork, warmup, prog)
            except RuntimeError as e:
                skipped[size_mb] = str(e)
                log(f"  parent size: {size_mb} MB: {e}")
                continue
            s = sizes.setdefault(size_mb, SizeResult(size_mb, [], [], {m: [] for m in SERIES},
                                                     {m: [] for m in SERIES}, []))
            s.rss_mb.append(data["rss_mb"])
            s.touch_seconds.append(data["touch_seconds"])
            for m in SERIES:
                s.wall_ms[m].extend(data["wall_ms"][m])
                s.pass_medians[m].append(median(data["wall_ms"][m]))
            s.phase_samples.extend(data["isolate_phases"])
    for size_mb in skipped:
        sizes.pop(size_mb, None)
    return ParentSizeResult(sizes, skipped, dict(rounds), rounds_alone, passes, time.monotonic() - t_begin)


# ---- the child process ------------------------------------------------------------
def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def child_main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--child", action="store_true", required=True)
    ap.add_argument("--size-mb", type=int, required=True)
    ap.add_argument("--rounds-alone", type=int, required=True)
    ap.add_argument("--rounds-fork", type=int, required=True)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--prog", required=True)
    ap.add_argument("--result", required=True)
    a = ap.parse_args(argv)

    t0 = time.perf_counter()
    ballast = bytearray(a.size_mb * MB)
    ballast[::PAGE] = b"\x01" * len(range(0, len(ballast), PAGE))  # one byte per page: all resident
    touch = time.perf_counter() - t0

    profile, kwargs, _ = programs.prepare_isolate(a.prog, "default")
    alone = interleaved({
        ISOLATE: programs.isolate_popen_phases(a.prog, profile, **kwargs),
        SUBPROCESS: programs.subprocess_run(a.prog),
    }, a.rounds_alone, warmup=a.warmup)
    near_fork = interleaved({
        ISOLATE_NEAR_FORK: programs.isolate_popen_phases(a.prog, profile, **kwargs),
        FORK: programs.fork_exec(a.prog),
        SUBPROCESS_NEAR_FORK: programs.subprocess_run(a.prog),
    }, a.rounds_fork, warmup=a.warmup)
    result = {
        "size_mb": a.size_mb,
        "rss_mb": _rss_mb(),
        "touch_seconds": touch,
        "wall_ms": alone.wall_ms | near_fork.wall_ms,
        "isolate_phases": [phases.deltas(t) for t in alone.extras[ISOLATE]],
    }
    with open(a.result, "w") as f:
        json.dump(result, f)
    del ballast
    return 0


if __name__ == "__main__":
    sys.exit(child_main())
