"""isolate.fuzz: fuzzing jobs, each an unchanged engine in one sandbox of the `fuzz`
profile, then triage of what they found in fresh sandboxes.

    from isolate import fuzz
    summary = fuzz.run_fuzz("./target", [], engine="libfuzzer", corpus="seeds", out="out", time_s=60)

Not imported by `import isolate`.
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
import time
from typing import Callable

from . import engines
from .engines import ENGINES, EngineError, EngineInfo, Stats, check_target, detect, engines_report
from . import triage
from .jobs import FuzzJob, run_job

__all__ = ["run_fuzz", "FuzzJob", "FuzzError", "ENGINES", "EngineError", "EngineInfo", "Stats", "detect",
           "engines_report", "check_target", "check_inputs"]


class FuzzError(EngineError):
    """Bad input to the runner: nothing was started (the CLI exits 2)."""


def check_inputs(target: str, args: list[str], *, engine: str, corpus: str, out: str, jobs: int, time_s: float,
                 timeout_s: float, rss_limit_mb: int) -> str:
    """Every check before anything starts; returns the target's absolute path."""
    if jobs < 1:
        raise FuzzError(f"--jobs: expected at least 1, got {jobs}")
    if not time_s > 0:
        raise FuzzError(f"--time: expected seconds > 0, got {time_s}")
    if not timeout_s > 0:
        raise FuzzError(f"--timeout: expected seconds > 0, got {timeout_s}")
    if rss_limit_mb < 64:
        raise FuzzError(f"--rss-limit-mb: expected at least 64, got {rss_limit_mb}")
    path = check_target(engine, target, args)
    if not os.path.isdir(corpus):
        raise FuzzError(f"--corpus {corpus}: no such directory")
    if not os.access(corpus, os.R_OK | os.X_OK):
        raise FuzzError(f"--corpus {corpus}: not readable")
    _check_writable(out)
    return path


def _check_writable(out: str) -> None:
    if os.path.exists(out) and not os.path.isdir(out):
        raise FuzzError(f"--out {out}: exists and is not a directory")
    probe_dir = out
    while not os.path.exists(probe_dir):
        probe_dir = os.path.dirname(probe_dir) or "."
    if not os.path.isdir(probe_dir):
        raise FuzzError(f"--out {out}: {probe_dir} is not a directory")
    try:  # really write (root passes os.access on a read-only directory or file system)
        fd, name = tempfile.mkstemp(prefix=".isolate-fuzz-probe-", dir=probe_dir)
        os.close(fd)
        os.unlink(name)
    except OSError as e:
        raise FuzzError(f"--out {out}: not writable ({e.strerror})") from None


def run_fuzz(target: str, args: list[str] = (), *, engine: str, corpus: str, out: str, jobs: int = 1,
             time_s: float = 60.0, timeout_s: float = 25.0, rss_limit_mb: int = 2048,
             on_update: Callable[[FuzzJob], None] = lambda j: None, triage_runs: int = 3,
             stop: threading.Event | None = None, seed: int | None = None) -> dict:
    """Run `jobs` fuzzing jobs of `engine` on TARGET for time_s seconds, each in its own
    sandbox, then triage every artifact they left. The jobs share one corpus: libFuzzer's
    jobs all add to and reload OUT/corpus/, afl-fuzz's sync through OUT/afl/ (job 0 -M, the
    others -S; each writes only its own instance directory). `seed`: the engine's random seed.
    Returns the summary: {"jobs": [...], "totals": {...}, "artifacts": [...], "crashes": [...]}."""
    args = list(args)
    path = check_inputs(target, args, engine=engine, corpus=corpus, out=out, jobs=jobs, time_s=time_s,
                        timeout_s=timeout_s, rss_limit_mb=rss_limit_mb)
    corpus = os.path.abspath(corpus)
    out = os.path.abspath(out)
    os.makedirs(os.path.join(out, "jobs"), exist_ok=True)
    start = time.monotonic()
    all_jobs = []
    stop = stop or threading.Event()
    shared = {"libfuzzer": os.path.join(out, "corpus"), "afl": os.path.join(out, "afl")}.get(engine)
    if shared:
        os.makedirs(shared, exist_ok=True)
    for i in range(jobs):
        job_dir = os.path.join(out, "jobs", str(i))
        os.makedirs(job_dir, exist_ok=True)
        all_jobs.append(FuzzJob(index=i, engine=engine, job_dir=job_dir))
    threads = [threading.Thread(target=run_job, args=(j, path, args),
                                kwargs=dict(seeds=corpus, time_s=time_s, timeout_s=timeout_s,
                                            rss_limit_mb=rss_limit_mb, on_update=on_update, stop=stop,
                                            shared=shared, jobs=jobs, seed=seed),
                                daemon=True) for j in all_jobs]
    interrupted = False
    for t in threads:
        t.start()
    for t in threads:
        while t.is_alive():
            try:
                t.join(0.5)
            except KeyboardInterrupt:  # stop every job (each sandbox is killed), then triage what they found
                interrupted = True
                stop.set()
    wall = time.monotonic() - start
    found = [a for j in all_jobs for a in j.artifacts]
    totals = {"execs": sum(j.stats.execs for j in all_jobs),
              "exec_per_s": round(sum(j.stats.exec_per_s for j in all_jobs), 1),
              # one shared corpus: the largest job's view of it, not the sum
              "corpus_size": (max if shared else sum)(j.stats.corpus_size for j in all_jobs),
              "cpu_s": round(sum(j.cpu_s for j in all_jobs), 3),
              "wall_s": round(wall, 3), "jobs": len(all_jobs),
              "cgroup_oom_jobs": sum(1 for j in all_jobs if j.outcome == "cgroup-oom"),
              "interrupted": interrupted}
    summary = {"target": path, "engine": engine, "jobs": [j.as_dict() for j in all_jobs], "totals": totals,
               "artifacts": found, "crashes": [], "triage": "available"}
    if found:
        # The replay uses the sanitizer build the engine ran (for AFL++, the target itself).
        summary["crashes"] = triage.triage(path, args, found, out, engine=engine, runs=triage_runs,
                                           timeout=timeout_s, rss_limit_mb=rss_limit_mb, profile="fuzz")
    triage.write_summary(out, summary["crashes"], totals)
    with open(os.path.join(out, "jobs.json"), "w") as f:
        json.dump(summary, f, indent=2)
    return summary

