"""Votes of the annotation app in an embedded SQLite database (``votes.sqlite``
in the dataset directory).

WAL journal, ``synchronous=FULL``, one transaction per submission: a vote is
acknowledged only after its transaction committed, so it survives a crash of
the server (kill -9) and of the machine. ``UNIQUE(task, item, worker)``: a
worker's vote on an item of a task counts once -- the first one; a repeat is
ignored and reported as a duplicate.
"""
from __future__ import annotations

import os
import sqlite3
import threading
import time as _time
from pathlib import Path
from typing import Iterable

import pandas as pd

from datakit.crowd.tasks import conform_annotations

__all__ = ["VoteDB", "DB_FILE"]

DB_FILE = "votes.sqlite"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS votes (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    task     TEXT NOT NULL,
    item     TEXT NOT NULL,
    worker   TEXT NOT NULL,
    label    TEXT NOT NULL,
    time     REAL NOT NULL,
    UNIQUE (task, item, worker)
);
CREATE INDEX IF NOT EXISTS votes_worker ON votes (worker);
"""


class VoteDB:
    """The app's vote store. Safe to share between threads (one connection per thread).

    Parameters
    ----------
    path : path
        The SQLite file (created with its schema if missing).
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self._local = threading.local()
        con = self._connect()
        con.executescript(_SCHEMA)

    def _connect(self) -> sqlite3.Connection:
        con = getattr(self._local, "con", None)
        if con is None:
            con = sqlite3.connect(self.path, timeout=30.0, isolation_level=None, check_same_thread=False)
            con.execute("PRAGMA journal_mode=WAL")
            con.execute("PRAGMA synchronous=FULL")
            con.execute("PRAGMA busy_timeout=30000")
            self._local.con = con
        return con

    def record(self, votes: Iterable[tuple[str, str, str, str]], when: float | None = None) -> tuple[int, int]:
        """Store ``(task, item, worker, label)`` votes in one transaction.

        Returns
        -------
        (new, duplicates) : counts of votes stored and votes ignored as repeats.
        """
        when = _time.time() if when is None else when
        con = self._connect()
        new = dup = 0
        con.execute("BEGIN IMMEDIATE")
        try:
            for task, item, worker, label in votes:
                cur = con.execute("INSERT OR IGNORE INTO votes (task, item, worker, label, time) VALUES (?, ?, ?, ?, ?)",
                                  (task, item, worker, label, when))
                if cur.rowcount == 1:
                    new += 1
                else:
                    dup += 1
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
        return new, dup

    def done_tasks(self, worker: str) -> set[str]:
        """Tasks in which ``worker`` has voted."""
        rows = self._connect().execute("SELECT DISTINCT task FROM votes WHERE worker = ?", (worker,)).fetchall()
        return {r[0] for r in rows}

    def workers_per_task(self) -> dict[str, int]:
        rows = self._connect().execute("SELECT task, COUNT(DISTINCT worker) FROM votes GROUP BY task").fetchall()
        return dict(rows)

    def count(self) -> int:
        return int(self._connect().execute("SELECT COUNT(*) FROM votes").fetchone()[0])

    def frame(self) -> pd.DataFrame:
        """All votes, raw: ``id, task, item, worker, label, time``."""
        return pd.read_sql_query("SELECT id, task, item, worker, label, time FROM votes ORDER BY id", self._connect())

    def annotations(self) -> pd.DataFrame:
        """The votes as the long annotation table (``task`` = item, ``hit`` = the app's task, ``batch="app"``)."""
        raw = self.frame()
        out = pd.DataFrame({"task": raw["item"], "worker": raw["worker"], "label": raw["label"], "time": raw["time"],
                            "batch": "app", "hit": raw["task"], "assignment": None})
        return conform_annotations(out)

    def close(self) -> None:
        con = getattr(self._local, "con", None)
        if con is not None:
            con.close()
            self._local.con = None
