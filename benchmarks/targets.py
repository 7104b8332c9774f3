"""The targets, judged on this run's numbers only.

Each target yields MET / NOT MET (or NOT EVALUATED when this run lacks the data), the
numbers it was judged on, and, when not met, a sentence generated from this run's
phase breakdown saying which phase holds it back. The two strict targets are judged
separately for the cold launch (isolate.run) and the warm one (WarmPool.run).
"""

from __future__ import annotations

import dataclasses

from . import latency, parent_size, phases, throughput
from . import fuzz as fuzz_mod
from . import mounts as mounts_mod
from . import netpool as netpool_mod
from .stats import fmt_ms, fmt_ratio, median

STRICT_VS_SUBPROCESS = 1.5     # strict launch <= 1.5x subprocess.run of the same program
FASTER_THAN_BWRAP = 6.0        # strict >= 6x faster than bwrap with equivalent isolation
PARENT_8G_VS_50M = 1.1         # 8 GB parent's launch <= 1.1x the 50 MB parent's
THREADS_SPEEDUP = 1.7          # throughput from 2+ threads >= 1.7x one thread
FUZZ_VS_UNSANDBOXED = 0.9      # a fuzzing engine in its job sandbox >= 0.9x its exec/s unsandboxed

MET, NOT_MET, NOT_EVALUATED = "MET", "NOT MET", "NOT EVALUATED"


@dataclasses.dataclass
class Target:
    goal: str
    status: str
    measured: str
    why: str = ""


@dataclasses.dataclass
class Results:
    latency: latency.LatencyResult | None = None
    parent_size: parent_size.ParentSizeResult | None = None
    throughput: throughput.ThroughputResult | None = None
    phases: phases.PhasesResult | None = None
    netpool: netpool_mod.NetPoolResult | None = None
    mounts: mounts_mod.MountsResult | None = None
    netns_stats_end: dict | None = None     # isolate.net.pool().stats at the end of the run
    fuzz: fuzz_mod.FuzzResult | None = None  # exec/s of the fuzzing engines, sandboxed and not


def _top_phases(b: phases.Breakdown, k: int = 3) -> str:
    ranked = sorted(b.order, key=lambda n: -b.phases[n].median)[:k]
    return ", ".join(f"`{n}` {fmt_ms(b.phases[n].median)} ms ({b.share(n):.0%})" for n in ranked)


def _largest_sentence(b: phases.Breakdown, what: str) -> str:
    name = b.largest()
    total = sum(s.median for s in b.phases.values())
    return (f"The largest phase of {what} is `{name}`: {fmt_ms(b.phases[name].median)} ms of the phases' "
            f"{fmt_ms(total)} ms ({b.share(name):.0%}); the three largest are {_top_phases(b)}.")


def _growth_sentence(before: phases.Breakdown, after: phases.Breakdown, from_what: str, to_what: str) -> str:
    names = [n for n in after.order if n in before.phases]
    if not names:
        return ""
    grew = max(names, key=lambda n: after.phases[n].median - before.phases[n].median)
    a, b = before.phases[grew].median, after.phases[grew].median
    return (f"From {from_what} to {to_what}, the phase that grew most is `{grew}` "
            f"({fmt_ms(a)} → {fmt_ms(b)} ms, {after.share(grew):.0%} of the phases at {to_what}).")


# (what, latency variant, phases label): the two launch paths the strict targets are judged on
PATHS = [("cold launch", latency.STRICT, "strict"),
         ("warm launch (WarmPool)", latency.STRICT_WARM, "strict" + phases.WARM_SUFFIX)]


def _strict_targets(r: Results) -> list[Target]:
    out = []
    lat, ph = r.latency, r.phases
    goal1 = f"strict launch ≤ {STRICT_VS_SUBPROCESS}× subprocess.run of the same program"
    goal2 = f"strict ≥ {FASTER_THAN_BWRAP:g}× faster than bwrap with equivalent isolation"
    if lat is None:
        return [Target(f"{g}, {what}", NOT_EVALUATED, "latency not measured in this run")
                for g in (goal1, goal2) for what, _, _ in PATHS]
    for what, variant, ph_label in PATHS:
        strict_phases = ph.breakdowns.get(ph_label) if ph else None
        cold = latency.WARM_VARIANTS.get(variant, variant)
        phase_what = f"a strict {what} of the static program"
        for prog in lat.programs:
            sub = lat.summary(prog, latency.SUBPROCESS).median
            if not lat.has(prog, variant):
                reason = f"`{variant}` could not be measured (reason in section 1)"
                ref = ""
                if lat.has(prog, latency.DEFAULT):
                    ref = f"; for reference, the default profile: {fmt_ratio(lat.ratio(prog, latency.DEFAULT).value)}"
                out.append(Target(f"{goal1}, {what} — `{prog}`", NOT_EVALUATED, f"{reason}{ref}"))
                continue
            s = lat.summary(prog, variant).median
            ratio = lat.ratio(prog, variant)
            met = ratio.value <= STRICT_VS_SUBPROCESS
            budget = STRICT_VS_SUBPROCESS * sub
            why = ""
            if not met:
                why = (f"The strict {what} takes {fmt_ms(s)} ms against a budget of {fmt_ms(budget)} ms "
                       f"({STRICT_VS_SUBPROCESS} × {fmt_ms(sub)} ms), {fmt_ms(s - budget)} ms too many. ")
                if strict_phases:
                    why += _largest_sentence(strict_phases, phase_what)
            out.append(Target(f"{goal1}, {what} — `{prog}`", MET if met else NOT_MET,
                              f"{fmt_ms(s)} ms vs {fmt_ms(sub)} ms: {fmt_ratio(ratio.value)} "
                              f"(paired p10–p90 {fmt_ratio(ratio.p10)}–{fmt_ratio(ratio.p90)})", why))
        for prog in lat.programs:
            if not lat.has(prog, latency.BWRAP) or not lat.has(prog, variant):
                missing = [v for v in (variant, latency.BWRAP) if not lat.has(prog, v)]
                reason = " and ".join(f"`{v}`" for v in missing) + " could not be measured (reason in section 1)"
                ref = ""
                if lat.has(prog, latency.BWRAP) and lat.has(prog, cold) and cold != variant:
                    d = lat.samples.ratio((prog, latency.BWRAP), (prog, cold))
                    ref = f"; for reference, the cold strict launch is {fmt_ratio(d.value)} faster than bwrap"
                out.append(Target(f"{goal2}, {what} — `{prog}`", NOT_EVALUATED, f"{reason}{ref}"))
                continue
            ratio = lat.samples.ratio((prog, latency.BWRAP), (prog, variant))
            b, s = lat.summary(prog, latency.BWRAP).median, lat.summary(prog, variant).median
            met = ratio.value >= FASTER_THAN_BWRAP
            why = ""
            if not met:
                why = (f"To be {FASTER_THAN_BWRAP:g}× faster than bwrap's {fmt_ms(b)} ms, the strict {what} would "
                       f"have to take {fmt_ms(b / FASTER_THAN_BWRAP)} ms; it takes {fmt_ms(s)} ms. ")
                if strict_phases:
                    why += _largest_sentence(strict_phases, phase_what)
            out.append(Target(f"{goal2}, {what} — `{prog}`", MET if met else NOT_MET,
                              f"bwrap {fmt_ms(b)} ms / strict {fmt_ms(s)} ms = {fmt_ratio(ratio.value)} "
                              f"(paired p10–p90 {fmt_ratio(ratio.p10)}–{fmt_ratio(ratio.p90)})", why))
    return out


def _parent_target(r: Results) -> Target:
    goal = f"8 GB parent's launch ≤ {PARENT_8G_VS_50M}× the 50 MB parent's (isolate, default profile)"
    ps = r.parent_size
    big, small = 8192, 50
    if ps is None or big not in ps.sizes or small not in ps.sizes:
        why = "" if ps is None else "; ".join(f"{k} MB: {v}" for k, v in ps.skipped.items())
        return Target(goal, NOT_EVALUATED, "the 50 MB and 8 GB parents were not both measured in this run"
                      + (f" ({why})" if why else ""))
    iso = ps.ratio_to_base(big, parent_size.ISOLATE)
    fork = ps.ratio_to_base(big, parent_size.FORK)
    sub = ps.ratio_to_base(big, parent_size.SUBPROCESS)
    a, b = ps.sizes[small].summary(parent_size.ISOLATE).median, ps.sizes[big].summary(parent_size.ISOLATE).median
    fa, fb = ps.sizes[small].summary(parent_size.FORK).median, ps.sizes[big].summary(parent_size.FORK).median
    met = iso.value <= PARENT_8G_VS_50M
    near = ps.ratio_to_base(big, parent_size.ISOLATE_NEAR_FORK)
    measured = (f"isolate {fmt_ms(a)} → {fmt_ms(b)} ms: {fmt_ratio(iso.value)} (per pass {fmt_ratio(iso.p10)}–"
                f"{fmt_ratio(iso.p90)}); os.fork+execv {fmt_ms(fa)} → {fmt_ms(fb)} ms: {fmt_ratio(fork.value)}; "
                f"subprocess.run {fmt_ratio(sub.value)}; isolate interleaved with fork {fmt_ratio(near.value)}")
    why = ""
    if not met:
        before, after = ps.sizes[small].isolate_phases, ps.sizes[big].isolate_phases
        why = (_growth_sentence(before, after, "the 50 MB parent", "the 8 GB parent") + " "
               + _largest_sentence(after, "a launch from the 8 GB parent"))
    return Target(goal, MET if met else NOT_MET, measured, why)


def _throughput_targets(r: Results) -> list[Target]:
    tp = r.throughput
    goal = f"throughput from 2+ threads ≥ {THREADS_SPEEDUP}× one thread"
    if tp is None:
        return [Target(goal, NOT_EVALUATED, "throughput not measured in this run")]
    out = []
    one = tp.configs[1]
    for n in throughput.THREADS[1:]:
        c = tp.configs[n]
        ratio = tp.ratio(n)
        met = ratio.value >= THREADS_SPEEDUP
        why = ""
        if not met:
            why = (f"With {n} threads a launch takes {fmt_ms(median(c.walls))} ms instead of "
                   f"{fmt_ms(median(one.walls))} ms. "
                   + _growth_sentence(one.breakdown, c.breakdown, "1 thread", f"{n} threads")
                   + f" The {tp.cpus} CPUs were {median(c.cpu_busy):.0%} busy with this process and its "
                     f"children (vs {median(one.cpu_busy):.0%} with 1 thread).")
        out.append(Target(f"{goal} — {n} threads", MET if met else NOT_MET,
                          f"{c.rate.median:.0f} vs {one.rate.median:.0f} launches/s: {fmt_ratio(ratio.value)}",
                          why))
    return out


def _fuzz_targets(r: Results) -> list[Target]:
    goal = f"fuzzing engine sandboxed ≥ {FUZZ_VS_UNSANDBOXED}× its exec/s unsandboxed"
    if r.fuzz is None:
        return [Target(goal, NOT_EVALUATED, "fuzzing engines not measured in this run")]
    out = []
    for row in r.fuzz.rows:
        lo, hi = row.ratio_range
        met = row.ratio >= FUZZ_VS_UNSANDBOXED
        why = "" if met else (
            f"Per CPU-second the sandboxed engine did {fmt_ratio(row.cpu_ratio)} the executions of the "
            f"unsandboxed one; the per-round wall ratios spread {fmt_ratio(lo)}–{fmt_ratio(hi)} (load from other "
            f"work moves them).")
        out.append(Target(f"{goal} — {row.model}", MET if met else NOT_MET,
                          f"{row.median('box'):,.0f} vs {row.median('host'):,.0f} exec/s: {fmt_ratio(row.ratio)} "
                          f"(median of {len(row.box)} rounds)", why))
    return out


def evaluate(r: Results) -> list[Target]:
    return _strict_targets(r) + [_parent_target(r)] + _throughput_targets(r) + _fuzz_targets(r)
