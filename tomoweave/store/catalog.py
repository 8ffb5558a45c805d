"""The project catalog: runs, sets, items, lineage, the step journal and events, in SQLite (WAL).

One writer per run: the scheduler process of a run commits; workers only return results.
SQLite's busy timeout serialises the rare concurrent commits of two runs; there is no retry loop.
"""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tomoweave.store.particle_tables import TABLE_ITEM_TYPE

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY, name TEXT UNIQUE NOT NULL, protocol TEXT NOT NULL,
    folder TEXT NOT NULL, state TEXT NOT NULL, params TEXT NOT NULL, inputs TEXT NOT NULL,
    executor TEXT, created REAL NOT NULL, started REAL, finished REAL,
    provenance TEXT, error TEXT, pid INTEGER
);
CREATE TABLE IF NOT EXISTS sets (
    id INTEGER PRIMARY KEY, run_id INTEGER NOT NULL REFERENCES runs(id), output TEXT NOT NULL,
    item_type TEXT NOT NULL, state TEXT NOT NULL, UNIQUE (run_id, output)
);
CREATE TABLE IF NOT EXISTS items (
    id INTEGER PRIMARY KEY, set_id INTEGER NOT NULL REFERENCES sets(id), key TEXT NOT NULL,
    item_type TEXT NOT NULL, data TEXT NOT NULL, task TEXT, created REAL NOT NULL,
    UNIQUE (set_id, key)
);
CREATE INDEX IF NOT EXISTS items_by_task ON items (set_id, task);
CREATE TABLE IF NOT EXISTS lineage (
    item_id INTEGER NOT NULL REFERENCES items(id) ON DELETE CASCADE,
    source_set_id INTEGER NOT NULL, source_key TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS journal (
    run_id INTEGER NOT NULL REFERENCES runs(id), task TEXT NOT NULL, digest TEXT NOT NULL,
    state TEXT NOT NULL, error TEXT, attempts INTEGER NOT NULL DEFAULT 0,
    started REAL, finished REAL, progress REAL, message TEXT,
    warnings INTEGER NOT NULL DEFAULT 0, PRIMARY KEY (run_id, task)
);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY, time REAL NOT NULL, run_id INTEGER, kind TEXT NOT NULL, message TEXT
);
"""


# columns added after the first release: (table, column, SQL declaration)
_ADDED_COLUMNS = (("journal", "progress", "REAL"), ("journal", "message", "TEXT"),
                  ("journal", "warnings", "INTEGER NOT NULL DEFAULT 0"))


@dataclass
class RunRecord:
    id: int
    name: str
    protocol: str
    folder: str
    state: str
    params: dict[str, Any]
    inputs: dict[str, Any]
    executor: str | None
    created: float
    started: float | None
    finished: float | None
    provenance: dict[str, Any]
    error: str | None
    pid: int | None


@dataclass
class SetRecord:
    id: int
    run_id: int
    output: str
    item_type: str
    state: str


@dataclass
class ItemRecord:
    id: int
    set_id: int
    key: str
    item_type: str
    data: dict[str, Any]
    task: str | None


class Catalog:
    """Access to ``project.sqlite``. Open one per process; short transactions only."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.connection = sqlite3.connect(self.path, timeout=60.0, isolation_level=None,
                                          check_same_thread=False)
        self.connection.row_factory = sqlite3.Row
        self.connection.execute("PRAGMA journal_mode=WAL")
        self.connection.execute("PRAGMA synchronous=NORMAL")
        self.connection.execute("PRAGMA foreign_keys=ON")
        self.connection.executescript(SCHEMA)
        self._add_missing_columns()

    def _add_missing_columns(self) -> None:
        """Bring a catalog written by an earlier tomoweave up to this schema."""
        for table, column, declaration in _ADDED_COLUMNS:
            present = {row[1] for row in self.connection.execute(f"PRAGMA table_info({table})")}
            if column not in present:
                self.connection.execute(f"ALTER TABLE {table} ADD COLUMN {column} {declaration}")

    def close(self) -> None:
        self.connection.close()

    def transaction(self):
        return _Transaction(self.connection)

    # runs -------------------------------------------------------------------------------
    def add_run(self, name: str, protocol: str, params: dict, inputs: dict, executor: str,
                folder_for_id) -> RunRecord:
        """Insert a run; ``folder_for_id(id)`` gives its folder once the id is known."""
        with self.transaction() as cursor:
            cursor.execute(
                "INSERT INTO runs (name, protocol, folder, state, params, inputs, executor, created)"
                " VALUES (?, ?, '', 'queued', ?, ?, ?, ?)",
                (name, protocol, json.dumps(params), json.dumps(inputs), executor, time.time()),
            )
            run_id = cursor.lastrowid
            cursor.execute("UPDATE runs SET folder = ? WHERE id = ?", (folder_for_id(run_id), run_id))
        self.add_event(run_id, "created", f"{name} ({protocol})")
        return self.run(run_id)

    def update_run(self, run_id: int, **fields: Any) -> None:
        encoded = {k: json.dumps(v) if k in ("params", "inputs", "provenance") else v
                   for k, v in fields.items()}
        assignments = ", ".join(f"{key} = ?" for key in encoded)
        with self.transaction() as cursor:
            cursor.execute(f"UPDATE runs SET {assignments} WHERE id = ?", (*encoded.values(), run_id))
        if "state" in fields:
            self.add_event(run_id, "state", fields["state"])

    def run(self, run_id: int) -> RunRecord:
        row = self.connection.execute("SELECT * FROM runs WHERE id = ?", (run_id,)).fetchone()
        if row is None:
            raise KeyError(f"no run with id {run_id}")
        return _run_record(row)

    def run_by_name(self, name: str) -> RunRecord | None:
        row = self.connection.execute("SELECT * FROM runs WHERE name = ?", (name,)).fetchone()
        return _run_record(row) if row else None

    def runs(self) -> list[RunRecord]:
        rows = self.connection.execute("SELECT * FROM runs ORDER BY id").fetchall()
        return [_run_record(row) for row in rows]

    # sets -------------------------------------------------------------------------------
    def ensure_set(self, run_id: int, output: str, item_type: str) -> SetRecord:
        with self.transaction() as cursor:
            cursor.execute(
                "INSERT OR IGNORE INTO sets (run_id, output, item_type, state) VALUES (?, ?, ?, 'open')",
                (run_id, output, item_type),
            )
        row = self.connection.execute(
            "SELECT * FROM sets WHERE run_id = ? AND output = ?", (run_id, output)).fetchone()
        return SetRecord(**dict(row))

    def set_state(self, set_id: int, state: str) -> None:
        with self.transaction() as cursor:
            cursor.execute("UPDATE sets SET state = ? WHERE id = ?", (state, set_id))

    def sets_of_run(self, run_id: int) -> list[SetRecord]:
        rows = self.connection.execute(
            "SELECT * FROM sets WHERE run_id = ? ORDER BY id", (run_id,)).fetchall()
        return [SetRecord(**dict(row)) for row in rows]

    def set_by_id(self, set_id: int) -> SetRecord:
        row = self.connection.execute("SELECT * FROM sets WHERE id = ?", (set_id,)).fetchone()
        if row is None:
            raise KeyError(f"no set with id {set_id}")
        return SetRecord(**dict(row))

    # items ------------------------------------------------------------------------------
    def items(self, set_id: int) -> list[ItemRecord]:
        rows = self.connection.execute(
            "SELECT * FROM items WHERE set_id = ? ORDER BY id", (set_id,)).fetchall()
        return [_item_record(row) for row in rows]

    def count_items(self, set_id: int) -> int:
        """Items in a set; a row pointing at a particle table counts its particles."""
        return self.connection.execute(
            "SELECT COALESCE(SUM(CASE WHEN item_type = ? THEN json_extract(data, '$.count')"
            " ELSE 1 END), 0) FROM items WHERE set_id = ?", (TABLE_ITEM_TYPE, set_id)).fetchone()[0]

    def sets_signature(self, set_ids: list[int]) -> tuple:
        """(set id, state, item count, largest item id) of each set: changes with any commit."""
        signature = []
        for set_id in set_ids:
            row = self.connection.execute(
                "SELECT s.state, COUNT(i.id), MAX(i.id) FROM sets s LEFT JOIN items i"
                " ON i.set_id = s.id WHERE s.id = ?", (set_id,)).fetchone()
            signature.append((set_id, *row))
        return tuple(signature)

    def lineage(self, item_id: int) -> list[tuple[int, str]]:
        rows = self.connection.execute(
            "SELECT source_set_id, source_key FROM lineage WHERE item_id = ?", (item_id,)).fetchall()
        return [(row[0], row[1]) for row in rows]

    # journal ----------------------------------------------------------------------------
    def journal(self, run_id: int) -> dict[str, dict[str, Any]]:
        rows = self.connection.execute("SELECT * FROM journal WHERE run_id = ?", (run_id,)).fetchall()
        return {row["task"]: dict(row) for row in rows}

    def mark_task_started(self, run_id: int, task: str, digest: str) -> None:
        with self.transaction() as cursor:
            cursor.execute(
                "INSERT INTO journal (run_id, task, digest, state, attempts, started)"
                " VALUES (?, ?, ?, 'running', 1, ?) ON CONFLICT (run_id, task) DO UPDATE SET"
                " digest = excluded.digest, state = 'running', error = NULL,"
                " attempts = attempts + 1, started = excluded.started, finished = NULL,"
                " progress = NULL, message = NULL, warnings = 0",
                (run_id, task, digest, time.time()),
            )

    def commit_task(self, run_id: int, task: str, digest: str,
                    outputs: dict[int, list[tuple[str, str, str]]],
                    sources: list[tuple[int, str]]) -> None:
        """Replace the task's items and mark it done, in one transaction.

        ``outputs`` maps set id -> [(key, item_type, json data)]; ``sources`` are the input
        items (set id, key) the task read, recorded as lineage of every new item.
        """
        now = time.time()
        with self.transaction() as cursor:
            for set_id, records in outputs.items():
                cursor.execute("DELETE FROM items WHERE set_id = ? AND task = ?", (set_id, task))
                for key, item_type, data in records:
                    cursor.execute(
                        "INSERT OR REPLACE INTO items (set_id, key, item_type, data, task, created)"
                        " VALUES (?, ?, ?, ?, ?, ?)", (set_id, key, item_type, data, task, now))
                    item_id = cursor.lastrowid
                    cursor.executemany(
                        "INSERT INTO lineage (item_id, source_set_id, source_key) VALUES (?, ?, ?)",
                        [(item_id, s, k) for s, k in sources])
            cursor.execute(
                "UPDATE journal SET state = 'done', digest = ?, error = NULL, finished = ?,"
                " progress = 1.0 WHERE run_id = ? AND task = ?", (digest, now, run_id, task))

    def update_task_progress(self, run_id: int, task: str, fraction: float, message: str) -> None:
        """Live progress of a running task (what the web GUI's run page shows)."""
        with self.transaction() as cursor:
            cursor.execute("UPDATE journal SET progress = ?, message = ? WHERE run_id = ? AND task = ?",
                           (fraction, message, run_id, task))

    def add_task_warnings(self, run_id: int, task: str, count: int = 1) -> None:
        """Count warnings a running task logged (shown on the run's badge and per item)."""
        with self.transaction() as cursor:
            cursor.execute("UPDATE journal SET warnings = warnings + ? WHERE run_id = ? AND task = ?",
                           (count, run_id, task))

    def fail_task(self, run_id: int, task: str, error: str) -> None:
        with self.transaction() as cursor:
            cursor.execute(
                "UPDATE journal SET state = 'failed', error = ?, finished = ? WHERE run_id = ? AND task = ?",
                (error, time.time(), run_id, task))

    # events -----------------------------------------------------------------------------
    def add_event(self, run_id: int | None, kind: str, message: str = "") -> None:
        with self.transaction() as cursor:
            cursor.execute("INSERT INTO events (time, run_id, kind, message) VALUES (?, ?, ?, ?)",
                           (time.time(), run_id, kind, message))

    def events_after(self, event_id: int) -> list[dict[str, Any]]:
        rows = self.connection.execute(
            "SELECT * FROM events WHERE id > ? ORDER BY id", (event_id,)).fetchall()
        return [dict(row) for row in rows]

    def integrity_check(self) -> str:
        return self.connection.execute("PRAGMA integrity_check").fetchone()[0]


class _Transaction:
    def __init__(self, connection: sqlite3.Connection):
        self.connection = connection

    def __enter__(self) -> sqlite3.Cursor:
        self.cursor = self.connection.cursor()
        self.cursor.execute("BEGIN IMMEDIATE")
        return self.cursor

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.cursor.execute("COMMIT")
        else:
            self.cursor.execute("ROLLBACK")


def _run_record(row: sqlite3.Row) -> RunRecord:
    data = dict(row)
    for key in ("params", "inputs"):
        data[key] = json.loads(data[key])
    data["provenance"] = json.loads(data["provenance"]) if data["provenance"] else {}
    return RunRecord(**data)


def _item_record(row: sqlite3.Row) -> ItemRecord:
    data = dict(row)
    data["data"] = json.loads(data.pop("data"))
    data.pop("created", None)
    return ItemRecord(**data)
