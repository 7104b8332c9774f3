"""One sandbox per fuzzing job, from the shipped `fuzz` profile.

The engine runs unchanged inside (libFuzzer in-process, afl-fuzz with its forkserver or
persistent target, a plain target fed batches); the sandbox adds per job: the target's
directory and the seed corpus read-only, the job's directory and the corpus it shares with
the other jobs read-write (libFuzzer OUT/corpus; afl-fuzz its own instance directory of the
sync directory OUT/afl, the rest of which it reads), a cgroup
memory limit of the engine's RSS limit + 1 GiB (the engine reports an OOM with its input
first; a cgroup OOM kill is the backstop and is reported as outcome "cgroup-oom"), and a
wall clock (the engine's own time limit + a grace period).
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import threading
import time
from typing import Callable

from ..launch import process
from . import engines

PROFILE = "fuzz"
MEMORY_OVERHEAD_MB = 1024   # cgroup limit = engine RSS limit + this (ClusterFuzz uses the same margin)
GRACE_S = 30.0              # after the engine's own time limit, the job's wall clock kills it
# libFuzzer stops at its first crash (or timeout, OOM, leak); the job then starts it again
# in a fresh sandbox, with the corpus it has built, until the job's time is up (restarts=None:
# no cap). Every run's artifacts stay in the job's artifacts/ and all of them go to triage.
RESTARTS = None
DRIVER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "plain_driver.py")


@dataclasses.dataclass
class FuzzJob:
    """One job: its index, engine, directory and what it has found so far."""
    index: int
    engine: str
    job_dir: str
    stats: engines.Stats = dataclasses.field(default_factory=engines.Stats)
    artifacts: list = dataclasses.field(default_factory=list)
    runs: int = 0
    outcome: str = "pending"     # pending, running, done, cgroup-oom, killed, error
    returncodes: list = dataclasses.field(default_factory=list)
    wall_s: float = 0.0
    error: str = ""
    log: str = ""
    dedup: set = dataclasses.field(default_factory=set)   # DEDUP_TOKENs seen in the engine's reports
    cpu_s: float = 0.0           # user + system CPU seconds of the job's sandboxes (all runs)
    engine_s: float = 0.0        # wall seconds the engine ran (all runs, sandbox start to exit)

    def as_dict(self) -> dict:
        return {"job": self.index, "engine": self.engine, "dir": self.job_dir, "outcome": self.outcome,
                "runs": self.runs, "returncodes": self.returncodes, "wall_s": round(self.wall_s, 3),
                "cpu_s": round(self.cpu_s, 3), "engine_s": round(self.engine_s, 3),
                "artifacts": len(self.artifacts), **self.stats.as_dict(),
                **({"error": self.error} if self.error else {})}


def job_profile(target: str, seeds: str, job_dir: str, rss_limit_mb: int, extra_ro=(), extra_rw=()) -> dict:
    """The fuzz profile for one job, as a dict isolate.Popen accepts: it writes job_dir and
    extra_rw only (a shared corpus, its own afl-fuzz instance directory)."""
    data = process.load_profile(PROFILE).to_dict()
    fs = data["filesystem"]
    ro = list(fs.get("ro", []))
    for path in (os.path.dirname(target), seeds, *extra_ro):
        if path not in ro and path not in extra_rw:
            ro.append(path)
    fs["ro"] = ro
    fs["rw"] = [job_dir, *(p for p in extra_rw if p != job_dir)]
    data["cgroup"]["memory_max"] = (rss_limit_mb + MEMORY_OVERHEAD_MB) << 20
    data["cgroup"]["fallback"] = "fail"
    data["process"]["cwd"] = job_dir
    return data


def environment(extra: dict) -> dict:
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": "/tmp", "TMPDIR": "/tmp"}
    env.update(extra)
    return env


def run_job(job: FuzzJob, target: str, args: list[str], *, seeds: str, time_s: float, timeout_s: float,
            rss_limit_mb: int, on_update: Callable[[FuzzJob], None] = lambda j: None,
            stop: threading.Event | None = None, restarts: int | None = RESTARTS, shared: str | None = None,
            jobs: int = 1, seed: int | None = None) -> FuzzJob:
    """Run one job to its time limit, each run of the engine in a fresh sandbox of the fuzz
    profile. libFuzzer is started again after each crash, timeout, OOM or leak (with the
    corpus kept) until the time is up or `restarts` restarts were made. `shared`: the
    directory shared with the other jobs (engines.command)."""
    stop = stop or threading.Event()
    start = time.monotonic()
    job.outcome = "running"
    log = open(os.path.join(job.job_dir, "engine.log"), "a")
    job.log = log.name
    total_execs = 0
    try:
        while not stop.is_set():
            left = time_s - (time.monotonic() - start)
            if job.runs and (left < 1 or (restarts is not None and job.runs > restarts)):
                break   # (the first run always starts: --time 1 is a run of 1 s)
            spec = engines.command(job.engine, target, args, seeds=seeds, job_dir=job.job_dir, time_s=left,
                                   timeout_s=timeout_s, rss_limit_mb=rss_limit_mb, driver=DRIVER, shared=shared,
                                   index=job.index, jobs=jobs, seed=seed)
            profile = job_profile(target, seeds, job.job_dir, rss_limit_mb,
                                  extra_ro=[*spec.ro, *([os.path.dirname(DRIVER)] if job.engine == "plain" else [])],
                                  extra_rw=spec.rw)
            rc, oom, run_stats = _one_run(job, spec, profile, left + GRACE_S, log, on_update, stop, total_execs)
            job.runs += 1
            job.returncodes.append(rc)
            total_execs += run_stats.execs
            _merge(job, run_stats, total_execs)
            job.artifacts = engines.artifacts(spec)
            if job.engine != "afl":
                job.stats.crashes = max(job.stats.crashes, len(job.artifacts))
            on_update(job)
            if oom:
                job.outcome = "cgroup-oom"   # the backstop fired: reported, the job goes on
                log.write(f"isolate: the job's cgroup memory limit ({rss_limit_mb + MEMORY_OVERHEAD_MB} MiB) "
                          "killed the engine (cgroup OOM backstop)\n")
            if job.engine != "libfuzzer" or rc not in (1, 70, 71, 77) and not oom:
                break   # the engine ran its time (or stopped for good): the job is over
            log.write(f"isolate: libFuzzer stopped (exit {rc}); restarting it with the corpus kept\n")
        if job.outcome == "running":
            job.outcome = "done"
    except Exception as e:  # noqa: BLE001 - a job that cannot start is reported, never lost
        job.outcome = "error"
        job.error = f"{type(e).__name__}: {e}"
    finally:
        job.wall_s = time.monotonic() - start
        log.close()
        on_update(job)
    return job


def _merge(job: FuzzJob, run: engines.Stats, total_execs: int) -> None:
    """The job's stats after one more run: execs summed over runs; exec/s the engine's own
    figure for one run, total execs over the engine's total time for several."""
    job.stats.execs = total_execs
    job.stats.corpus_size = run.corpus_size or job.stats.corpus_size
    if job.engine == "afl":
        job.stats.crashes, job.stats.unique = run.crashes, run.unique
    if job.runs <= 1:
        job.stats.exec_per_s = run.exec_per_s
    elif job.engine_s > 0:
        job.stats.exec_per_s = round(total_execs / job.engine_s, 1)


def _one_run(job, spec, profile, wall_s, log, on_update, stop, base_execs=0) -> tuple[int, bool, engines.Stats]:
    run = engines.Stats()
    started = time.monotonic()
    p = process.Popen(spec.argv, profile=profile, env=environment(spec.env), stdin=subprocess.DEVNULL,
                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace",
                      cwd=job.job_dir)
    done = threading.Event()

    def watch():  # the job's wall clock, a stop request, and afl-fuzz's stats file
        deadline = time.monotonic() + wall_s
        while not done.wait(1.0):
            if job.engine == "afl" and engines.read_afl_stats(job.job_dir, run, spec.stats_dir):
                _live(job, run, base_execs)
                on_update(job)
            if stop.is_set() or time.monotonic() > deadline:
                if not stop.is_set():
                    job.outcome = "killed"   # over its wall clock: the engine did not stop by itself
                p.kill()
                return

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    in_report = False   # the first DEDUP_TOKEN after a report's ERROR line is the crash's (later: allocation stacks)
    try:
        for line in p.stdout:
            log.write(line)
            if "ERROR: " in line and ("Sanitizer" in line or "libFuzzer" in line) or "runtime error:" in line:
                in_report = True
            token = engines.dedup_token(line)
            if token and in_report:
                in_report = False
                job.dedup.add(token)
                job.stats.unique = len(job.dedup)
            if engines.parse_line(job.engine, line, run):
                _live(job, run, base_execs)
                on_update(job)
        rc = p.wait()
    finally:
        done.set()
        watcher.join()
        p.stdout.close()
    if job.engine == "afl":
        engines.read_afl_stats(job.job_dir, run, spec.stats_dir)
    job.engine_s += time.monotonic() - started
    if p.rusage is not None:
        job.cpu_s += p.rusage.utime + p.rusage.stime
    log.flush()
    return rc, bool(p.oom), run


def _live(job: FuzzJob, run: engines.Stats, base_execs: int) -> None:
    """The job's stats while a run goes on (earlier runs' execs added)."""
    job.stats.execs = base_execs + run.execs
    job.stats.exec_per_s = run.exec_per_s
    job.stats.corpus_size = run.corpus_size or job.stats.corpus_size
    if job.engine == "afl":
        job.stats.crashes, job.stats.unique = run.crashes, run.unique
    elif job.engine == "plain":
        job.stats.crashes = run.crashes
