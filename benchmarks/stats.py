"""Timing and statistics shared by every measurement.

The machine is shared and noisy, so two rules hold everywhere:

* a figure is a median over many launches, reported with its 10th and 90th percentile;
* a comparison is a ratio of two variants measured in the same run, interleaved
  round-robin (A, B, C, A, B, C, ...), so that a burst of noise hits all of them alike.
"""

from __future__ import annotations

import dataclasses
import gc
import math
import time
from typing import Any, Callable, Hashable, Mapping, Sequence


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100), linear interpolation between closest ranks."""
    if not values:
        return math.nan
    xs = sorted(values)
    pos = (len(xs) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def median(values: Sequence[float]) -> float:
    return percentile(values, 50)


@dataclasses.dataclass(frozen=True)
class Summary:
    """Median and spread of a list of samples (same unit as the samples)."""

    n: int
    median: float
    p10: float
    p90: float

    @classmethod
    def of(cls, samples: Sequence[float]) -> "Summary":
        return cls(len(samples), median(samples), percentile(samples, 10), percentile(samples, 90))


@dataclasses.dataclass(frozen=True)
class Ratio:
    """median(a) / median(b), with the spread of the per-round paired ratios a_i / b_i."""

    value: float
    p10: float
    p90: float

    @classmethod
    def of(cls, a: Sequence[float], b: Sequence[float]) -> "Ratio":
        paired = [x / y for x, y in zip(a, b) if y > 0]
        return cls(median(a) / median(b), percentile(paired, 10), percentile(paired, 90))


@dataclasses.dataclass
class Samples:
    """What the interleaved runner collected: wall times in ms, and what each call returned."""

    wall_ms: dict[Hashable, list[float]]
    extras: dict[Hashable, list[Any]]
    settle_ms: dict[Hashable, list[float]] = dataclasses.field(default_factory=dict)  # untimed waits after calls

    def summary(self, name: Hashable) -> Summary:
        return Summary.of(self.wall_ms[name])

    def ratio(self, a: Hashable, b: Hashable) -> Ratio:
        return Ratio.of(self.wall_ms[a], self.wall_ms[b])


def ratio_across_runs(a_wall: Sequence[float], a_pass_medians: Sequence[float], b_wall: Sequence[float],
                      b_pass_medians: Sequence[float]) -> Ratio:
    """median(a) / median(b) for samples of separate runs (other processes, other sizes);
    the spread is that of the per-pass ratios of medians, since the samples are not paired."""
    per_pass = [x / y for x, y in zip(a_pass_medians, b_pass_medians)]
    return Ratio(median(a_wall) / median(b_wall), percentile(per_pass, 10), percentile(per_pass, 90))


def interleaved(variants: Mapping[Hashable, Callable[[], Any]], rounds: int, warmup: int = 3,
                deadline: float | None = None,
                settle: Mapping[Hashable, Callable[[], Any]] | None = None) -> Samples:
    """Call every variant once per round, always in the same order: A, B, C, A, B, C, ...

    Returns each call's wall time (ms) and, when a call returns something other than
    None, that value (e.g. the launch's phase timings). The first `warmup` rounds are
    run but not kept. The garbage collector is paused while measuring so that a
    collection does not land on one variant. `deadline` (time.monotonic()) ends the
    rounds early if the machine is much slower than expected.

    `settle[name]`, if given, is called right after each call of that variant, outside
    the timed window (e.g. a warm pool waiting until it is full again, so that the next
    timed call finds it as a caller pacing its tasks would); its duration is kept in
    Samples.settle_ms.
    """
    items = list(variants.items())
    settle = dict(settle or {})
    wall: dict[Hashable, list[float]] = {name: [] for name, _ in items}
    extras: dict[Hashable, list[Any]] = {name: [] for name, _ in items}
    settled: dict[Hashable, list[float]] = {name: [] for name, _ in items if name in settle}
    clock = time.perf_counter_ns
    gc.collect()
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        for r in range(warmup + rounds):
            for name, fn in items:
                t0 = clock()
                out = fn()
                t1 = clock()
                if r >= warmup:
                    wall[name].append((t1 - t0) / 1e6)
                    if out is not None:
                        extras[name].append(out)
                if name in settle:
                    settle[name]()
                    if r >= warmup:
                        settled[name].append((clock() - t1) / 1e6)
            if deadline is not None and r >= warmup + 10 and time.monotonic() > deadline:
                break
    finally:
        if was_enabled:
            gc.enable()
    return Samples(wall, extras, settled)


def fmt_ms(x: float) -> str:
    """A duration in ms with about three significant digits."""
    if x != x:  # nan
        return "–"
    if x >= 100:
        return f"{x:.0f}"
    if x >= 10:
        return f"{x:.1f}"
    if x >= 1:
        return f"{x:.2f}"
    return f"{x:.3f}"


def fmt_ratio(x: float) -> str:
    if x != x:
        return "–"
    return f"{x:.2f}×" if x < 10 else f"{x:.1f}×"
