"""The targets, judged on this run's numbers only.

Each target yields MET / NOT MET (or NOT EVALUATED when this run lacks the data), the
numbers it was judged on, and, when not met, a sentence generated from this run's
phase breakdown saying which phase holds it back. The two strict targets are judged
separately for the cold launch (isolate.run) and the warm one (WarmPool.run).
"""

from __future__ import annotations

import dataclasses

from . import cli, latency, parent_size, phases, throughput
from . import fuzz as fuzz_mod
from . import triage as triage_mod
from . import mounts as mounts_mod
from . import netpool as netpool_mod
from . import netproxy as netproxy_mod
from .stats import Ratio, fmt_ms, fmt_ratio, median

STRICT_VS_SUBPROCESS = 1.5     # cold strict launch <= 1.5x subprocess.run of the same program
DEFAULT_VS_SUBPROCESS = 1.4    # cold default launch <= 1.4x
WARM_VS_SUBPROCESS = 1.0       # a warm strict task (WarmPool.run) <= 1.0x
FASTER_THAN_BWRAP = 6.0        # a warm strict task >= 6x faster than bwrap with equivalent isolation
CLI_VS_BWRAP = 1.0             # `isolate run -p strict|default` <= 1.0x the equivalent bwrap, end to end
PARENT_8G_VS_50M = 1.1         # 8 GB parent's launch <= 1.1x the 50 MB parent's
THREADS_SPEEDUP = 1.8          # throughput from 2 threads >= 1.8x one thread
MANY_VS_8_THREADS = 1.0        # throughput from 32 threads >= the one from 8
FUZZ_VS_UNSANDBOXED = 0.9      # a fuzzing engine in its job sandbox >= 0.9x its exec/s unsandboxed
NETPROXY_VS_DIRECT = 1.5       # an allowed HTTP request through the allowlist proxy <= 1.5x the direct one
TRIAGE_REPLAYS_PER_S = triage_mod.GOAL   # triage() >= 200 replays/s of a small crashing input

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
    cli: cli.CliResult | None = None
    fuzz: fuzz_mod.FuzzResult | None = None  # exec/s of the fuzzing engines, sandboxed and not
    netproxy: netproxy_mod.NetproxyResult | None = None  # a request through the allowlist proxy and direct
    triage: triage_mod.TriageResult | None = None  # replays/s of isolate.fuzz.triage.triage and its parts


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


# (what, latency variant, phases label, budget × subprocess.run): the launch paths judged
PATHS = [("cold strict launch (isolate.run)", latency.STRICT, "strict", STRICT_VS_SUBPROCESS),
         ("cold default launch (isolate.run)", latency.DEFAULT, "default", DEFAULT_VS_SUBPROCESS),
         ("warm strict task (WarmPool.run)", latency.STRICT_WARM, "strict" + phases.WARM_SUFFIX, WARM_VS_SUBPROCESS)]
BWRAP_PATHS = [("warm strict task (WarmPool.run)", latency.STRICT_WARM, "strict" + phases.WARM_SUFFIX)]


def _held_back(lat: latency.LatencyResult, breakdown, prog: str, variant: str, what: str) -> str:
    """The floor of `variant` and its largest phase, as sentences."""
    out = ""
    f = lat.floor_ratio(prog, variant)
    if f is not None:
        fl = latency.FLOOR_OF[variant]
        out += (f" Its floor (`{fl}`) takes {fmt_ms(lat.summary(prog, fl).median)} ms: isolate spends "
                f"{fmt_ratio(f.value)} of what the kernel needs for the same configuration.")
    if breakdown:
        out += " " + _largest_sentence(breakdown, f"a {what} of the static program")
    return out


def _strict_targets(r: Results) -> list[Target]:
    out = []
    lat, ph = r.latency, r.phases
    if lat is None:
        return [Target(f"{what} ≤ {k}× subprocess.run", NOT_EVALUATED, "latency not measured in this run")
                for what, _, _, k in PATHS]
    for what, variant, ph_label, budget_x in PATHS:
        goal = f"{what} ≤ {budget_x:g}× subprocess.run of the same program"
        breakdown = ph.breakdowns.get(ph_label) if ph else None
        for prog in lat.programs:
            if not lat.has(prog, variant):
                out.append(Target(f"{goal} — `{prog}`", NOT_EVALUATED,
                                  f"`{variant}` could not be measured (reason in section 1)"))
                continue
            sub = lat.summary(prog, latency.SUBPROCESS).median
            s = lat.summary(prog, variant).median
            ratio = lat.ratio(prog, variant)
            met = ratio.value <= budget_x
            why = ""
            if not met:
                budget = budget_x * sub
                why = (f"It takes {fmt_ms(s)} ms against a budget of {fmt_ms(budget)} ms "
                       f"({budget_x:g} × {fmt_ms(sub)} ms), {fmt_ms(s - budget)} ms too many.")
                why += _held_back(lat, breakdown, prog, variant, what)
            out.append(Target(f"{goal} — `{prog}`", MET if met else NOT_MET,
                              f"{fmt_ms(s)} ms vs {fmt_ms(sub)} ms: {fmt_ratio(ratio.value)} "
                              f"(paired p10–p90 {fmt_ratio(ratio.p10)}–{fmt_ratio(ratio.p90)})", why))
    for what, variant, ph_label in BWRAP_PATHS:
        goal = f"{what} ≥ {FASTER_THAN_BWRAP:g}× faster than bwrap with equivalent isolation"
        breakdown = ph.breakdowns.get(ph_label) if ph else None
        for prog in lat.programs:
            if not lat.has(prog, latency.BWRAP) or not lat.has(prog, variant):
                missing = [v for v in (variant, latency.BWRAP) if not lat.has(prog, v)]
                out.append(Target(f"{goal} — `{prog}`", NOT_EVALUATED,
                                  " and ".join(f"`{v}`" for v in missing) + " could not be measured"))
                continue
            ratio = lat.samples.ratio((prog, latency.BWRAP), (prog, variant))
            b, s = lat.summary(prog, latency.BWRAP).median, lat.summary(prog, variant).median
            met = ratio.value >= FASTER_THAN_BWRAP
            why = ""
            if not met:
                why = (f"To be {FASTER_THAN_BWRAP:g}× faster than bwrap's {fmt_ms(b)} ms, it would have to take "
                       f"{fmt_ms(b / FASTER_THAN_BWRAP)} ms; it takes {fmt_ms(s)} ms.")
                why += _held_back(lat, breakdown, prog, variant, what)
            out.append(Target(f"{goal} — `{prog}`", MET if met else NOT_MET,
                              f"bwrap {fmt_ms(b)} ms / isolate {fmt_ms(s)} ms = {fmt_ratio(ratio.value)} "
                              f"(paired p10–p90 {fmt_ratio(ratio.p10)}–{fmt_ratio(ratio.p90)})", why))
    return out


def _cli_targets(r: Results) -> list[Target]:
    res = r.cli
    out = []
    for mine, peer in cli.PAIRS.items():
        goal = f"`{mine} -- {cli.BARE if res is None else res.prog}` ≤ {CLI_VS_BWRAP:g}× {peer}, end to end"
        if res is None or not res.has(mine) or not res.has(peer):
            why = "" if res is None else "; ".join(f"{k}: {v}" for k, v in res.skipped.items())
            out.append(Target(goal, NOT_EVALUATED, "the command line was not measured in this run"
                              + (f" ({why})" if why else "")))
            continue
        v, lo, hi = res.ratio(mine, peer)
        a, b = res.median(mine), res.median(peer)
        met = v <= CLI_VS_BWRAP
        why = ""
        if not met:
            py = res.median(cli.PYTHON) if res.has(cli.PYTHON) else None
            why = (f"`{mine}` takes {fmt_ms(a)} ms against bwrap's {fmt_ms(b)} ms, {fmt_ms(a - b)} ms more. "
                   f"The native command's phases (`isolate run --timing`) are in docs/cli-fast-path.md; what "
                   f"bwrap does not do here: {'Landlock, ' if 'strict' in mine else ''}the seccomp filter, the "
                   f"cgroups and a host uid of its own (for root)."
                   + (f" Starting a Python interpreter alone (`{cli.PYTHON}`) takes {fmt_ms(py)} ms: a "
                      f"command line that runs Python cannot meet it." if py is not None and a > py else ""))
        rr = res.rr_ratio(mine, peer)
        if not res.native_hit.get(mine, False):
            why = ("The isolate command did not take the native path in this run (see section 7). " + why).strip()
        out.append(Target(goal, MET if met else NOT_MET,
                          f"{fmt_ms(a)} ms vs {fmt_ms(b)} ms: {fmt_ratio(v)} (per pass {fmt_ratio(lo)}–"
                          f"{fmt_ratio(hi)}, {res.passes} hyperfine passes of {res.runs} runs)"
                          + (f"; round-robin {fmt_ratio(rr)}" if rr is not None else ""), why))
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
    goal2 = f"throughput from 2 threads ≥ {THREADS_SPEEDUP}× one thread"
    goal32 = f"throughput from 32 threads ≥ {MANY_VS_8_THREADS:g}× the one from 8 threads"
    if tp is None:
        return [Target(g, NOT_EVALUATED, "throughput not measured in this run") for g in (goal2, goal32)]
    out = []
    for goal, n, base, need in ((goal2, 2, 1, THREADS_SPEEDUP), (goal32, 32, 8, MANY_VS_8_THREADS)):
        if n not in tp.configs or base not in tp.configs:
            out.append(Target(goal, NOT_EVALUATED, f"{n} or {base} threads not measured in this run"))
            continue
        c, b = tp.configs[n], tp.configs[base]
        ratio = Ratio.of(c.rates, b.rates)
        met = ratio.value >= need
        why = ""
        if not met:
            why = (f"With {n} threads a launch takes {fmt_ms(median(c.walls))} ms instead of "
                   f"{fmt_ms(median(b.walls))} ms with {base}. "
                   + _growth_sentence(b.breakdown, c.breakdown, f"{base} thread{'s' if base > 1 else ''}",
                                      f"{n} threads")
                   + f" The {tp.cpus} CPUs were {median(c.cpu_busy):.0%} busy with this process and its "
                     f"children (vs {median(b.cpu_busy):.0%} with {base}).")
        out.append(Target(goal, MET if met else NOT_MET,
                          f"{c.rate.median:.0f} vs {b.rate.median:.0f} launches/s: {fmt_ratio(ratio.value)}", why))
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


def _netproxy_targets(r: Results) -> list[Target]:
    goal = (f"an allowed HTTP request through the allowlist proxy ≤ {NETPROXY_VS_DIRECT:g}× the same request "
            f"made directly (server on loopback answering at once)")
    np_ = r.netproxy
    if np_ is None:
        return [Target(goal, NOT_EVALUATED, "the network allowlist was not measured in this run")]
    out = []
    res = np_.runs[0.0]
    direct = median(res[netproxy_mod.DIRECT]["request"])
    for v in netproxy_mod.PROXIED:
        value, lo, hi = np_.ratio(v, 0.0)
        s = median(res[v]["request"])
        met = value <= NETPROXY_VS_DIRECT
        why = "" if met else (
            f"It takes {fmt_ms(s)} ms against a budget of {fmt_ms(NETPROXY_VS_DIRECT * direct)} ms; the connect "
            f"takes {fmt_ms(median(res[v]['connect']))} ms (direct {fmt_ms(median(res[netproxy_mod.DIRECT]['connect']))}), "
            f"the first byte {fmt_ms(median(res[v]['first byte']))} ms (direct "
            f"{fmt_ms(median(res[netproxy_mod.DIRECT]['first byte']))}): the proxy's wake-ups (accept, the answer, "
            f"its end) and its second connection; load {np_.load[0.0][1]:.1f} on {np_.cpus} CPUs.")
        out.append(Target(f"{goal} — {v}", MET if met else NOT_MET,
                          f"{fmt_ms(s)} ms vs {fmt_ms(direct)} ms: {fmt_ratio(value)} (per round p10–p90 "
                          f"{fmt_ratio(lo)}–{fmt_ratio(hi)})", why))
    return out


def _triage_target(r: Results) -> Target:
    goal = (f"fuzz triage ≥ {TRIAGE_REPLAYS_PER_S:g} replays/s of a small crashing input (`triage()`: a fresh "
            f"sandbox per replay, symbolized, parsed, merged, recorded)")
    t = r.triage
    if t is None:
        return Target(goal, NOT_EVALUATED, "triage not measured in this run")
    tm = triage_mod
    rate = t.rate(tm.TRIAGE_SHIM)
    met = rate >= TRIAGE_REPLAYS_PER_S and t.replayer == "shim"
    measured = (f"{rate:.0f} replays/s (median of {t.rounds} rounds of {t.replays}; replayer: {t.replayer}), "
                f"{t.cpu_ms(tm.TRIAGE_SHIM):.1f} ms CPU per replay; with libFuzzer's main "
                f"{t.rate(tm.TRIAGE_MAIN):.0f} replays/s, {t.cpu_ms(tm.TRIAGE_MAIN):.1f} ms")
    why = ""
    if not met:
        why = (f"Per replay `triage()` used {t.cpu_ms(tm.TRIAGE_SHIM):.1f} ms of CPU: the shim replay itself takes "
               f"{t.cpu_ms(tm.PLAIN_SHIM):.1f} ms unsandboxed (libFuzzer's main {t.cpu_ms(tm.PLAIN_MAIN):.1f} ms), "
               f"in a warm sandbox {t.cpu_ms(tm.POOL_SHIM):.1f} ms. {t.cpus} CPUs give at most "
               f"{t.ceiling(tm.TRIAGE_SHIM):.0f} replays/s at that CPU cost (the unsandboxed shim loop "
               f"{t.ceiling(tm.PLAIN_SHIM):.0f}/s); the load was {t.load_end:.1f} at the end, other work shares "
               f"the CPUs.")
    return Target(goal, MET if met else NOT_MET, measured, why)


def evaluate(r: Results) -> list[Target]:
    return (_strict_targets(r) + _cli_targets(r) + [_parent_target(r)] + _throughput_targets(r) + _fuzz_targets(r)
            + _netproxy_targets(r) + [_triage_target(r)])
