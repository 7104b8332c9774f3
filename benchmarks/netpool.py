"""6. What the pool of network namespaces saves.

The default profile (network mode "none": an own network namespace with only
loopback) launched with `network.pool = true` (the default: the namespace is taken
from isolate.net.pool(), made ahead of time and reused once its sandbox is gone)
and with `network.pool = false` (clone makes a new namespace every launch, the
child brings loopback up, and the kernel destroys it afterwards), interleaved.
Each launch records its phases, to show where the difference lies. The pool's
stats (made, reused, taken, missed) are read before and after.
"""

from __future__ import annotations

import dataclasses
import time

import isolate
from isolate.launch import net

from . import phases, programs
from .stats import Ratio, Summary, interleaved

POOLED = "default, network.pool = true"
UNPOOLED = "default, network.pool = false"
VARIANTS = [POOLED, UNPOOLED]
OVERRIDE = "network.pool=false"


@dataclasses.dataclass
class NetPoolResult:
    wall_ms: dict[str, list[float]]                   # variant -> samples
    breakdowns: dict[str, phases.Breakdown]           # variant -> phases
    stats_before: dict | None                         # isolate.net.pool().stats
    stats_after: dict | None
    skipped: dict[str, str]
    rounds: int
    seconds: float

    def summary(self, variant: str) -> Summary:
        return Summary.of(self.wall_ms[variant])

    def ratio(self, a: str = UNPOOLED, b: str = POOLED) -> Ratio:
        return Ratio.of(self.wall_ms[a], self.wall_ms[b])

    def stats_delta(self) -> dict | None:
        if self.stats_before is None or self.stats_after is None:
            return None
        return {k: self.stats_after[k] - self.stats_before.get(k, 0) for k in self.stats_after}


def measure(rounds: int, warmup: int = 5, deadline: float | None = None, log=print) -> NetPoolResult:
    t_begin = time.monotonic()
    prog = str(programs.build_noop())
    profiles = {POOLED: isolate.load_profile("default"),
                UNPOOLED: isolate.load_profile("default", overrides=[OVERRIDE])}
    calls, skipped = {}, {}
    for label, profile in profiles.items():
        try:
            profile, kwargs, _ = programs.prepare_isolate(prog, profile)
            calls[label] = programs.isolate_popen_phases(prog, profile, **kwargs)
        except programs.Skip as e:
            skipped[label] = str(e)
            log(f"  netns pool: skipping {label}: {e}")
    p = net.pool()
    if p is not None:
        p.prefill()
    before = dict(p.stats) if p is not None else None
    log(f"  netns pool: {len(calls)} variants interleaved, {rounds} rounds")
    samples = interleaved(calls, rounds, warmup=warmup, deadline=deadline)
    after = dict(p.stats) if p is not None else None
    breakdowns = {label: phases.Breakdown.of((phases.deltas(t) for t in samples.extras[label]),
                                             samples.wall_ms[label]) for label in calls}
    n = len(next(iter(samples.wall_ms.values()))) if samples.wall_ms else 0
    return NetPoolResult(samples.wall_ms, breakdowns, before, after, skipped, n, time.monotonic() - t_begin)
