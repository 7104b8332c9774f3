"""3. Launch cost against the size of the caller's mount table.

For each count of extra mounts (0, 100, 500, 1000), a fresh child Python process
(this module with --child) runs under `unshare -m --propagation private`, so that
it has a mount namespace of its own that nobody else sees. Before measuring, it
mounts that many small tmpfs (size=16k) on directories under one directory in
/tmp, then counts the lines of /proc/self/mountinfo. It then measures, interleaved
round-robin, launches of the static program with the default profile:

* cold: isolate.Popen + wait, with the launch's phase timings;
* warm: a task handed to a WarmPool (made after the mounts, before the timed loop),
  WarmPool.Popen + wait end to end; after each task the runner waits, untimed,
  until the pool is full again; the preparations' own stamps are kept as well;
* warm, refill held: the same through programs.HeldRefillPool, whose refill waits
  until the task has been reaped (a diagnostic: WarmPool itself refills at once);
* subprocess.run, which makes no mount namespace: a reference for the noise.

The counts are interleaved at the process level (0, 100, 500, 1000, 0, 100, ...),
one child per count and pass; the child writes its samples to a JSON file and
exits, and its mounts go with its namespace. The parent removes the directory.
"""

from __future__ import annotations

import argparse
import ctypes
import dataclasses
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

from . import phases, programs
from .stats import Ratio, Summary, interleaved, median, ratio_across_runs

COUNTS = [0, 100, 500, 1000]
SUBPROCESS = "subprocess.run"
COLD = "isolate default, cold (isolate.Popen)"
WARM = "isolate default, warm (WarmPool.Popen)"
HELD = "warm, refill held until the task ended (diagnostic)"
SERIES = [COLD, WARM, HELD, SUBPROCESS]
UNSHARE = ["unshare", "-m", "--propagation", "private"]
TMPFS_OPTIONS = "size=16k,mode=755"
MS_NOSUID, MS_NODEV, MS_NOEXEC = 2, 4, 8


@dataclasses.dataclass
class CountResult:
    extra: int
    mounts_before: list[int]                  # lines of mountinfo in the child before its extra mounts
    mounts_total: list[int]                   # and after
    setup_seconds: list[float]                # time to make the extra mounts
    wall_ms: dict[str, list[float]]           # series -> samples (every pass)
    pass_medians: dict[str, list[float]]      # series -> median of each pass
    cold_phases: list[dict]                   # phase deltas of each cold launch
    prepared: list[dict]                      # phase deltas of each warm sandbox's preparation
    pool_stats: dict[str, dict]               # series -> summed WarmPool.stats deltas over the timed rounds
    settle_ms: dict[str, list[float]]         # series -> untimed waits for the pool to refill

    def summary(self, series: str) -> Summary:
        return Summary.of(self.wall_ms[series])

    @property
    def cold_breakdown(self) -> phases.Breakdown:
        return phases.Breakdown.of(self.cold_phases, self.wall_ms[COLD])

    @property
    def prepared_breakdown(self) -> phases.Breakdown:
        return phases.Breakdown.of(self.prepared, [sum(d.values()) for d in self.prepared])


@dataclasses.dataclass
class MountsResult:
    counts: dict[int, CountResult]
    skipped: dict[int, str]
    rounds: int                               # per count, over all passes
    passes: int
    seconds: float

    def base(self) -> int:
        return min(self.counts)

    def ratio_to_base(self, extra: int, series: str) -> Ratio:
        """median at this count / median at the smallest count; spread over the passes."""
        a, b = self.counts[extra], self.counts[self.base()]
        return ratio_across_runs(a.wall_ms[series], a.pass_medians[series], b.wall_ms[series],
                                 b.pass_medians[series])

    def slope(self, values: dict[int, float]) -> float:
        """Least-squares slope of `values` (count -> ms) in ms per 1000 extra mounts."""
        xs = sorted(values)
        if len(xs) < 2:
            return float("nan")
        mx = sum(xs) / len(xs)
        my = sum(values[x] for x in xs) / len(xs)
        den = sum((x - mx) ** 2 for x in xs)
        return 1000 * sum((x - mx) * (values[x] - my) for x in xs) / den if den else float("nan")

    def series_medians(self, series: str) -> dict[int, float]:
        return {n: c.summary(series).median for n, c in self.counts.items()}

    def phase_medians(self, phase: str, prepared: bool = False) -> dict[int, float]:
        out = {}
        for n, c in self.counts.items():
            b = c.prepared_breakdown if prepared else c.cold_breakdown
            out[n] = b.phases[phase].median if phase in b.phases else 0.0
        return out


def _share(total: int, passes: int, p: int) -> int:
    return total // passes + (1 if p < total % passes else 0)


def _run_child(extra: int, rounds: int, warmup: int, prog: str) -> dict:
    where = tempfile.mkdtemp(prefix="isolate-bench-mounts-", dir="/tmp")
    try:
        with tempfile.NamedTemporaryFile(suffix=".json") as out:
            cmd = UNSHARE + [sys.executable, "-m", "benchmarks.mounts", "--child", "--extra", str(extra),
                             "--dir", where, "--rounds", str(rounds), "--warmup", str(warmup), "--prog", prog,
                             "--result", out.name]
            r = subprocess.run(cmd, cwd=programs.REPO, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True)
            if r.returncode != 0:
                raise RuntimeError(f"the child failed ({r.returncode}): {r.stderr.strip()[-300:]}")
            with open(out.name) as f:
                return json.load(f)
    finally:
        shutil.rmtree(where, ignore_errors=True)


def measure(rounds: int, passes: int = 1, warmup: int = 3, counts=tuple(COUNTS), log=print) -> MountsResult:
    t_begin = time.monotonic()
    prog = str(programs.build_noop())
    results: dict[int, CountResult] = {}
    skipped: dict[int, str] = {}
    if not shutil.which(UNSHARE[0]):
        skipped = {n: "unshare(1) is not installed" for n in counts}
    for p in range(passes):
        for extra in counts:
            if extra in skipped:
                continue
            n = _share(rounds, passes, p)
            log(f"  mount table: pass {p + 1}/{passes}, {extra} extra mounts, {n} rounds")
            try:
                data = _run_child(extra, n, warmup, prog)
            except RuntimeError as e:
                skipped[extra] = str(e)
                log(f"  mount table: {extra} extra mounts: {e}")
                continue
            c = results.setdefault(extra, CountResult(extra, [], [], [], {s: [] for s in SERIES},
                                                      {s: [] for s in SERIES}, [], [], {}, {}))
            c.mounts_before.append(data["mounts_before"])
            c.mounts_total.append(data["mounts_total"])
            c.setup_seconds.append(data["setup_seconds"])
            for s in SERIES:
                c.wall_ms[s].extend(data["wall_ms"][s])
                c.pass_medians[s].append(median(data["wall_ms"][s]))
            c.cold_phases.extend(data["cold_phases"])
            c.prepared.extend(data["prepared"])
            for s, st in data["pool_stats"].items():
                acc = c.pool_stats.setdefault(s, {})
                for k, v in st.items():
                    acc[k] = acc.get(k, 0) + v
            for s, xs in data["settle_ms"].items():
                c.settle_ms.setdefault(s, []).extend(xs)
    for extra in skipped:
        results.pop(extra, None)
    return MountsResult(dict(sorted(results.items())), skipped, rounds, passes, time.monotonic() - t_begin)


# ---- the child process ------------------------------------------------------------
def _count_mounts() -> int:
    with open("/proc/self/mountinfo") as f:
        return sum(1 for _ in f)


def _make_mounts(where: str, n: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
    for i in range(n):
        d = os.path.join(where, str(i))
        os.mkdir(d)
        if libc.mount(b"bench", d.encode(), b"tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC,
                      TMPFS_OPTIONS.encode()) != 0:
            e = ctypes.get_errno()
            raise OSError(e, f"mount tmpfs on {d}: {os.strerror(e)}")


def child_main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--child", action="store_true", required=True)
    ap.add_argument("--extra", type=int, required=True)
    ap.add_argument("--dir", required=True)
    ap.add_argument("--rounds", type=int, required=True)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--prog", required=True)
    ap.add_argument("--result", required=True)
    a = ap.parse_args(argv)

    # Only in a mount namespace of our own: never add mounts to the caller's.
    if os.readlink("/proc/self/ns/mnt") == os.readlink(f"/proc/{os.getppid()}/ns/mnt"):
        raise SystemExit("refusing to mount: not in a mount namespace of its own (run under unshare -m)")
    before = _count_mounts()
    t0 = time.perf_counter()
    _make_mounts(a.dir, a.extra)
    setup = time.perf_counter() - t0
    total = _count_mounts()

    profile, kwargs, _ = programs.prepare_isolate(a.prog, "default")
    pools = {}
    try:
        pools[WARM], wkw, _ = programs.warm_pool(a.prog, "default")
        pools[HELD], hkw, _ = programs.warm_pool(a.prog, "default", held=True)
        calls = {
            COLD: programs.isolate_popen_phases(a.prog, profile, **kwargs),
            WARM: programs.warm_popen_phases(pools[WARM], a.prog, **wkw),
            HELD: programs.warm_popen_phases(pools[HELD], a.prog, **hkw),
            SUBPROCESS: programs.subprocess_run(a.prog),
        }
        stats_before = {s: dict(p.stats) for s, p in pools.items()}
        samples = interleaved(calls, a.rounds, warmup=a.warmup,
                              settle={s: programs.settle(p) for s, p in pools.items()})
        pool_stats = {s: {k: v - stats_before[s].get(k, 0) for k, v in p.stats.items()} for s, p in pools.items()}
    finally:
        programs.close_pools(pools.values())
    result = {
        "extra": a.extra,
        "mounts_before": before,
        "mounts_total": total,
        "setup_seconds": setup,
        "wall_ms": samples.wall_ms,
        "cold_phases": [phases.deltas(t) for t in samples.extras[COLD]],
        "prepared": [phases.deltas(t["_prepared"]) for t in samples.extras[WARM]],
        "pool_stats": pool_stats,
        "settle_ms": samples.settle_ms,
    }
    with open(a.result, "w") as f:
        json.dump(result, f)
    return 0


if __name__ == "__main__":
    sys.exit(child_main())
