"""isolate fuzz run: libFuzzer keeps fuzzing after a crash (restarted with its corpus for the
whole --time, every run's artifacts triaged), jobs share one corpus (libFuzzer OUT/corpus,
afl-fuzz's -M/-S sync directory OUT/afl) while each job writes only its own directory and the
shared one, and AFL++ finds and triages a hang, an OOM and a leak. Real engines, targets
built here with clang / afl-clang-fast."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from isolate import fuzz

HERE = Path(__file__).resolve().parent
SOURCE = HERE / "targets.c"


def _seeds(tmp_path, *inputs: bytes) -> str:
    d = tmp_path / "seeds"
    d.mkdir()
    for i, data in enumerate(inputs):
        (d / f"s{i}").write_bytes(data)
    return str(d)


def _cc(cc: list, out: Path, *defines: str) -> str:
    subprocess.run([*cc, str(SOURCE), "-g", *defines, "-o", str(out)], check=True, capture_output=True,
                   env={**os.environ, "AFL_QUIET": "1"})
    return str(out)


def _report(job_dir: str) -> dict:
    """escape.txt, written from inside the sandbox by the target: path -> what happened."""
    out = {}
    for line in Path(job_dir, "escape.txt").read_text().splitlines():
        key, _, value = line.partition(" ")
        out[key] = value
    return out


def test_libfuzzer_keeps_fuzzing_after_a_crash_and_every_runs_crash_is_triaged(tmp_path):
    exe = _cc(["clang", "-fsanitize=fuzzer,address"], tmp_path / "two", "-DBUG_OVERFLOW", "-DBUG_LEAK",
              '-DESCAPE_PATHS="/nonexistent/x"')
    out = tmp_path / "out"
    summary = fuzz.run_fuzz(exe, engine="libfuzzer", corpus=_seeds(tmp_path, b"FUZ", b"LEA"), out=str(out),
                            time_s=4, timeout_s=5, rss_limit_mb=1024, triage_runs=1)
    job = summary["jobs"][0]
    assert job["outcome"] == "done", job
    assert job["runs"] >= 2 and len(job["returncodes"]) == job["runs"], job      # restarted after crashes
    assert job["wall_s"] >= 3, job                                               # for the whole --time
    log = Path(job["dir"], "engine.log").read_text()
    assert "restarting it with the corpus kept" in log
    names = {os.path.basename(a).split("-")[0] for a in summary["artifacts"]}
    assert names == {"crash", "leak"}, summary["artifacts"]                      # both bugs, over restarts
    assert len(summary["artifacts"]) >= 2
    # Every run's artifacts went to triage: each input is listed under one crash.
    triaged = {p for c in summary["crashes"] for p in c["inputs"]}
    assert triaged == set(summary["artifacts"])
    types = {c["type"] for c in summary["crashes"]}
    assert "Memory leak" in types and any(t.startswith("Heap-buffer-overflow") for t in types), types
    # The corpus was kept across runs: one shared corpus directory, no per-job one.
    assert os.listdir(out / "corpus") and not (Path(job["dir"]) / "corpus").exists()
    assert job["execs"] > 0 and job["exec_per_s"] > 0 and job["cpu_s"] > 0


def test_libfuzzer_jobs_share_one_corpus_and_each_writes_only_its_own_dir(tmp_path):
    out = tmp_path / "out"
    shared = out / "corpus"
    # The probe (input "ESC") tries to write into each job's directory and the shared corpus,
    # lists the shared corpus, and leaves a marker there named after its own job.
    escape = [str(out / "jobs" / "0" / "probe"), str(out / "jobs" / "1" / "probe"), str(shared / "probe-w"),
              str(out / "outside")]
    exe = _cc(["clang", "-fsanitize=fuzzer,address"], tmp_path / "probe", "-DSAFE", "-DSHARE_PROBE",
              "-DESCAPE_PATHS=" + ",".join(f'"{p}"' for p in escape), f'-DSHARED_DIR="{shared}"')
    summary = fuzz.run_fuzz(exe, engine="libfuzzer", corpus=_seeds(tmp_path, b"ESC"), out=str(out), jobs=2,
                            time_s=4, timeout_s=5, rss_limit_mb=1024)
    assert [j["outcome"] for j in summary["jobs"]] == ["done", "done"], summary["jobs"]
    for i, job in enumerate(summary["jobs"]):
        seen = _report(job["dir"])
        other = 1 - i
        assert seen[escape[i]] == "written", seen                    # its own directory
        assert seen[escape[other]] != "written", seen                # not the other job's
        assert seen[str(shared / "probe-w")] == "written", seen      # the shared corpus
        assert seen[str(out / "outside")] != "written", seen         # nothing else of OUT
        # From inside job i: the other job's marker in the shared corpus is visible.
        assert seen.get(f"saw:probe-job{other}") == "yes", seen
    assert not os.path.exists(out / "outside")
    assert not os.path.exists(out / "jobs" / "0" / "corpus") and not os.path.exists(out / "jobs" / "1" / "corpus")
    logs = [Path(j["dir"], "engine.log").read_text() for j in summary["jobs"]]
    assert all(f"{shared}" in log or "INFO:" in log for log in logs)


def test_afl_jobs_sync_through_one_dir_each_writing_only_its_own_instance(tmp_path):
    out = tmp_path / "out"
    sync = out / "afl"
    escape = [str(sync / "job0" / "probe"), str(sync / "job1" / "probe"), str(out / "jobs" / "0" / "probe"),
              str(out / "jobs" / "1" / "probe")]
    reads = [str(sync / "job0"), str(sync / "job1")]
    exe = _cc(["afl-clang-fast"], tmp_path / "afl_probe", "-DPLAIN_MAIN", "-DSAFE",
              "-DESCAPE_PATHS=" + ",".join(f'"{p}"' for p in escape),
              "-DREAD_PATHS=" + ",".join(f'"{p}"' for p in reads))
    summary = fuzz.run_fuzz(exe, ["@@"], engine="afl", corpus=_seeds(tmp_path, b"ESC"), out=str(out), jobs=2,
                            time_s=4, timeout_s=1, rss_limit_mb=1024)
    assert [j["outcome"] for j in summary["jobs"]] == ["done", "done"], summary["jobs"]
    for i, job in enumerate(summary["jobs"]):
        log = Path(job["dir"], "engine.log").read_text()
        seen = _report(job["dir"])
        assert seen[escape[i]] == "written", seen                    # its own afl-fuzz instance
        assert seen[escape[1 - i]] != "written", seen                # not the other instance
        assert seen[escape[2 + i]] == "written", seen                # its own job directory
        assert seen[escape[3 - i]] != "written", seen                # not the other job's
        assert seen[f"read:{reads[1 - i]}"] == "readable", seen       # the other's queue, to sync from
        assert (sync / f"job{i}" / "fuzzer_stats").is_file(), log[-2000:]
        assert job["execs"] > 0, job
    stats = [(sync / f"job{i}" / "fuzzer_stats").read_text() for i in (0, 1)]
    assert "-M job0" in stats[0] and "-S job1" in stats[1], stats


@pytest.mark.parametrize("bug, cc, rss, timeout, kind, where, time_s", [
    ("HANG", ["afl-clang-fast"], 1024, 1, "Timeout", "/hangs/id:", 5),
    # No sanitizer: the target grows until the job's cgroup kills it (afl-fuzz -m none; the
    # forkserver's children have no ASan RSS thread): a crash, replayed as Out-of-memory
    # (a timeout that leaves the ~1 GiB fill time even on a loaded machine).
    ("OOM", ["afl-clang-fast"], 64, 5, "Out-of-memory", "/crashes/id:", 5),
    # ASan: LeakSanitizer at each exit of the forkserver's child, a leak is a crash. An ASan
    # target's calibration alone can take most of 5 s on a loaded machine: more time.
    ("LEAK", ["afl-clang-fast", "-fsanitize=address"], 1024, 1, "Memory leak", "/crashes/id:", 15),
])
def test_afl_finds_the_planted_bug_and_triage_names_it(tmp_path, bug, cc, rss, timeout, kind, where, time_s):
    exe = _cc(cc, tmp_path / f"afl_{bug}", "-DPLAIN_MAIN", f"-DBYTE_BUG_{bug}", '-DESCAPE_PATHS="/nonexistent/x"')
    summary = fuzz.run_fuzz(exe, ["@@"], engine="afl", corpus=_seeds(tmp_path, b"A"), out=str(tmp_path / "out"),
                            time_s=time_s, timeout_s=timeout, rss_limit_mb=rss, triage_runs=1)
    job = summary["jobs"][0]
    log = Path(job["dir"], "engine.log").read_text()
    found = [a for a in summary["artifacts"] if where in a]
    assert found, (summary["artifacts"], log[-3000:])
    assert all(Path(a).read_bytes()[:1] != b"A" for a in found)
    crash = {c["type"]: c for c in summary["crashes"]}.get(kind)
    assert crash and crash["reproducible"], [(c["type"], c["inputs"]) for c in summary["crashes"]]
    assert set(crash["inputs"]) & set(found)
    if bug == "OOM":   # the cgroup was the backstop: said so, the job not lost
        assert job["outcome"] == "cgroup-oom" and summary["totals"]["cgroup_oom_jobs"] == 1, job
    else:
        assert job["outcome"] == "done", job
