"""isolate.fuzz.store: one SQLite file per OUT, safe for concurrent writers, reruns add to it."""

import multiprocessing
import sqlite3

from isolate.fuzz.store import Store


def crash(sid, runs=3, reproduced=3, size=10, path="/in/x"):
    return {"state_id": sid, "state": f"T\n{sid}", "type": "T", "frames": [{"function": sid, "file": None,
                                                                          "line": None}],
            "security": None, "reproduced": reproduced, "runs": runs, "input": f"crashes/{sid}/input",
            "input_size": size, "inputs_detail": [{"path": path, "sha1": path[-8:].rjust(40, "0"), "size": size,
                                                   "reproduced": reproduced, "runs": runs}]}


def writer(out, k):
    with Store(out) as s:
        for i in range(40):
            s.record(crash(f"s{i % 10}", path=f"/in/{k}-{i}"))


def test_concurrent_writers_lose_nothing(tmp_path):
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=writer, args=(str(tmp_path), k)) for k in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert all(p.exitcode == 0 for p in procs)
    db = sqlite3.connect(tmp_path / "crashes.sqlite3")
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.execute("SELECT count(*), sum(runs), sum(reproduced) FROM crashes").fetchone() == (10, 480, 480)
    assert db.execute("SELECT count(*) FROM inputs").fetchone()[0] == 160


def test_known_states_keep_first_seen_and_the_smallest_input(tmp_path):
    with Store(str(tmp_path)) as s:
        a = s.record(crash("x", size=10), now=100.0)
        b = s.record(crash("x", size=4, path="/in/smaller", reproduced=0), now=200.0)
        c = s.record(crash("x", size=50, path="/in/bigger"), now=300.0)
        assert (a["known"], b["known"], c["known"]) == (False, True, True)
        assert b["first_seen"] == c["first_seen"] == 100.0
        [row] = s.crashes()
    assert row["runs"] == 9 and row["reproduced"] == 6 and row["input_size"] == 4
    assert row["last_seen"] == 300.0 and row["inputs"] == ["/in/x", "/in/smaller", "/in/bigger"]
    with Store(str(tmp_path)) as s:  # reopened: still known
        assert s.known("x") and not s.known("y")
