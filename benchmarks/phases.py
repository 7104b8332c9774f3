"""5. Where the time of a launch goes, from the launch path's own timestamps.

`isolate.Popen(...).timings` maps each step of the launch to the ms since the launch
began (`start` = 0, then clone, id_maps, mount, ..., `returned` when the parent has
learnt that the program is running). A phase's time is the gap between its stamp and
the one before it in time. Two phases are added from the outside, so that the phases
add up to the whole call:

* `python` - the Popen() call minus the launch path: profile lookup, plan cache,
  environment and fd bookkeeping in Python, before and after the launch path;
* `run+reap` - from Popen() returning until wait() has reaped the program.

A warm launch (WarmPool.Popen) is measured end to end instead: its `timings` are
those of the sandbox's preparation, which ran earlier in the pool's thread, off
the task's path. Its phases are `handover` (the Popen() call: take a ready sandbox,
send it the task, until its pid 1 reports the program started) and `run+reap`; the
preparation's stamps are kept apart (PhasesResult.prepared).
"""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterable, Mapping

import isolate

from . import programs
from .stats import Summary, interleaved, median

PYTHON = "python"
WAIT = "run+reap"
OUTSIDE = "outside the launch path"   # when only the wall time of isolate.run is known
HANDOVER = "handover"                 # warm: the whole Popen() call
WARM_SUFFIX = " warm"                 # "default warm": the task of a WarmPool of "default"



def deltas(timings: Mapping[str, float], wall_ms: float | None = None) -> dict[str, float]:
    """Phase name -> ms spent in it, in the order the phases happened.

    `timings` is a Popen/Result timings dict, optionally with the `_popen_ms` and
    `_wait_ms` of programs.isolate_popen_phases; or pass the wall time of the whole
    call as `wall_ms` to get one `outside the launch path` phase for the rest. A warm
    launch's dict (programs.warm_popen_phases) gives `handover` and `run+reap` only.
    """
    if timings.get("_warm"):
        return {HANDOVER: timings["_popen_ms"], WAIT: timings["_wait_ms"]}
    stamps = sorted(((t, name) for name, t in timings.items() if not name.startswith("_")))
    out: dict[str, float] = {}
    prev = 0.0
    for t, name in stamps:
        if name == "start":
            prev = t
            continue
        out[name] = t - prev
        prev = t
    returned = timings.get("returned", prev)
    if "_popen_ms" in timings:
        out[PYTHON] = max(0.0, timings["_popen_ms"] - returned)
        out[WAIT] = timings["_wait_ms"]
    elif wall_ms is not None:
        out[OUTSIDE] = max(0.0, wall_ms - returned)
    return out


@dataclasses.dataclass
class Breakdown:
    """Median of every phase over many launches of one configuration."""

    order: list[str]                      # phases, in launch order
    phases: dict[str, Summary]            # phase -> ms
    total: Summary                        # wall time of the whole call, ms

    @classmethod
    def of(cls, per_launch: Iterable[Mapping[str, float]], walls: list[float]) -> "Breakdown":
        per_launch = list(per_launch)
        names: dict[str, list[float]] = {}
        position: dict[str, list[int]] = {}
        for d in per_launch:
            for i, (name, ms) in enumerate(d.items()):
                names.setdefault(name, [])
                position.setdefault(name, []).append(i)
        for d in per_launch:  # a phase missing from a launch took no time in it
            for name in names:
                names[name].append(d.get(name, 0.0))
        order = sorted(names, key=lambda n: median(position[n]))
        return cls(order, {n: Summary.of(names[n]) for n in order}, Summary.of(walls))

    def share(self, name: str) -> float:
        """Fraction of the sum of phase medians that this phase takes."""
        total = sum(s.median for s in self.phases.values())
        return self.phases[name].median / total if total else 0.0

    def largest(self) -> str:
        return max(self.order, key=lambda n: self.phases[n].median)


@dataclasses.dataclass
class PhasesResult:
    breakdowns: dict[str, Breakdown]      # profile label -> breakdown
    skipped: dict[str, str]               # profile label -> why
    notes: list[str]                      # how a profile was adapted to run the program
    cli_output: str                       # `isolate run --timing -- true`, stderr
    cli_command: list[str]
    rounds: int
    seconds: float
    # warm label -> breakdown of the preparation stamps (Popen.timings of the warm
    # launches: the launch path run earlier by the pool's thread; `total` = the stamp
    # `returned`, i.e. until pid 1 was ready for a task)
    prepared: dict[str, Breakdown] = dataclasses.field(default_factory=dict)
    pool_stats: dict = dataclasses.field(default_factory=dict)   # warm label -> {"before", "after"}


def _cli_timing() -> tuple[list[str], str]:
    """`isolate run --timing -- true`: the same stamps, printed by the command line."""
    exe = Path(sys.executable).with_name("isolate")
    cmd = [str(exe) if exe.exists() else (shutil.which("isolate") or "isolate"), "run", "--timing", "--", "true"]
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=30, cwd=programs.REPO)
        return cmd, r.stderr.strip() or f"(no output, exit status {r.returncode})"
    except Exception as e:  # noqa: BLE001
        return cmd, f"(could not run: {e})"


def measure(rounds: int, warmup: int = 5, deadline: float | None = None, log=print) -> PhasesResult:
    t_begin = time.monotonic()
    prog = str(programs.build_noop())
    minimal, _ = programs.minimal_profile()
    profiles = {"seccomp+rlimits+fds": isolate.load_profile(minimal), "default": "default",
                "default" + WARM_SUFFIX: "default", "strict": programs.STRICT_PROFILE,
                "strict" + WARM_SUFFIX: programs.STRICT_PROFILE}
    calls, skipped, notes, pools = {}, {}, [], {}
    try:
        for label, profile in profiles.items():
            try:
                if label.endswith(WARM_SUFFIX):
                    pools[label], kwargs, note = programs.warm_pool(prog, profile)
                    calls[label] = programs.warm_popen_phases(pools[label], prog, **kwargs)
                else:
                    profile, kwargs, note = programs.prepare_isolate(prog, profile)
                    calls[label] = programs.isolate_popen_phases(prog, profile, **kwargs)
                if note and note not in notes:
                    notes.append(note)
            except programs.Skip as e:
                skipped[label] = str(e)
                log(f"  phases: skipping {label}: {e}")
        log(f"  phases: {len(calls)} configurations interleaved, {rounds} rounds")
        before = {k: dict(p.stats) for k, p in pools.items()}
        samples = interleaved(calls, rounds, warmup=warmup, deadline=deadline,
                              settle={k: programs.settle(p) for k, p in pools.items()})
        pool_stats = {k: {"before": before[k], "after": dict(p.stats)} for k, p in pools.items()}
    finally:
        programs.close_pools(pools.values())
    breakdowns = {label: Breakdown.of((deltas(t) for t in samples.extras[label]), samples.wall_ms[label])
                  for label in calls}
    prepared = {}
    for label in pools:
        stamps = [t["_prepared"] for t in samples.extras[label]]
        prepared[label] = Breakdown.of((deltas(t) for t in stamps), [t.get("returned", 0.0) for t in stamps])
    cmd, out = _cli_timing()
    n = len(next(iter(samples.wall_ms.values()))) if samples.wall_ms else 0
    return PhasesResult(breakdowns, skipped, notes, out, cmd, n, time.monotonic() - t_begin, prepared, pool_stats)
