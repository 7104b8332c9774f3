"""Stats parsing of each engine's output, and the progress views (rich table, JSON lines)."""

from __future__ import annotations

import io
import json

from isolate.fuzz import engines, progress
from isolate.fuzz.jobs import FuzzJob


def test_libfuzzer_status_and_final_lines():
    s = engines.Stats()
    assert engines.parse_line("libfuzzer", "#65536\tpulse  cov: 3 ft: 4 corp: 7/31b lim: 4 exec/s: 21845 rss: 30Mb\n", s)
    assert (s.execs, s.corpus_size, s.exec_per_s) == (65536, 7, 21845.0)
    assert engines.parse_line("libfuzzer", "stat::number_of_executed_units: 5258985\n", s)
    assert engines.parse_line("libfuzzer", "stat::average_exec_per_sec:     1051797\n", s)
    assert (s.execs, s.exec_per_s) == (5258985, 1051797.0)
    assert not engines.parse_line("libfuzzer", "INFO: Seed: 1\n", s)


def test_dedup_token():
    assert engines.dedup_token("DEDUP_TOKEN: LLVMFuzzerTestOneInput--fuzzer::Fuzzer::ExecuteCallback--x\n") == \
        "LLVMFuzzerTestOneInput--fuzzer::Fuzzer::ExecuteCallback--x"
    assert engines.dedup_token("#1 INITED\n") is None


def test_plain_lines():
    s = engines.Stats()
    assert engines.parse_line("plain", "#plain execs: 973 exec/s: 486.3 corpus: 2 crashes: 1\n", s)
    assert (s.execs, s.exec_per_s, s.corpus_size, s.crashes) == (973, 486.3, 2, 1)


def test_afl_fuzzer_stats_file(tmp_path):
    d = tmp_path / "afl" / "default"
    d.mkdir(parents=True)
    (d / "fuzzer_stats").write_text("start_time        : 1\nexecs_done        : 39603\n"
                                    "execs_per_sec     : 3596.02\ncorpus_count      : 3\nsaved_crashes     : 1\n")
    s = engines.Stats()
    assert engines.read_afl_stats(str(tmp_path), s)
    assert (s.execs, s.exec_per_s, s.corpus_size, s.crashes) == (39603, 3596.02, 3, 1)
    assert not engines.read_afl_stats(str(tmp_path / "none"), engines.Stats())


def test_json_lines_stream_one_object_per_update_and_the_summary():
    buf = io.StringIO()
    view = progress.JsonLines(buf, every=0)
    job = FuzzJob(index=0, engine="libfuzzer", job_dir="/x")
    job.stats.exec_per_s = 10.0
    job.outcome = "running"
    view.update(job)
    job.outcome = "done"
    view.update(job)
    view.finish({"totals": {"execs": 1}, "artifacts": [], "crashes": [], "triage": "not available"})
    events = [json.loads(line) for line in buf.getvalue().splitlines()]
    assert [e["event"] for e in events] == ["job", "job", "summary"]
    assert events[0]["exec_per_s"] == 10.0 and events[1]["outcome"] == "done"


def test_rich_table_has_a_row_per_job():
    view = progress.RichTable(2, "afl")
    view.console.file = io.StringIO()
    for i in range(2):
        j = FuzzJob(index=i, engine="afl", job_dir="/x")
        j.artifacts = ["/x/crash-a", "/x/leak-b", "/x/crash-c"]
        view.update(j)
    table = view._table()
    assert table.row_count == 2
    assert [c.header for c in table.columns] == ["job", "state", "exec/s", "execs", "corpus", "crashes", "unique",
                                                   "runs"]
