"""docs/performance.md and the plots under docs/perf/, from one run's results.

Nothing here is a measured number written by hand: every figure in the document comes
from the Results object of the run that writes it.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import shlex
import subprocess
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import FuncFormatter  # noqa: E402

import isolate  # noqa: E402

from . import cli, latency, mounts, netpool, netproxy, parent_size, phases, programs, targets, throughput  # noqa: E402
from . import triage as triage_bench  # noqa: E402
from .stats import Summary, fmt_ms, fmt_ratio, median  # noqa: E402

PHASE_DOC = {
    "clone": "parent: child stack, pipes, `clone3` with the namespaces, until the child runs its first step",
    "id_maps": "child waits while the parent writes `uid_map`/`gid_map`",
    "setsid": "new session",
    "hostname": "set the hostname",
    "mount": "build the file system view (mounts, `pivot_root`)",
    "loopback": "bring `lo` up in the new network namespace",
    "fds": "arrange the program's fd table",
    "rlimit": "set resource limits",
    "chdir": "change to the working directory",
    "caps": "drop capabilities",
    "seccomp": "install the seccomp filter (with a pid 1, pid 1 installs it: see `returned`)",
    "landlock": "apply Landlock rules",
    "init": "exec of the sandbox's pid 1 (`isolate-init`), until it begins to run",
    "returned": "exec of the program (with a pid 1: what pid 1 does after `init`, then the exec), until the "
                "parent hears it started; for a warm preparation: until pid 1 reports it is ready for a task",
    phases.PYTHON: "Python side of `Popen()`: profile and plan lookup, environment, fd bookkeeping",
    phases.WAIT: "the program runs and exits; `wait()` reaps it (and pid 1)",
    phases.OUTSIDE: "the rest of the `isolate.run` call: Python before and after the launch path, run, reap",
    phases.HANDOVER: "warm: the `Popen()` call — take a ready sandbox, send it the task (argv, environment, fds), "
                     "until its pid 1 reports that the program started",
}


# ---- facts about the machine ------------------------------------------------------
def _read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return ""


def _git_commit() -> str:
    try:
        r = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=programs.REPO, capture_output=True,
                           text=True, timeout=10)
        return r.stdout.strip() or "unknown"
    except Exception:  # noqa: BLE001
        return "unknown"


def machine_info() -> dict:
    cpu = next((line.split(":", 1)[1].strip() for line in _read("/proc/cpuinfo").splitlines()
                if line.startswith("model name")), platform.processor() or "unknown")
    mem_kb = next((int(line.split()[1]) for line in _read("/proc/meminfo").splitlines()
                   if line.startswith("MemTotal:")), 0)
    thp = _read("/sys/kernel/mm/transparent_hugepage/enabled").strip() or "unknown"
    return {
        "kernel": f"{platform.system()} {platform.release()} ({platform.machine()})",
        "cpu": f"{cpu}, {os.cpu_count()} CPUs ({len(os.sched_getaffinity(0))} usable by this process)",
        "memory": f"{mem_kb / (1 << 20):.1f} GiB",
        "transparent huge pages": thp,
        "os": _read("/etc/os-release").split('PRETTY_NAME="', 1)[-1].split('"', 1)[0] or "unknown",
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "isolate": f"{isolate.__version__}, commit {_git_commit()} (plus uncommitted changes, if any)",
        "bwrap": programs.tool_version(["bwrap", "--version"]),
        "unshare": programs.tool_version(["unshare", "--version"]),
        "gcc": programs.tool_version(["gcc", "--version"]),
    }


# ---- plots ------------------------------------------------------------------------
_PLAIN = FuncFormatter(lambda v, _: f"{v:g}")  # 0.1, 1, 10 rather than 10^-1, 10^0, 10^1


def _save(fig, path: Path):
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def plot_latency(lat: latency.LatencyResult, path: Path):
    progs = list(lat.programs)
    fig, axes = plt.subplots(len(progs), 1, figsize=(10, max(3.2, 0.3 * len(latency.VARIANTS)) * len(progs)),
                             squeeze=False)
    for ax, prog in zip(axes[:, 0], progs):
        names = [v for v in latency.VARIANTS if lat.has(prog, v)]
        s = [lat.summary(prog, v) for v in names]
        y = range(len(names))
        for i, (v, x) in enumerate(zip(names, s)):
            color = ("#c44e52" if v in latency.WARM_VARIANTS else "#4c72b0" if v.startswith("isolate")
                     else "#55a868" if v in latency.FLOORS else "#666666")
            ax.errorbar([x.median], [i], xerr=[[x.median - x.p10], [x.p90 - x.median]], fmt="o", color=color,
                        capsize=3, markersize=6)
            ax.annotate(f"{fmt_ms(x.median)} ms, {fmt_ratio(lat.ratio(prog, v).value)}", (x.p90, i),
                        textcoords="offset points", xytext=(6, 0), va="center", fontsize=8, color=color)
        ax.set_yticks(list(y), names, fontsize=8)
        ax.set_ylim(len(names) - 0.5, -0.5)
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(_PLAIN)
        ax.set_xlim(min(x.p10 for x in s) / 1.5, max(x.p90 for x in s) * 4)
        ax.grid(True, axis="x", which="both", alpha=0.25)
        ax.set_xlabel("ms from the call until the child has exited (dot: median, bar: p10–p90; log scale)")
        ax.set_title(f"Launch latency: {prog}   (× = ratio of medians to subprocess.run; red: warm, "
                     f"a task handed to a ready sandbox)", fontsize=10)
    _save(fig, path)


def _size(mb: int) -> str:
    return f"{mb} MB" if mb < 1024 else f"{mb / 1024:.3g} GB"


def plot_parent_size(ps: parent_size.ParentSizeResult, path: Path):
    fig, ax = plt.subplots(figsize=(9, 5))
    sizes = sorted(ps.sizes)
    gb = [median(ps.sizes[s].rss_mb) / 1024 for s in sizes]
    series = [(parent_size.ISOLATE, "#4c72b0", "o-", True), (parent_size.SUBPROCESS, "#55a868", "o-", True),
              (parent_size.FORK, "#dd8452", "o-", True), (parent_size.ISOLATE_NEAR_FORK, "#4c72b0", "x--", False)]
    for method, color, style, band in series:
        s = [ps.sizes[x].summary(method) for x in sizes]
        ax.plot(gb, [x.median for x in s], style, color=color, label=method)
        if band:
            ax.fill_between(gb, [x.p10 for x in s], [x.p90 for x in s], color=color, alpha=0.2)
        ax.annotate(f"{fmt_ratio(ps.ratio_to_base(sizes[-1], method).value)}", (gb[-1], s[-1].median),
                    textcoords="offset points", xytext=(6, 0), va="center", fontsize=9, color=color)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(_PLAIN)
    ax.set_xticks(gb, [f"{_size(s)}\n(RSS {_size(round(g * 1024))})" for s, g in zip(sizes, gb)])
    ax.minorticks_off()
    ax.set_xlabel("resident memory of the parent (measured VmRSS)")
    ax.set_ylabel("ms per launch of the static program (median, band p10–p90)")
    ax.set_title(f"Launch cost against the parent's size (label: ratio to the {_size(sizes[0])} parent)",
                 fontsize=10)
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=9)
    _save(fig, path)


MOUNT_STYLE = {mounts.COLD: ("#4c72b0", "o-"), mounts.WARM: ("#c44e52", "o-"), mounts.HELD: ("#c44e52", "x--"),
               mounts.SUBPROCESS: ("#55a868", "o-")}


def plot_mounts(m: mounts.MountsResult, path: Path):
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(12, 4.8), gridspec_kw={"width_ratios": [3, 2]})
    xs = list(m.counts)
    for series in mounts.SERIES:
        color, style = MOUNT_STYLE[series]
        s = [m.counts[n].summary(series) for n in xs]
        ax.plot(xs, [x.median for x in s], style, color=color,
                label=f"{series}: {fmt_ratio(m.ratio_to_base(xs[-1], series).value)} at {xs[-1]}")
        if series != mounts.HELD:
            ax.fill_between(xs, [x.p10 for x in s], [x.p90 for x in s], color=color, alpha=0.15)
    ax.set_xticks(xs, [str(n) for n in xs])
    ax.set_xlim(xs[0] - 0.03 * (xs[-1] - xs[0]), xs[-1] * 1.03 if xs[-1] else 1)
    top_median = max(m.counts[n].summary(x).median for n in xs for x in mounts.SERIES)
    top_p90 = max(m.counts[n].summary(x).p90 for n in xs for x in mounts.SERIES)
    ax.set_ylim(0, min(top_p90 * 1.05, top_median * 2.5))   # a burst of noise in a p90 must not hide the medians
    host = median([x for n in xs for x in m.counts[n].mounts_before])
    ax.set_xlabel(f"extra mounts in the caller's mount namespace (on top of the {host:.0f} it starts with)")
    ax.set_ylabel("ms per launch of the static program (median, band p10–p90)")
    ax.set_title(f"Launch latency against the caller's mount table (legend: ratio to {xs[0]} extra mounts)",
                 fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")
    for phase, color in (("clone", "#8172b2"), ("mount", "#dd8452")):
        ax2.plot(xs, [m.phase_medians(phase)[n] for n in xs], "o-", color=color, label=f"cold launch: {phase}")
        ax2.plot(xs, [m.phase_medians(phase, prepared=True)[n] for n in xs], "x--", color=color,
                 label=f"warm sandbox's preparation (pool thread): {phase}")
    ax2.set_xticks(xs, [str(n) for n in xs])
    ax2.set_ylim(0, None)
    ax2.set_xlabel("extra mounts")
    ax2.set_ylabel("ms (median of the phase)")
    ax2.set_title("The phases that copy and detach the mount table", fontsize=10)
    ax2.grid(True, alpha=0.3)
    ax2.legend(fontsize=8, loc="upper left")
    _save(fig, path)


def plot_throughput(tp: throughput.ThroughputResult, path: Path):
    fig, ax = plt.subplots(figsize=(8, 4.5))
    ns = list(tp.configs)
    s = [tp.configs[n].rate for n in ns]
    x = range(len(ns))
    ax.bar(x, [r.median for r in s], color="#4c72b0",
           yerr=[[r.median - r.p10 for r in s], [r.p90 - r.median for r in s]], capsize=4)
    for i, (n, r) in enumerate(zip(ns, s)):
        ax.text(i, r.p90, f"{r.median:.0f}/s\n{fmt_ratio(tp.ratio(n).value)}", ha="center", va="bottom",
                fontsize=9)
    ax.set_xticks(list(x), [f"{n} thread{'s' if n > 1 else ''}" for n in ns])
    ax.set_ylabel("launches per second (median, whiskers p10–p90)")
    ax.set_ylim(0, max(r.p90 for r in s) * 1.25)
    ax.set_title(f"Throughput, default profile, {tp.launches} launches per configuration, {tp.cpus} CPUs "
                 f"(× = ratio to 1 thread)", fontsize=10)
    _save(fig, path)


def _phase_colors(names: list[str]) -> dict:
    cmap = plt.get_cmap("tab20")
    return {n: cmap(i % 20) for i, n in enumerate(names)}


def _union_order(breakdowns) -> list[str]:
    order: list[str] = []
    for b in breakdowns:
        prev = None
        for n in b.order:  # a phase new to the union goes right after its predecessor in this launch
            if n not in order:
                order.insert(order.index(prev) + 1 if prev is not None else 0, n)
            prev = n
    if phases.HANDOVER in order and phases.WAIT in order:  # a warm task: handover, then run+reap
        order.remove(phases.HANDOVER)
        order.insert(order.index(phases.WAIT), phases.HANDOVER)
    return order


def plot_phases(ph: phases.PhasesResult, path: Path):
    labels = list(ph.breakdowns)
    order = _union_order(ph.breakdowns.values())
    colors = _phase_colors(order)
    fig, ax = plt.subplots(figsize=(10, 1.2 + 1.0 * len(labels)))
    for i, label in enumerate(labels):
        b = ph.breakdowns[label]
        left = 0.0
        for n in order:
            w = b.phases[n].median if n in b.phases else 0.0
            ax.barh(i, w, left=left, color=colors[n], edgecolor="white", linewidth=0.5,
                    label=n if i == 0 or n not in ph.breakdowns[labels[0]].phases else None)
            if w >= 0.06 * max(sum(s.median for s in x.phases.values()) for x in ph.breakdowns.values()):
                ax.text(left + w / 2, i, n, ha="center", va="center", fontsize=7)
            left += w
        ax.text(left, i, f"  {fmt_ms(left)} ms", va="center", fontsize=8)
    ax.set_yticks(range(len(labels)), labels)
    ax.invert_yaxis()
    ax.set_xlabel("ms (median of each phase, stacked), static program")
    ax.set_title("Where the time of a launch goes (warm: the task only; its sandbox was prepared earlier, "
                 "off its path)", fontsize=10)
    handles, names = ax.get_legend_handles_labels()
    seen = {}
    for h, n in zip(handles, names):
        seen.setdefault(n, h)
    ax.legend(seen.values(), seen.keys(), fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5),
              title="phase, in launch order", title_fontsize=8)
    xmax = max(sum(s.median for s in b.phases.values()) for b in ph.breakdowns.values())
    ax.set_xlim(0, xmax * 1.15)
    _save(fig, path)


# ---- markdown ---------------------------------------------------------------------
def _row(cells) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def _table(header, rows) -> list[str]:
    return [_row(header), _row(["---"] * len(header))] + [_row(r) for r in rows]


def _ms(s: Summary) -> list[str]:
    return [fmt_ms(s.median), fmt_ms(s.p10), fmt_ms(s.p90)]


def _spread(s: Summary) -> str:
    return f"{fmt_ms(s.median)} ({fmt_ms(s.p10)}–{fmt_ms(s.p90)})"


def _section_latency(lat: latency.LatencyResult) -> list[str]:
    out = ["## 1. Launch latency", "",
           f"Wall time from the call until a program that does nothing has exited, for every launcher, "
           f"{lat.rounds} launches each. All {len(lat.samples.wall_ms)} (program, launcher) pairs ran "
           f"interleaved in one round-robin, so the ratios compare launches made seconds apart. The ratio is "
           f"median / median of `subprocess.run` of the same program; its p10–p90 is that of the per-round "
           f"ratios. External tools are started with `subprocess.run` like the baseline. "
           f"Took {lat.seconds:.0f} s.", ""]
    for prog, path in lat.programs.items():
        out += [f"**{prog}** (`{path}`)", ""]
        rows = []
        for v in latency.VARIANTS:
            if lat.has(prog, v):
                r = lat.ratio(prog, v)
                spread = "(baseline)" if v == latency.SUBPROCESS else f"{fmt_ratio(r.p10)}–{fmt_ratio(r.p90)}"
                f = lat.floor_ratio(prog, v)
                floor_cell = f"{fmt_ratio(f.value)} of `{latency.FLOOR_OF[v]}`" if f is not None else ""
                rows.append([v, *_ms(lat.summary(prog, v)), fmt_ratio(r.value), spread, floor_cell])
            else:
                rows.append([v, "–", "–", "–", "skipped", lat.skipped.get((prog, v), "not measured"), ""])
        out += _table(["launcher", "median ms", "p10", "p90", "× subprocess.run", "per-round p10–p90",
                       "× its floor"], rows)
        out.append("")
    out += ["The `floor:` rows are the kernel's own cost of each configuration: a small C library "
            "(`benchmarks/floor.c`, built by the run) does `clone(CLONE_VM|CLONE_VFORK)` with only the named "
            "steps in the child and then `execve`, called through ctypes in the same round-robin. They are "
            "cumulative, top to bottom, except the last (a fresh network namespace instead of the pooled one). "
            "Each launcher's last column is its median over the median of the floor of what it enforces; the "
            "floors leave out cgroup placement, rlimits, the fd table and a pid 1, which isolate adds.", ""]
    out += _latency_warm(lat)
    out += ["![launch latency](perf/latency.png)", ""]
    return out


def _pool_row(stats: dict, settle_ms: list[float] | None) -> list[str]:
    before, after = stats["before"], stats["after"]
    d = {k: after[k] - before.get(k, 0) for k in after}
    tasks = d.get("served_warm", 0) + d.get("served_cold", 0)
    return [str(tasks), str(d.get("served_warm", 0)), str(d.get("served_cold", 0)), str(d.get("prepared", 0)),
            _spread(Summary.of(settle_ms)) if settle_ms else "–", f"`{json.dumps(after)}`"]


def _pool_verdict(stats: list[dict]) -> str:
    """From WarmPool.stats {"before": ..., "after": ...} of the timed loops."""
    return _pool_verdict_deltas([{k: x["after"][k] - x["before"].get(k, 0) for k in x["after"]} for x in stats])


def _pool_verdict_deltas(deltas: list[dict]) -> str:
    if not deltas:
        return ""
    cold = sum(d.get("served_cold", 0) for d in deltas)
    warm = sum(d.get("served_warm", 0) for d in deltas)
    if cold == 0:
        return f"All {warm} timed tasks (warm-up rounds included) found a ready sandbox: the pools kept up."
    return (f"{cold} of {warm + cold} timed tasks found no ready sandbox and were prepared on the caller's path "
            f"(`served_cold`): the pools did not always keep up, and those tasks are in the warm figures.")


def _latency_warm(lat: latency.LatencyResult) -> list[str]:
    keys = [(prog, v) for prog in lat.programs for v in latency.WARM_VARIANTS if (prog, v) in lat.pool_stats]
    if not keys:
        return []
    out = [f"The *warm* rows hand each launch as a task to an `isolate.WarmPool(profile, size={lat.pool_size})` "
           f"(`pool.run(argv)`), one pool per profile and program, made and filled (`pool.wait_ready()`) before "
           f"the timed loop. The pool starts preparing a replacement (clone, namespaces, file system view, pid 1) "
           f"in its own thread as soon as a task takes a sandbox, so that refill runs at the same time as the "
           f"task, as it does in use. After each warm task the runner waits, outside the timed window, until "
           f"the pool is full again: the tasks are paced so that none finds the pool empty. The pools' "
           f"`stats` over the timed rounds:", ""]
    rows = []
    for prog, v in keys:
        rows.append([v.split(": ", 1)[1], prog, lat.pool_size,
                     *_pool_row(lat.pool_stats[(prog, v)], lat.samples.settle_ms.get((prog, v)))])
    out += _table(["pool", "program", "size", "tasks", "served_warm", "served_cold", "prepared",
                   "untimed wait for the refill, ms (p10–p90)", "`pool.stats` at the end"], rows)
    out += ["", _pool_verdict([lat.pool_stats[k] for k in keys])]
    prog = latency.STATIC
    parts = []
    for warm, cold in latency.WARM_VARIANTS.items():
        if lat.has(prog, warm) and lat.has(prog, cold):
            r = lat.samples.ratio((prog, warm), (prog, cold))
            parts.append(f"`{cold.split(': ', 1)[1].split(' ')[0]}` {fmt_ms(lat.summary(prog, cold).median)} → "
                         f"{fmt_ms(lat.summary(prog, warm).median)} ms ({fmt_ratio(r.value)}, paired p10–p90 "
                         f"{fmt_ratio(r.p10)}–{fmt_ratio(r.p90)})")
    if parts:
        out += ["", f"Warm against cold, {prog}: " + "; ".join(parts) + "."]
    return out + [""]


def _section_parent(ps: parent_size.ParentSizeResult) -> list[str]:
    sizes = sorted(ps.sizes)
    base = _size(sizes[0]) if sizes else "smallest"
    out = ["## 2. Cost against the parent's size", "",
           "A fresh Python process per size allocates a `bytearray` of that size and writes one byte per "
           "4096, so that every page is resident (VmRSS below is measured after that). It then launches the "
           "static program in two interleaved blocks: isolate and `subprocess.run` round-robin "
           f"({ps.rounds_alone} rounds per size), then isolate, `os.fork` + `os.execv` + `waitpid` and "
           "`subprocess.run` round-robin (rounds per size in the table). isolate starts its child with "
           "`clone3(CLONE_VM)` and never copies the caller's page tables; `os.fork` copies them, so its cost "
           "grows with the parent; `subprocess.run` uses `vfork` (CPython ≥ 3.10), which does not copy them "
           "either. The first block gives the launch cost; the second gives fork's, and shows that a fork of "
           "a big parent also slows the launches next to it (last two columns), which is why the first block "
           f"keeps fork out. The sizes ran in {ps.passes} pass(es) (every size once per pass, one process per "
           f"size and pass, each exiting before the next starts); a ratio to the {base} parent is median / "
           f"median, with p10–p90 over the per-pass ratios. Took {ps.seconds:.0f} s.", ""]
    if not sizes:
        return out + ["No size could be measured: " + "; ".join(f"{k} MB: {v}" for k, v in ps.skipped.items()), ""]
    per_pass = " (per pass p10–p90)" if ps.passes > 1 else ""
    head = ["parent", "VmRSS"]
    for m in parent_size.METHODS:
        head += [f"{m}: median ms (p10–p90)", f"× {base}{per_pass}"]
    head += ["rounds with fork", "isolate / fork (paired)", "isolate next to fork", "subprocess.run next to fork"]
    rows = []
    for s in sizes:
        x = ps.sizes[s]
        row = [_size(s), f"{median(x.rss_mb):.0f} MB"]
        for m in parent_size.METHODS:
            r = ps.ratio_to_base(s, m)
            spread = f" ({fmt_ratio(r.p10)}–{fmt_ratio(r.p90)})" if per_pass and s != sizes[0] else ""
            row += [_spread(x.summary(m)), fmt_ratio(r.value) + spread]
        row += [len(x.wall_ms[parent_size.FORK]),
                fmt_ratio(ps.ratio_between(s, parent_size.ISOLATE_NEAR_FORK, parent_size.FORK).value),
                f"{_spread(x.summary(parent_size.ISOLATE_NEAR_FORK))}, "
                f"{fmt_ratio(ps.ratio_to_base(s, parent_size.ISOLATE_NEAR_FORK).value)}",
                f"{_spread(x.summary(parent_size.SUBPROCESS_NEAR_FORK))}, "
                f"{fmt_ratio(ps.ratio_to_base(s, parent_size.SUBPROCESS_NEAR_FORK).value)}"]
        rows.append(row)
    out += _table(head, rows) + [""]
    for k, v in ps.skipped.items():
        out.append(f"- {_size(k)} skipped: {v}")
    touch = ", ".join(f"{_size(s)}: {median(ps.sizes[s].touch_seconds):.1f} s" for s in sizes)
    out += [f"Allocating and touching the memory took (median per process) {touch}.", "",
            "![parent size](perf/parent_size.png)", ""]
    return out


def _growth_of(values: dict[int, float]) -> float:
    xs = sorted(values)
    return values[xs[-1]] - values[xs[0]]


def _section_mounts(m: mounts.MountsResult) -> list[str]:
    counts = list(m.counts)
    out = ["## 3. Cost against the host's mount table", "",
           f"A launch with a mount namespace starts from a copy of the caller's: `clone` with `CLONE_NEWNS` makes "
           f"the kernel copy every mount of the caller's namespace, and the file system view then detaches that "
           f"copy (after `pivot_root`, the old root goes with `umount2(MNT_DETACH)`). To see how that scales, a "
           f"fresh Python process per count runs under `{' '.join(mounts.UNSHARE)}` (a mount namespace of its own, "
           f"invisible to everybody else), mounts that many extra tmpfs (`{mounts.TMPFS_OPTIONS}`) on directories "
           f"under one directory in /tmp, and then launches the static program with the default profile, "
           f"interleaved round-robin: cold (`isolate.Popen` + `wait`, with its phases), warm (a task handed to a "
           f"`WarmPool` of size {programs.WARM_POOL_SIZE} made after the mounts, `pool.Popen` + `wait` end to "
           f"end, paced as in section 1), warm with the pool's refill held until the task has ended (a "
           f"diagnostic subclass, not how `WarmPool` runs: it separates the task from the refill that "
           f"`WarmPool` starts as soon as a task takes a sandbox) and `subprocess.run`, which makes no mount "
           f"namespace. The counts ran in {m.passes} pass(es) ({', '.join(map(str, counts))}, ...; one process "
           f"per count and pass), {m.rounds} rounds per count in all; a ratio to {counts[0] if counts else 0} "
           f"extra mounts is median / median, with p10–p90 over the per-pass ratios. Took {m.seconds:.0f} s.", ""]
    for k, v in m.skipped.items():
        out.append(f"- {k} extra mounts skipped: {v}")
    if m.skipped:
        out.append("")
    if len(counts) < 2:
        return out + ["Fewer than two counts were measured: nothing to compare.", ""]
    lo, hi = counts[0], counts[-1]
    per_pass = " (per pass p10–p90)" if m.passes > 1 else ""
    head = ["extra mounts", "mounts in the child's table"]
    for series in mounts.SERIES:
        head += [f"{series}: median ms (p10–p90)", f"× {lo}{per_pass}"]
    rows = []
    for n in counts:
        c = m.counts[n]
        row = [n, f"{median(c.mounts_total):.0f}"]
        for series in mounts.SERIES:
            r = m.ratio_to_base(n, series)
            spread = f" ({fmt_ratio(r.p10)}–{fmt_ratio(r.p90)})" if per_pass and n != lo else ""
            row += [_spread(c.summary(series)), fmt_ratio(r.value) + spread]
        rows.append(row)
    out += _table(head, rows) + [""]

    cold_b = {n: m.counts[n].cold_breakdown for n in counts}
    prep_b = {n: m.counts[n].prepared_breakdown for n in counts}
    grow_phases = [p for p in ("clone", "mount") if all(p in cold_b[n].phases for n in counts)]
    head = ["extra mounts"] + [f"cold `{p}`" for p in grow_phases] + ["cold, all other phases"]
    head += [f"preparation `{p}`" for p in grow_phases] + ["preparation until ready", "served_warm / served_cold "
                                                                                     "(warm; held)"]
    rows = []
    for n in counts:
        b, pb = cold_b[n], prep_b[n]
        others = sum(s.median for k, s in b.phases.items() if k not in grow_phases)
        st = m.counts[n].pool_stats
        pools = "; ".join(f"{st[x].get('served_warm', 0)} / {st[x].get('served_cold', 0)}"
                          for x in (mounts.WARM, mounts.HELD) if x in st)
        rows.append([n] + [_spread(b.phases[p]) for p in grow_phases] + [fmt_ms(others)]
                    + [_spread(pb.phases[p]) if p in pb.phases else "–" for p in grow_phases]
                    + [_spread(pb.total), pools])
    out += ["Phases (median ms, p10–p90) of the cold launches, and of the warm sandboxes' preparations (their "
            "`timings`, stamped in the pool's thread before the task):", ""]
    out += _table(head, rows) + [""]

    # ---- the sentences, from the numbers above
    med = {series: m.series_medians(series) for series in mounts.SERIES}
    d_cold = _growth_of(med[mounts.COLD])
    text = []
    slope = m.slope(med[mounts.COLD])
    text.append(f"From {lo} to {hi} extra mounts the cold launch went from {fmt_ms(med[mounts.COLD][lo])} to "
                f"{fmt_ms(med[mounts.COLD][hi])} ms ({fmt_ratio(m.ratio_to_base(hi, mounts.COLD).value)}, "
                f"{d_cold:+.3f} ms; least-squares slope over the {len(counts)} counts {slope:.2f} ms per 1000 "
                f"mounts, {slope:.2f} µs per mount).")
    growth = {p: _growth_of({n: cold_b[n].phases[p].median if p in cold_b[n].phases else 0.0 for n in counts})
              for p in _union_order(cold_b.values())}
    ranked = sorted(growth, key=lambda p: -growth[p])
    top = [p for p in ranked[:2] if growth[p] > 0]
    if top and d_cold > 0:
        rest = max((abs(growth[p]) for p in ranked if p not in top), default=0.0)
        share = sum(growth[p] for p in top) / d_cold
        text.append("Of its phases, " + " and ".join(f"`{p}` grew by {growth[p]:.3f} ms "
                                                      f"({fmt_ms(cold_b[lo].phases[p].median)} → "
                                                      f"{fmt_ms(cold_b[hi].phases[p].median)} ms)" for p in top)
                    + f", together {share:.0%} of the growth of the median launch; no other phase moved by more "
                      f"than {rest:.3f} ms.")
        why = {"clone": "`clone` is where the kernel copies the caller's mount namespace for the sandbox",
               "mount": "`mount` builds the view and ends by detaching the old root, which is that copy with "
                        "every mount in it"}
        named = [why[p] for p in top if p in why]
        if named:
            text.append("; ".join(named) + ".")
    elif d_cold <= 0:
        text.append("The cold launch did not grow with the mount table in this run.")
    d_warm = _growth_of(med[mounts.WARM])
    text.append(f"The warm task went from {fmt_ms(med[mounts.WARM][lo])} to {fmt_ms(med[mounts.WARM][hi])} ms "
                f"({fmt_ratio(m.ratio_to_base(hi, mounts.WARM).value)}, {d_warm:+.3f} ms, slope "
                f"{m.slope(med[mounts.WARM]):.2f} ms per 1000 mounts)"
                + (f": {d_warm / d_cold:.0%} of the cold launch's growth." if d_cold > 0 else "."))
    prep = {n: prep_b[n].total.median for n in counts}
    d_prep = _growth_of(prep)
    text.append(f"The preparations of its sandboxes, in the pool's thread, went from {fmt_ms(prep[lo])} to "
                f"{fmt_ms(prep[hi])} ms until ready ({d_prep:+.3f} ms"
                + (f", {d_prep / d_cold:.0%} of the cold launch's growth" if d_cold > 0 else "")
                + "): that work is not on the path of the task a sandbox later serves, but the pool does it while "
                  "the task before runs.")
    d_held = _growth_of(med[mounts.HELD])
    text.append(f"With the refill held until the task had ended, the warm task went from "
                f"{fmt_ms(med[mounts.HELD][lo])} to {fmt_ms(med[mounts.HELD][hi])} ms "
                f"({fmt_ratio(m.ratio_to_base(hi, mounts.HELD).value)}, {d_held:+.3f} ms).")
    if d_warm > 0 and d_held < 0.5 * d_warm:
        text.append(f"So most of the warm task's growth ({d_warm - d_held:.3f} of {d_warm:.3f} ms) came with the "
                    f"pool's refill, which `WarmPool` starts as soon as the task takes its sandbox and which "
                    f"prepares the next one (its `clone` copying the mount table, see the table) while the task "
                    f"runs, on {os.cpu_count()} CPUs.")
    elif d_warm > 0:
        text.append("Holding the refill did not remove most of the warm task's growth; these numbers do not "
                    "show where the rest of it comes from.")
    d_sub = _growth_of(med[mounts.SUBPROCESS])
    r_sub, r_held = m.ratio_to_base(hi, mounts.SUBPROCESS).value, m.ratio_to_base(hi, mounts.HELD).value
    text.append(f"For comparison, `subprocess.run`, which makes no mount namespace, went from "
                f"{fmt_ms(med[mounts.SUBPROCESS][lo])} to {fmt_ms(med[mounts.SUBPROCESS][hi])} ms in the same "
                f"processes ({fmt_ratio(r_sub)}, {d_sub:+.3f} ms)"
                + (f"; relative to its own time the held warm task ({fmt_ratio(r_held)}) grew about as much."
                   if abs(r_held - r_sub) <= 0.05 else "."))
    deltas = [st for n in counts for st in m.counts[n].pool_stats.values()]
    text.append(_pool_verdict_deltas(deltas))
    base = median([x for n in counts for x in m.counts[n].mounts_before])
    setup = ", ".join(f"{n}: {median(m.counts[n].setup_seconds):.2f} s" for n in counts)
    out += [" ".join(text), "",
            f"The child's table held {base:.0f} mounts before its extra ones (those of the host). Making the "
            f"extra mounts took (median per process) {setup}.", "",
            "![mount table](perf/mounts.png)", ""]
    return out


def _section_netpool(npl: netpool.NetPoolResult, end_stats: dict | None = None) -> list[str]:
    out = ["## 6. The pool of network namespaces", "",
           f"The default profile gives the program a network namespace of its own with only loopback up "
           f"(network mode \"none\"). With `network.pool = true` (the default) that namespace is taken from "
           f"`isolate.net.pool()`, made ahead of time in a background thread and reused once its sandbox is "
           f"gone; with `network.pool = false` (`overrides=[\"{netpool.OVERRIDE}\"]`) `clone` makes a new one "
           f"every launch, the child brings loopback up, and the kernel destroys it afterwards. Both launch the "
           f"static program, interleaved, {npl.rounds} launches each, with their phases. Took "
           f"{npl.seconds:.0f} s.", ""]
    for k, v in npl.skipped.items():
        out.append(f"- `{k}` skipped: {v}")
    if not all(v in npl.wall_ms for v in netpool.VARIANTS):
        return out + [""]
    r = npl.ratio()
    rows = [[netpool.POOLED, _spread(npl.summary(netpool.POOLED)), "1.00×", "(baseline)"],
            [netpool.UNPOOLED, _spread(npl.summary(netpool.UNPOOLED)), fmt_ratio(r.value),
             f"{fmt_ratio(r.p10)}–{fmt_ratio(r.p90)}"]]
    out += _table(["profile", "median ms (p10–p90)", "× pooled", "per-round p10–p90"], rows) + [""]
    a, b = npl.breakdowns[netpool.POOLED], npl.breakdowns[netpool.UNPOOLED]
    order = _union_order([a, b])
    diff = {n: (b.phases[n].median if n in b.phases else 0.0) - (a.phases[n].median if n in a.phases else 0.0)
            for n in order}
    rows = [[f"`{n}`", _spread(a.phases[n]) if n in a.phases else "–", _spread(b.phases[n]) if n in b.phases
             else "–", f"{diff[n]:+.3f}"] for n in order]
    out += _table(["phase", "pooled: median ms (p10–p90)", "not pooled", "difference (ms)"], rows) + [""]
    p, u = npl.summary(netpool.POOLED).median, npl.summary(netpool.UNPOOLED).median
    big = sorted(order, key=lambda n: -abs(diff[n]))[:3]
    if u > p:
        line = (f"Without the pool a default launch takes {fmt_ms(u)} ms instead of {fmt_ms(p)} ms: the pool saves "
                f"{u - p:.3f} ms a launch ({fmt_ratio(r.value)} without it, paired p10–p90 "
                f"{fmt_ratio(r.p10)}–{fmt_ratio(r.p90)}).")
    else:
        line = (f"In this run the pool did not save time: {fmt_ms(p)} ms with it, {fmt_ms(u)} ms without "
                f"({fmt_ratio(r.value)}).")
    line += (" The phases that differ most: " + ", ".join(f"`{n}` {diff[n]:+.3f} ms" for n in big) + ".")
    out += [line, ""]
    d = npl.stats_delta()
    if d is None:
        out += ["This caller may not keep a pool (`isolate.net.pool()` is None: it needs root), so both variants "
                "made their namespace at clone.", ""]
    else:
        out += [f"`isolate.net.pool().stats` before this measurement `{json.dumps(npl.stats_before)}`, after it "
                f"`{json.dumps(npl.stats_after)}`; during it: "
                + ", ".join(f"{k} {v}" for k, v in d.items())
                + ". (`taken`: launches that got a prepared namespace; `missed`: launches that found none ready, "
                  "so clone made one; `reused`: namespaces that came back to the pool after their sandbox was "
                  "gone; `made`: namespaces the pool's thread created.)"]
        if end_stats is not None:
            out += ["", f"The same stats at the end of the whole run (every section's launches in this process, "
                        f"warm pools included): `{json.dumps(end_stats)}`."]
        out.append("")
    return out


def _section_throughput(tp: throughput.ThroughputResult) -> list[str]:
    out = ["## 4. Throughput", "",
           f"{tp.launches} launches of the static program with the default profile per configuration, "
           f"split evenly over the threads of one parent, the threads released together by a barrier. The "
           f"configurations ran interleaved ({', '.join(map(str, tp.configs))}, ...) {tp.repetitions} times; "
           f"launches/s is the median over the repetitions, the ratio to 1 thread is median / median with "
           f"p10–p90 over the per-repetition ratios. *CPU busy* is the CPU time of this process and its "
           f"children divided by wall time × {tp.cpus} CPUs. Took {tp.seconds:.0f} s.", ""]
    rows = []
    for n, c in tp.configs.items():
        r = tp.ratio(n)
        rows.append([n, f"{c.rate.median:.0f}", f"{c.rate.p10:.0f}", f"{c.rate.p90:.0f}", fmt_ratio(r.value),
                     f"{fmt_ratio(r.p10)}–{fmt_ratio(r.p90)}", _spread(Summary.of(c.walls)),
                     f"{median(c.cpu_busy):.0%}"])
    out += _table(["threads", "launches/s", "p10", "p90", "× 1 thread", "p10–p90", "ms per launch (p10–p90)",
                   "CPU busy"], rows)
    out += ["", "Median phase of one launch (ms) at each thread count — what grows under concurrency:", ""]
    order = _union_order(c.breakdown for c in tp.configs.values())
    rows = [[n] + [fmt_ms(c.breakdown.phases[p].median) if p in c.breakdown.phases else "–" for p in order]
            for n, c in tp.configs.items()]
    out += _table(["threads"] + [f"`{p}`" for p in order], rows)
    out += ["", "![throughput](perf/throughput.png)", ""]
    return out


def _section_phases(ph: phases.PhasesResult) -> list[str]:
    labels = list(ph.breakdowns)
    out = ["## 5. Where the time goes", "",
           f"`isolate.Popen(...).timings` (and `Result.timings`) stamp each step of the launch path, in ms "
           f"since the launch began. A phase is the gap between its stamp and the previous one; `python` and "
           f"`run+reap` are measured around the call so that the phases add up to the whole launch. Static "
           f"program, profiles interleaved, {ph.rounds} launches each; medians (the medians of the phases do "
           f"not exactly add up to the median of the total). Took {ph.seconds:.0f} s.", ""]
    for label, reason in ph.skipped.items():
        out += [f"- Profile `{label}` skipped: {reason}"]
    if ph.skipped:
        out.append("")
    if not labels:
        return out
    order = _union_order(ph.breakdowns.values())
    head = ["phase", "what"]
    for label in labels:
        head += [f"{label}: median ms (p10–p90)", "share"]
    rows = []
    for n in order:
        row = [f"`{n}`", PHASE_DOC.get(n, "")]
        for label in labels:
            b = ph.breakdowns[label]
            row += [_spread(b.phases[n]), f"{b.share(n):.0%}"] if n in b.phases else ["–", "–"]
        rows.append(row)
    total = ["**whole launch**", "wall time of Popen() + wait()"]
    for label in labels:
        total += [_spread(ph.breakdowns[label].total), ""]
    out += _table(head, rows + [total])
    out += _phases_warm(ph)
    out += ["", "![phases](perf/phases.png)", "",
            f"The same stamps from the command line, one launch (`{' '.join(['isolate'] + ph.cli_command[1:])}`, "
            f"run during this benchmark):", "", "```", ph.cli_output, "```", ""]
    return out


def _phases_warm(ph: phases.PhasesResult) -> list[str]:
    if not ph.prepared:
        return []
    out = ["", f"The *warm* columns are the task of a `WarmPool` (`pool.Popen(argv)` + `wait()`), measured end to "
           f"end: `{phases.HANDOVER}` + `{phases.WAIT}`. The `timings` of a warm launch (`Result.timings`, "
           f"`Popen.timings`) do not describe the task: they are the stamps of its sandbox's preparation, which "
           f"the pool's thread ran before the task was handed over, off the task's path. Those stamps, from the "
           f"same launches (`returned`: until pid 1 was ready for a task; no program is started yet):", ""]
    labels = list(ph.prepared)
    order = _union_order(ph.prepared.values())
    head = ["preparation phase"] + [f"{label}: median ms (p10–p90)" for label in labels]
    rows = [[f"`{n}`"] + [_spread(ph.prepared[label].phases[n]) if n in ph.prepared[label].phases else "–"
                          for label in labels] for n in order]
    rows.append(["**until ready** (`returned` stamp)"] + [_spread(ph.prepared[label].total) for label in labels])
    out += _table(head, rows) + [""]
    for label in labels:
        cold = label[:-len(phases.WARM_SUFFIX)]
        task = ph.breakdowns.get(label)
        if task is None or cold not in ph.breakdowns:
            continue
        c = ph.breakdowns[cold]
        out.append(f"- `{cold}`: a warm task took {fmt_ms(task.total.median)} ms end to end (handover "
                   f"{fmt_ms(task.phases[phases.HANDOVER].median)} ms, run+reap "
                   f"{fmt_ms(task.phases[phases.WAIT].median)} ms) against {fmt_ms(c.total.median)} ms for a cold "
                   f"launch ({fmt_ratio(task.total.median / c.total.median)}); its sandbox had been prepared "
                   f"beforehand in {fmt_ms(ph.prepared[label].total.median)} ms (median, until ready).")
    stats = list(ph.pool_stats.values())
    if stats:
        out += ["", f"Pools of size {programs.WARM_POOL_SIZE}, paced as in section 1: " + _pool_verdict(stats)]
    return out


def _section_fuzz(fz) -> list[str]:
    out = ["## 8. Fuzzing engines in a job sandbox", "",
           f"`benchmarks/fuzz.py`: one trivial target, the same seed corpus and engine seed, the job's own "
           f"command line and environment, unsandboxed (subprocess) and in one sandbox of the `fuzz` profile "
           f"(`isolate.fuzz.run_fuzz`); {fz.rounds} interleaved rounds of {fz.time_s:g} s per model, the order "
           f"alternating. exec/s is the engine's executions over its process's wall time; the ratio is the "
           f"median of the per-round ratios (p10–p90 would need more rounds: min–max shown). *per CPU-second* "
           f"is the median ratio of executions per CPU-second (user + system of the whole process tree), which "
           f"other work on the machine moves much less than wall time. Took {fz.seconds:.0f} s, load "
           f"{fz.load_end:.1f} at the end on {fz.cpus} CPUs.", ""]
    rows = []
    for r in fz.rows:
        lo, hi = r.ratio_range
        rows.append([r.model, f"{r.median('host'):,.0f}", f"{r.median('box'):,.0f}", fmt_ratio(r.ratio),
                     f"{fmt_ratio(lo)}–{fmt_ratio(hi)}", fmt_ratio(r.cpu_ratio)])
    out += _table(["model", "unsandboxed exec/s", "sandboxed exec/s", "ratio", "min–max", "per CPU-second"],
                  rows)
    out += ["", *(f"{m}: not measured (its engine is not installed)." for m in fz.missing)]
    return out + [""]


def _section_triage(tr) -> list[str]:
    out = ["## 9. Fuzz triage replays", "",
           f"`benchmarks/triage.py`: {tr.replays} replays per variant (inputs × 3 runs) of a 3-byte "
           f"heap-buffer-overflow input of `tests/fuzz/planted.c` (`-fsanitize=fuzzer,address,undefined`), "
           f"{tr.rounds} rounds with every variant side by side, the order alternating. `triage()` replays "
           f"with the replay shim (`isolate-replay.so`: LLVMFuzzerTestOneInput called without libFuzzer's start) "
           f"or, for comparison, with libFuzzer's own main; beside it the same replays without the triage "
           f"around them, sandboxed and not. CPU is this process's and its children's per replay. Load "
           f"{tr.load_end:.1f} at the end on {tr.cpus} CPUs.", ""]
    out += triage_bench.table(tr)
    return out + [""]


def _section_summary(res: targets.Results) -> list[str]:
    """The headline ratios, in words."""
    out = ["## Summary", ""]
    lat = res.latency
    if lat is not None:
        prog = latency.STATIC
        sub = lat.summary(prog, latency.SUBPROCESS).median
        parts = []
        for v in (latency.MIN, latency.DEFAULT, latency.STRICT):
            if lat.has(prog, v):
                parts.append(f"{v.split(': ', 1)[1]} {fmt_ms(lat.summary(prog, v).median)} ms "
                             f"({fmt_ratio(lat.ratio(prog, v).value)})")
        out.append(f"- Launching the static program with `subprocess.run` takes {fmt_ms(sub)} ms; through "
                   f"isolate: " + ", ".join(parts) + ".")
        compared = next((v for v in (latency.STRICT, latency.DEFAULT) if lat.has(prog, v)), None)
        if compared and lat.has(prog, latency.BWRAP):
            r = lat.samples.ratio((prog, latency.BWRAP), (prog, compared))
            line = (f"- bwrap with strict-like flags takes {fmt_ms(lat.summary(prog, latency.BWRAP).median)} ms, "
                    f"{fmt_ratio(r.value)} the time of the isolate `{compared.split(': ', 1)[1].split(' ')[0]}` "
                    f"launch")
            if lat.has(prog, latency.UNSHARE):
                line += f"; unshare(1) takes {fmt_ms(lat.summary(prog, latency.UNSHARE).median)} ms"
            out.append(line + ".")
        warm = []
        for w, c in latency.WARM_VARIANTS.items():
            if lat.has(prog, w):
                name = c.split(": ", 1)[1].split(" ")[0]
                warm.append(f"{name} {fmt_ms(lat.summary(prog, w).median)} ms "
                            f"({fmt_ratio(lat.ratio(prog, w).value)})")
        if warm:
            stats = [lat.pool_stats[k] for k in lat.pool_stats if k[0] == prog]
            out.append("- A task handed to a ready sandbox of a `WarmPool` (static program): " + ", ".join(warm)
                       + ". " + _pool_verdict(stats))
    ps = res.parent_size
    if ps is not None and len(ps.sizes) > 1:
        big, small = max(ps.sizes), min(ps.sizes)
        out.append(f"- From the {_size(big)} parent instead of the {_size(small)} one, an isolate launch costs "
                   f"{fmt_ratio(ps.ratio_to_base(big, parent_size.ISOLATE).value)}, `os.fork` + exec "
                   f"{fmt_ratio(ps.ratio_to_base(big, parent_size.FORK).value)} "
                   f"({fmt_ms(ps.sizes[big].summary(parent_size.FORK).median)} ms a launch).")
    m = res.mounts
    if m is not None and len(m.counts) > 1:
        lo, hi = min(m.counts), max(m.counts)
        parts = []
        for series, name in ((mounts.COLD, "a cold default launch"), (mounts.WARM, "a warm task"),
                             (mounts.HELD, "a warm task with the refill held")):
            a, b = m.counts[lo].summary(series).median, m.counts[hi].summary(series).median
            parts.append(f"{name} {fmt_ms(a)} → {fmt_ms(b)} ms ({fmt_ratio(m.ratio_to_base(hi, series).value)})")
        line = f"- With {hi} extra mounts in the caller's mount namespace instead of {lo}: " + ", ".join(parts)
        cold_b = {n: m.counts[n].cold_breakdown for n in (lo, hi)}
        grew = [(p, cold_b[hi].phases[p].median - cold_b[lo].phases[p].median) for p in ("clone", "mount")
                if p in cold_b[lo].phases and p in cold_b[hi].phases]
        if grew:
            line += "; in the cold launch " + " and ".join(f"`{p}` {d:+.3f} ms" for p, d in grew)
        out.append(line + ". Details in section 3.")
    tp = res.throughput
    if tp is not None:
        best = max(tp.configs, key=lambda n: tp.configs[n].rate.median)
        out.append(f"- One thread launches {tp.configs[1].rate.median:.0f}/s with the default profile; the best "
                   f"configuration, {best} threads, {tp.configs[best].rate.median:.0f}/s "
                   f"({fmt_ratio(tp.ratio(best).value)}).")
    ph = res.phases
    if ph is not None and "default" in ph.breakdowns:
        b = ph.breakdowns["default"]
        out.append(f"- The largest phase of a default launch is `{b.largest()}` "
                   f"({fmt_ms(b.phases[b.largest()].median)} ms, {b.share(b.largest()):.0%}).")
    npl = res.netpool
    if npl is not None and all(v in npl.wall_ms for v in netpool.VARIANTS):
        p, u = npl.summary(netpool.POOLED).median, npl.summary(netpool.UNPOOLED).median
        out.append(f"- The pool of network namespaces: a default launch takes {fmt_ms(p)} ms with it, {fmt_ms(u)} ms "
                   f"with `network.pool = false` ({fmt_ratio(npl.ratio().value)}, {u - p:+.3f} ms).")
    return out + [""]


def _section_cli(r: cli.CliResult) -> list[str]:
    out = ["## 7. The command line against its peers", "",
           f"End to end from a shell's point of view: `hyperfine -N` ({r.version}) runs each command {r.runs} "
           f"times per pass (after warm-up runs), {r.passes} passes with the commands in a rotated order; a "
           f"ratio is the median over the passes of the two medians of the same pass. The same commands were "
           f"also timed round-robin ({r.rounds} rounds, one launch of each per round). The program is "
           f"`{r.prog}`. isolate's first call (untimed) stored its plan in a cache directory of the run's own; "
           + ("every timed isolate command took the native path (`--timing` said so)."
              if r.native_hit and all(r.native_hit.values()) else
              "NOT every isolate command took the native path: " + ", ".join(
                  f"{k}: {'native' if v else 'Python'}" for k, v in r.native_hit.items()) + "."), ""]
    out += cli.table(r)
    out += ["", "bwrap has no seccomp filter, no cgroup and no Landlock in these commands; isolate's `strict` "
            "has all three, `default` the first two.", "", "The commands:", ""]
    out += [f"- {name}: `{shlex.join(argv)}`" for name, argv in r.argv.items()]
    return out + [""]


def _section_targets(ts: list[targets.Target]) -> list[str]:
    out = ["## Targets", "",
           "Judged on this run's medians (the thresholds are the project's goals; the numbers are measured).", ""]
    out += _table(["target", "this run", "status"], [[t.goal, t.measured, f"**{t.status}**"] for t in ts])
    whys = [t for t in ts if t.why]
    if whys:
        out += ["", "What holds the unmet targets back (generated from this run's phase breakdown):", ""]
        out += [f"- *{t.goal}*: {t.why}" for t in whys]
    return out + [""]


def _section_method(res: targets.Results, opts: dict) -> list[str]:
    out = ["## Method", "",
           "- Timer: `time.perf_counter_ns()` around each call, in this process; the garbage collector is "
           "paused while measuring. A few warm-up rounds are run first and discarded.",
           "- *median (p10–p90)*: the median launch and the 10th/90th percentiles of all launches of that "
           "variant. A ratio is median / median of two variants measured interleaved in the same run.",
           "- The machine is shared: other processes ran during the measurement (see the load averages "
           "above). Interleaving spreads that noise over every variant, but not necessarily evenly: a "
           "launch that passes control between processes several times (parent and child for the id maps, "
           "then the sandbox's pid 1, then the program) can wait for a CPU at each handover, so when the CPUs "
           "are busy its p90 grows more than that of a plain `posix_spawn`. The p10 column shows the cost when "
           "little got in the way.",
           f"- Iterations of this run: {json.dumps(opts)}."]
    lat = res.latency
    if lat is not None:
        out += [f"- The seccomp+rlimits+fds profile is `{json.dumps(lat.minimal_profile)}`. It is loaded once "
                "with `isolate.load_profile` and passed as a `Profile`, as a caller that launches many times "
                "would; the row *dict profile passed each call* passes the dict itself to every "
                "`isolate.run`, which validates it again each time.",
                "- `default` and `strict` are passed by name (`profile=\"default\"`), which the library caches.",
                f"- unshare: `{shlex.join(lat.unshare_argv)}`."]
        out += [f"- bwrap, {prog}: `{shlex.join(argv)}`." for prog, argv in lat.bwrap_argv.items()]
    out += ["- Warm launches: each `WarmPool` is made once per measurement (and per program), filled with "
            "`pool.wait_ready()` and checked with one task before the timed loop. After every warm task the "
            "runner calls `pool.wait_ready()` again outside the timed window (its duration is reported as the "
            "untimed wait), so every timed task finds a ready sandbox; `pool.stats` (`served_warm`, "
            "`served_cold`) are reported to show it. The pool's refill still overlaps the task itself, as in "
            "use. The *refill held* variant of section 3 is a subclass of `WarmPool` in the benchmarks "
            "(`programs.HeldRefillPool`) whose refill thread waits until the task has been reaped: a diagnostic, "
            "not a way `WarmPool` can be used."]
    notes = (lat.notes if lat else []) + (res.phases.notes if res.phases else [])
    out += [f"- {n[:1].upper()}{n[1:]}" for i, n in enumerate(notes) if n not in notes[:i]]
    return out + [""]


def write(res: targets.Results, out_dir: Path, info: dict, command: str, elapsed: float, opts: dict,
          started: datetime.datetime, load_start, load_end) -> Path:
    perf = out_dir / "perf"
    perf.mkdir(parents=True, exist_ok=True)
    if res.latency:
        plot_latency(res.latency, perf / "latency.png")
    if res.parent_size and res.parent_size.sizes:
        plot_parent_size(res.parent_size, perf / "parent_size.png")
    if res.throughput:
        plot_throughput(res.throughput, perf / "throughput.png")
    if res.phases and res.phases.breakdowns:
        plot_phases(res.phases, perf / "phases.png")
    if res.mounts and len(res.mounts.counts) > 1:
        plot_mounts(res.mounts, perf / "mounts.png")

    ts = targets.evaluate(res)
    lines = ["# Performance", "",
             f"<!-- generated by `{command}`; do not edit by hand, run it again -->", "",
             f"Measured on {started:%Y-%m-%d %H:%M} UTC by `{command}`, which took "
             f"{elapsed / 60:.1f} min and wrote this page and the plots in `perf/`. Every number here comes "
             f"from that run.", "",
             "## Machine", ""]
    rows = [[k, v] for k, v in info.items()]
    rows.append(["load average (1/5/15 min) at start → end",
                 f"{' '.join(f'{x:.2f}' for x in load_start)} → {' '.join(f'{x:.2f}' for x in load_end)}"])
    lines += _table(["", ""], rows) + [""]
    lines += _section_summary(res)
    lines += _section_targets(ts)
    if res.latency:
        lines += _section_latency(res.latency)
    if res.parent_size:
        lines += _section_parent(res.parent_size)
    if res.mounts:
        lines += _section_mounts(res.mounts)
    if res.throughput:
        lines += _section_throughput(res.throughput)
    if res.phases:
        lines += _section_phases(res.phases)
    if res.netpool:
        lines += _section_netpool(res.netpool, res.netns_stats_end)
    if res.cli:
        lines += _section_cli(res.cli)
    if res.fuzz:
        lines += _section_fuzz(res.fuzz)
    if res.triage:
        lines += _section_triage(res.triage)
    if res.netproxy:
        lines += netproxy.section(res.netproxy)
    lines += _section_method(res, opts)
    path = out_dir / "performance.md"
    # The agent sessions' section (benchmarks.sessions, run on its own) is kept.
    keep = ""
    if path.exists():
        from .sessions import BEGIN, END

        old = path.read_text()
        if BEGIN in old and END in old:
            keep = "\n" + old[old.index(BEGIN):old.index(END) + len(END)] + "\n"
    path.write_text("\n".join(lines) + keep)
    return path
