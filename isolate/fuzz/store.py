"""The crash database of an output directory: one SQLite file, OUT/crashes.sqlite3.

Every job and every triage run of the same OUT writes there: WAL mode and a busy timeout
let concurrent writers wait for each other instead of failing, and each record is one
`BEGIN IMMEDIATE` transaction. A state already in the file is *known*: recording it again
adds its inputs and runs, keeps its first_seen and says it was known.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time

FILENAME = "crashes.sqlite3"
BUSY_TIMEOUT_MS = 60_000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS crashes (
    state_id     TEXT PRIMARY KEY,
    state        TEXT NOT NULL,
    type         TEXT NOT NULL,
    frames       TEXT NOT NULL,          -- JSON list of {function, file, line}
    security     TEXT,                   -- "High", "Medium", "Low" or NULL (not a security bug)
    reproduced   INTEGER NOT NULL,       -- runs that crashed with this state, over all triages
    runs         INTEGER NOT NULL,       -- replays made, over all triages
    smallest     TEXT,                   -- path of the smallest input, relative to OUT
    smallest_size INTEGER,
    first_seen   REAL NOT NULL,          -- unix time
    last_seen    REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS inputs (
    sha1      TEXT NOT NULL,
    state_id  TEXT NOT NULL REFERENCES crashes(state_id),
    path      TEXT NOT NULL,             -- as given to triage
    size      INTEGER NOT NULL,
    reproduced INTEGER NOT NULL,
    runs      INTEGER NOT NULL,
    seen      REAL NOT NULL,
    PRIMARY KEY (sha1, state_id)
);
"""


class Store:
    """OUT/crashes.sqlite3. Cheap to open; one per thread or process."""

    def __init__(self, out_dir: str):
        self.path = os.path.join(out_dir, FILENAME)
        self.db = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None)
        self.db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        self.db.execute("PRAGMA journal_mode = WAL")
        self.db.execute("PRAGMA synchronous = NORMAL")
        self.db.executescript(_SCHEMA)

    def close(self):
        self.db.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def known(self, state_id: str) -> bool:
        return self.db.execute("SELECT 1 FROM crashes WHERE state_id = ?", (state_id,)).fetchone() is not None

    def record(self, crash: dict, now: float | None = None) -> dict:
        """Add one triaged crash (the dict triage returns). Returns {"known": bool,
        "first_seen": float, "reproduced": int, "runs": int} over every triage of this OUT."""
        now = time.time() if now is None else now
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        try:
            row = db.execute("SELECT first_seen, reproduced, runs, smallest_size FROM crashes WHERE state_id = ?",
                             (crash["state_id"],)).fetchone()
            if row is None:
                db.execute("INSERT INTO crashes VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                           (crash["state_id"], crash["state"], crash["type"], json.dumps(crash["frames"]),
                            crash["security"], crash["reproduced"], crash["runs"], crash["input"],
                            crash["input_size"], now, now))
                first, reproduced, runs = now, crash["reproduced"], crash["runs"]
            else:
                first = row[0]
                reproduced, runs = row[1] + crash["reproduced"], row[2] + crash["runs"]
                db.execute("UPDATE crashes SET reproduced = ?, runs = ?, last_seen = ? WHERE state_id = ?",
                           (reproduced, runs, now, crash["state_id"]))
                if row[3] is None or crash["input_size"] < row[3]:
                    db.execute("UPDATE crashes SET smallest = ?, smallest_size = ? WHERE state_id = ?",
                               (crash["input"], crash["input_size"], crash["state_id"]))
            for inp in crash["inputs_detail"]:
                db.execute("INSERT INTO inputs VALUES (?,?,?,?,?,?,?) ON CONFLICT(sha1, state_id) DO UPDATE SET "
                           "reproduced = reproduced + excluded.reproduced, runs = runs + excluded.runs, "
                           "seen = excluded.seen",
                           (inp["sha1"], crash["state_id"], inp["path"], inp["size"], inp["reproduced"], inp["runs"],
                            now))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return {"known": row is not None, "first_seen": first, "reproduced": reproduced, "runs": runs}

    def crashes(self) -> list:
        """Every crash of this OUT, oldest first."""
        cur = self.db.execute("SELECT state_id, state, type, frames, security, reproduced, runs, smallest, "
                              "smallest_size, first_seen, last_seen FROM crashes ORDER BY first_seen, state_id")
        out = []
        for r in cur.fetchall():
            inputs = [p for (p,) in self.db.execute("SELECT path FROM inputs WHERE state_id = ? ORDER BY seen, path",
                                                   (r[0],))]
            out.append({"state_id": r[0], "state": r[1], "type": r[2], "frames": json.loads(r[3]), "security": r[4],
                        "reproduced": r[5], "runs": r[6], "reproducible": r[5] > 0, "input": r[7],
                        "input_size": r[8], "first_seen": r[9], "last_seen": r[10], "inputs": inputs})
        return out
