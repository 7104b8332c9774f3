"""isolate fuzz run: real engines (libFuzzer from clang, AFL++ forkserver and persistent,
plain) in one sandbox of the fuzz profile per job, on a C target built here."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from isolate import fuzz
from isolate.fuzz import engines, jobs

HERE = Path(__file__).resolve().parent
SOURCE = HERE / "targets.c"
ISOLATE = [sys.executable, "-m", "cli.main"]
ROOT = HERE.parent.parent


def _cli(*args, timeout=180):
    return subprocess.run([sys.executable, "-c", "import sys; from cli.main import main; sys.exit(main())", *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def build(tmp_path_factory):
    d = tmp_path_factory.mktemp("fuzzbuild")
    host = tmp_path_factory.mktemp("host")  # where the escape attempt writes, if it can
    escape = [str(host / "escaped"), str(d / "escaped-into-target-dir"), "/tmp/isolate-fuzz-escaped",
              str(ROOT / "isolate-fuzz-escaped")]
    paths = ",".join(f'"{p}"' for p in escape)
    common = [str(SOURCE), f"-DESCAPE_PATHS={paths}", "-g"]
    out = {"dir": d, "escape": escape}
    for bug in ("OVERFLOW", "LEAK", "OOM", "BIGRSS", "HANG"):
        subprocess.run(["clang", "-fsanitize=fuzzer,address", f"-DBUG_{bug}", *common, "-o", str(d / bug)],
                       check=True)
        out[bug] = str(d / bug)
    subprocess.run(["afl-clang-fast", "-DPLAIN_MAIN", *common, "-o", str(d / "afl_fs")], check=True,
                   capture_output=True)
    subprocess.run(["afl-clang-fast", "-fsanitize=fuzzer", *common, "-o", str(d / "afl_p")], check=True,
                   capture_output=True)
    subprocess.run(["clang", "-DPLAIN_MAIN", *common, "-o", str(d / "plain")], check=True)
    subprocess.run(["clang", "-fsanitize=fuzzer,address", "-DSAFE", *common, "-o", str(d / "safe")], check=True)
    out.update({k: str(d / k) for k in ("afl_fs", "afl_p", "plain", "safe")})
    yield out
    for p in escape:
        if os.path.exists(p):
            os.unlink(p)


def _seeds(tmp_path, *inputs: bytes) -> str:
    d = tmp_path / "seeds"
    d.mkdir()
    for i, data in enumerate(inputs):
        (d / f"s{i}").write_bytes(data)
    return str(d)


def _names(summary):
    return sorted(os.path.basename(a).split("-")[0] for a in summary["artifacts"])


def test_libfuzzer_finds_the_planted_heap_overflow_and_reports_exec_per_s(build, tmp_path):
    summary = fuzz.run_fuzz(build["OVERFLOW"], engine="libfuzzer", corpus=_seeds(tmp_path, b"FUZ"),
                            out=str(tmp_path / "out"), time_s=3, timeout_s=5, rss_limit_mb=1024)
    job = summary["jobs"][0]
    assert job["outcome"] == "done" and set(job["returncodes"]) == {1}, job
    assert set(_names(summary)) == {"crash"}
    log = Path(job["dir"], "engine.log").read_text()
    assert "heap-buffer-overflow" in log and "LLVMFuzzerTestOneInput" in log
    assert job["execs"] > 0 and summary["totals"]["execs"] > 0
    assert job["crashes"] == len(summary["artifacts"]) and job["unique"] == 1  # one DEDUP_TOKEN
    assert summary["triage"] == "available"
    assert json.loads((tmp_path / "out" / "jobs.json").read_text())["jobs"][0]["engine"] == "libfuzzer"


def test_libfuzzer_job_reports_exec_per_s(build, tmp_path):
    summary = fuzz.run_fuzz(build["safe"], engine="libfuzzer", corpus=_seeds(tmp_path, b"x"),
                            out=str(tmp_path / "out"), time_s=3, timeout_s=5, rss_limit_mb=1024)
    job = summary["jobs"][0]
    assert job["returncodes"] == [0] and job["outcome"] == "done"
    assert job["exec_per_s"] > 0 and job["execs"] > 0 and job["corpus_size"] >= 1


def test_leak_is_found_inside_the_sandbox_ptrace_allowed(build, tmp_path):
    # Under the default profile LeakSanitizer dies ("LeakSanitizer has encountered a fatal error").
    summary = fuzz.run_fuzz(build["LEAK"], engine="libfuzzer", corpus=_seeds(tmp_path, b"LEAK"),
                            out=str(tmp_path / "out"), time_s=2, timeout_s=5, rss_limit_mb=1024)
    log = Path(summary["jobs"][0]["dir"], "engine.log").read_text()
    assert "fatal error" not in log, log[-2000:]
    assert "detected memory leaks" in log
    assert set(_names(summary)) == {"leak"}


def test_oom_is_the_engines_with_its_input_not_the_cgroups(build, tmp_path):
    summary = fuzz.run_fuzz(build["OOM"], engine="libfuzzer", corpus=_seeds(tmp_path, b"OOMM"),
                            out=str(tmp_path / "out"), time_s=2, timeout_s=5, rss_limit_mb=512)
    job = summary["jobs"][0]
    assert set(_names(summary)) == {"oom"}
    assert set(job["returncodes"]) == {71} and job["outcome"] == "done", job
    assert summary["totals"]["cgroup_oom_jobs"] == 0


def test_cgroup_oom_is_reported_as_the_backstop_not_a_lost_job(build, tmp_path):
    # 64 MiB engine limit, cgroup 1088 MiB: a 2 GiB mmap(MAP_POPULATE) bypasses libFuzzer's
    # malloc limit and fills the cgroup inside one syscall, before its RSS check.
    summary = fuzz.run_fuzz(build["BIGRSS"], engine="libfuzzer", corpus=_seeds(tmp_path, b"BIGR"),
                            out=str(tmp_path / "out"), time_s=2, timeout_s=5, rss_limit_mb=64)
    job = summary["jobs"][0]
    log = Path(job["dir"], "engine.log").read_text()
    assert job["outcome"] == "cgroup-oom" and set(job["returncodes"]) == {-9}, job
    assert summary["totals"]["cgroup_oom_jobs"] == 1
    assert "cgroup OOM backstop" in log


def test_hang_is_a_timeout_artifact(build, tmp_path):
    summary = fuzz.run_fuzz(build["HANG"], engine="libfuzzer", corpus=_seeds(tmp_path, b"HANG"),
                            out=str(tmp_path / "out"), time_s=2, timeout_s=1, rss_limit_mb=1024)
    assert set(_names(summary)) == {"timeout"}
    assert set(summary["jobs"][0]["returncodes"]) == {70}


def test_an_input_that_writes_outside_leaves_nothing_on_the_host_outside_out(build, tmp_path):
    out = tmp_path / "out"
    summary = fuzz.run_fuzz(build["safe"], engine="libfuzzer", corpus=_seeds(tmp_path, b"ESC"),
                            out=str(out), time_s=2, timeout_s=5, rss_limit_mb=1024)
    job_dir = Path(summary["jobs"][0]["dir"])
    report = (job_dir / "escape.txt").read_text()  # written from inside, into the job's directory
    lines = dict(line.rsplit(" ", 1) if line.count(" ") == 1 else line.split(" ", 1)
                 for line in report.splitlines())
    assert set(lines) == set(build["escape"]) | {"net"}, report
    assert lines["net"] == "Network is unreachable", report
    for path in build["escape"]:
        assert not os.path.exists(path), path
    # /tmp inside is private: the write there "succeeded" in the sandbox's own tmpfs only.
    assert lines["/tmp/isolate-fuzz-escaped"] == "written"
    for path in build["escape"]:
        if path != "/tmp/isolate-fuzz-escaped":
            assert lines[path] != "written", report


def test_afl_forkserver_runs_inside_the_sandbox_and_finds_the_crash(build, tmp_path):
    summary = fuzz.run_fuzz(build["afl_fs"], ["@@"], engine="afl", corpus=_seeds(tmp_path, b"A"),
                            out=str(tmp_path / "out"), time_s=25, timeout_s=1, rss_limit_mb=1024)
    job = summary["jobs"][0]
    assert job["outcome"] == "done" and job["returncodes"] == [0], job
    assert job["execs"] > 0 and job["exec_per_s"] > 0
    assert summary["artifacts"], Path(job["dir"], "engine.log").read_text()[-2000:]
    assert all("/afl/default/crashes/id:" in a for a in summary["artifacts"])


def test_afl_persistent_mode_runs_inside_the_sandbox(build, tmp_path):
    summary = fuzz.run_fuzz(build["afl_p"], engine="afl", corpus=_seeds(tmp_path, b"FUZ"),
                            out=str(tmp_path / "out"), time_s=8, timeout_s=1, rss_limit_mb=1024)
    job = summary["jobs"][0]
    log = Path(job["dir"], "engine.log").read_text()
    assert "Persistent mode binary detected" in log
    assert job["outcome"] == "done" and job["execs"] > 0 and job["exec_per_s"] > 0, job
    assert engines.is_persistent(build["afl_p"]) and not engines.is_persistent(build["afl_fs"])


def test_plain_runs_batches_and_saves_the_crashing_input(build, tmp_path):
    summary = fuzz.run_fuzz(build["plain"], ["@@"], engine="plain", corpus=_seeds(tmp_path, b"ok", b"CR"),
                            out=str(tmp_path / "out"), time_s=3, timeout_s=2, rss_limit_mb=1024)
    job = summary["jobs"][0]
    assert job["outcome"] == "done", job
    assert "crash" in _names(summary)
    assert any(Path(a).read_bytes() == b"CR" for a in summary["artifacts"])
    assert job["execs"] >= 2


def test_two_jobs_each_in_its_own_sandbox(build, tmp_path):
    summary = fuzz.run_fuzz(build["safe"], engine="libfuzzer", corpus=_seeds(tmp_path, b"x"),
                            out=str(tmp_path / "out"), jobs=2, time_s=2, timeout_s=5, rss_limit_mb=1024)
    assert [j["job"] for j in summary["jobs"]] == [0, 1]
    assert all(j["outcome"] == "done" and j["execs"] > 0 for j in summary["jobs"])
    assert summary["totals"]["jobs"] == 2


def test_triage_is_called_with_every_artifact(build, tmp_path, monkeypatch):
    calls = {}

    class StandIn:  # the triage half's interface, stood in for (isolate/fuzz/triage.py)
        @staticmethod
        def triage(target, target_args, inputs, out_dir, *, engine, runs=3, timeout=25.0, rss_limit_mb=2048,
                   profile="fuzz", minimize=False):
            calls["triage"] = (target, list(target_args), list(inputs), out_dir, engine, runs, profile)
            return [{"state": "x", "type": "Heap-buffer-overflow WRITE 1"}]

        @staticmethod
        def write_summary(out_dir, crashes, jobs_totals):
            calls["summary"] = (out_dir, crashes, jobs_totals)

    monkeypatch.setattr(fuzz, "triage", StandIn)
    out = str(tmp_path / "out")
    summary = fuzz.run_fuzz(build["OVERFLOW"], engine="libfuzzer", corpus=_seeds(tmp_path, b"FUZ"), out=out,
                            time_s=2, timeout_s=5, rss_limit_mb=1024)
    assert calls["triage"][0] == build["OVERFLOW"] and calls["triage"][2] == summary["artifacts"]
    assert calls["triage"][3:] == (os.path.abspath(out), "libfuzzer", 3, "fuzz")
    assert calls["summary"][1] == summary["crashes"] and calls["summary"][2]["execs"] > 0


def test_cli_json_lines(build, tmp_path):
    r = _cli("fuzz", "run", build["safe"], "--engine", "libfuzzer", "--corpus", _seeds(tmp_path, b"x"),
             "--out", str(tmp_path / "out"), "--time", "2", "--json")
    assert r.returncode == 0, r.stderr
    events = [json.loads(line) for line in r.stdout.splitlines()]
    assert events[-1]["event"] == "summary" and events[-1]["totals"]["execs"] > 0
    assert any(e["event"] == "job" and e["outcome"] == "done" for e in events)


def test_cli_engines_lists_every_engine():
    r = _cli("fuzz", "engines")
    assert r.returncode == 0
    names = [line.split()[0] for line in r.stdout.splitlines()]
    assert names == list(engines.ENGINES)
    assert "afl        yes" in r.stdout and "libfuzzer  yes" in r.stdout


def test_profile_keeps_defaults_deny_list_but_ptrace():
    import isolate

    deny = set(isolate.load_profile("fuzz").data["seccomp"]["deny"])
    default = set(isolate.load_profile("default").data["seccomp"]["deny"])
    assert default - deny == {"@debug"}
    assert {"perf_event_open", "pidfd_getfd", "lookup_dcookie", "@perf"} <= deny
    p = jobs.job_profile("/bin/true", "/tmp", "/tmp", 2048)
    assert p["cgroup"]["memory_max"] == 3072 << 20 and p["cgroup"]["fallback"] == "fail"
    assert p["filesystem"]["rw"] == ["/tmp"]
