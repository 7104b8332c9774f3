"""Progress of a fuzzing run: a rich table on a terminal (per job: exec/s, execs,
corpus, crashes found), or JSON lines for machines (--json), one per update."""

from __future__ import annotations

import json
import sys
import threading
import time

from .jobs import FuzzJob


class JsonLines:
    """One JSON object per job update on `stream` (at most one per job per `every` s)."""

    def __init__(self, stream=None, every: float = 1.0):
        self.stream = stream or sys.stdout
        self.every = every
        self.last: dict = {}
        self.lock = threading.Lock()

    def update(self, job: FuzzJob) -> None:
        now = time.monotonic()
        final = job.outcome not in ("pending", "running")
        with self.lock:
            if not final and now - self.last.get(job.index, 0) < self.every:
                return
            self.last[job.index] = now
            self.stream.write(json.dumps({"event": "job", **job.as_dict()}) + "\n")
            self.stream.flush()

    def finish(self, summary: dict) -> None:
        with self.lock:
            self.stream.write(json.dumps({"event": "summary", "totals": summary["totals"],
                                          "artifacts": len(summary["artifacts"]),
                                          "crashes": len(summary["crashes"]), "triage": summary["triage"]}) + "\n")
            self.stream.flush()


class RichTable:
    """A live table on the terminal: one row per job."""

    def __init__(self, jobs: int, engine: str):
        from rich.console import Console  # rich is only needed on a terminal
        from rich.live import Live  # rich is only needed on a terminal

        self.engine = engine
        self.jobs: dict[int, FuzzJob] = {}
        self.console = Console(stderr=True)
        self.live = Live(self._table(), console=self.console, refresh_per_second=2)
        self.lock = threading.Lock()

    def __enter__(self):
        self.live.__enter__()
        return self

    def __exit__(self, *exc):
        self.live.update(self._table())
        return self.live.__exit__(*exc)

    def _table(self):
        from rich.table import Table  # rich is only needed on a terminal

        t = Table(title=f"isolate fuzz ({self.engine})")
        for col in ("job", "state", "exec/s", "execs", "corpus", "crashes", "unique", "runs"):
            t.add_column(col, justify="right")
        for i in sorted(self.jobs):
            j = self.jobs[i]
            t.add_row(str(i), j.outcome, f"{j.stats.exec_per_s:,.0f}", f"{j.stats.execs:,}",
                      str(j.stats.corpus_size), str(max(j.stats.crashes, len(j.artifacts))), str(j.stats.unique),
                      str(j.runs))
        return t

    def update(self, job: FuzzJob) -> None:
        with self.lock:
            self.jobs[job.index] = job
            self.live.update(self._table())


def summary_lines(summary: dict) -> list[str]:
    t = summary["totals"]
    out = [f"{t['jobs']} job(s), {t['wall_s']:.1f} s: {t['execs']:,} execs, {t['exec_per_s']:,.0f} exec/s, "
           f"corpus {t['corpus_size']}, {len(summary['artifacts'])} artifact(s)"]
    if t.get("cgroup_oom_jobs"):
        out.append(f"{t['cgroup_oom_jobs']} job(s) hit the cgroup memory limit (the OOM backstop)")
    if summary["triage"] != "available":
        out.append("triage not available (isolate.fuzz.triage is missing): artifacts are listed in summary.json")
    else:
        out.append(f"{len(summary['crashes'])} unique crash(es) in {summary.get('out', 'OUT')}/crashes/")
    for j in summary["jobs"]:
        if j.get("error"):
            out.append(f"job {j['job']}: {j['error']}")
    return out
