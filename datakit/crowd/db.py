"""Votes of the annotation app in an embedded SQLite database (``votes.sqlite``
in the dataset directory).

WAL journal, ``synchronous=FULL``, one transaction per submission: a vote is
acknowledged only after its transaction committed, so it survives a crash of
the server (kill -9) and of the machine. ``UNIQUE(task, item, worker)``: a
worker's vote on an item of a task counts once -- the first one; a repeat is
ignored and reported as a duplicate.

Table ``pauses``: workers the app paused for failing gold items. Their votes
stay in ``votes`` and are flagged (:meth:`VoteDB.flagged`), for the operator to
review before importing them.
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

__all__ = ["VoteDB", "DB_FILE", "thread_connection"]


def thread_connection(local: threading.local, path: Path) -> sqlite3.Connection:
    """This thread's connection to ``votes.sqlite`` (made on first use): autocommit, WAL, full fsync.

    Shared by :class:`VoteDB` and :class:`datakit.crowd.credentials.CredentialStore`, which keep their
    tables in the same file.
    """
    con = getattr(local, "con", None)
    if con is None:
        con = sqlite3.connect(path, timeout=30.0, isolation_level=None, check_same_thread=False)
        con.execute("PRAGMA journal_mode=WAL")
        con.execute("PRAGMA synchronous=FULL")
        con.execute("PRAGMA busy_timeout=30000")
        local.con = con
    return con

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
CREATE TABLE IF NOT EXISTS pauses (
    worker   TEXT PRIMARY KEY,
    time     REAL NOT NULL,
    reason   TEXT NOT NULL
);
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
        # writers of this process queue here rather than in SQLite's busy handler, whose sleeps make a long tail
        self._write_lock = threading.Lock()
        con = self._connect()
        con.executescript(_SCHEMA)

    def _connect(self) -> sqlite3.Connection:
        return thread_connection(self._local, self.path)

    def record(self, votes: Iterable[tuple[str, str, str, str]], when: float | None = None) -> tuple[int, int]:
        """Store ``(task, item, worker, label)`` votes in one transaction.

        Returns
        -------
        (new, duplicates) : counts of votes stored and votes ignored as repeats.
        """
        when = _time.time() if when is None else when
        con = self._connect()
        new = dup = 0
        votes = list(votes)
        with self._write_lock:
            con.execute("BEGIN IMMEDIATE")
            try:
                for task, item, worker, label in votes:
                    cur = con.execute("INSERT OR IGNORE INTO votes (task, item, worker, label, time) "
                                      "VALUES (?, ?, ?, ?, ?)", (task, item, worker, label, when))
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

    def worker_votes(self, worker: str) -> list[tuple[str, str, str]]:
        """``(task, item, label)`` of every vote of ``worker``."""
        return self._connect().execute("SELECT task, item, label FROM votes WHERE worker = ?", (worker,)).fetchall()

    def pause(self, worker: str, reason: str, when: float | None = None) -> bool:
        """Mark ``worker`` paused (their votes flagged); False if already paused."""
        cur = self._connect().execute("INSERT OR IGNORE INTO pauses (worker, time, reason) VALUES (?, ?, ?)",
                                      (worker, _time.time() if when is None else when, reason))
        return cur.rowcount == 1

    def unpause(self, worker: str) -> bool:
        """Lift a pause; False if ``worker`` was not paused."""
        return self._connect().execute("DELETE FROM pauses WHERE worker = ?", (worker,)).rowcount == 1

    def paused(self) -> dict[str, str]:
        """Paused workers -> reason."""
        return dict(self._connect().execute("SELECT worker, reason FROM pauses ORDER BY worker").fetchall())

    def is_paused(self, worker: str) -> str | None:
        """The reason ``worker`` is paused, or None."""
        row = self._connect().execute("SELECT reason FROM pauses WHERE worker = ?", (worker,)).fetchone()
        return None if row is None else row[0]

    def flagged(self) -> pd.DataFrame:
        """The votes of paused workers (kept, but to be reviewed): like :meth:`frame`."""
        return pd.read_sql_query("SELECT id, task, item, worker, label, time FROM votes "
                                 "WHERE worker IN (SELECT worker FROM pauses) ORDER BY id", self._connect())

    def task_workers(self) -> set[tuple[str, str]]:
        """Every ``(task, worker)`` pair with at least one vote."""
        return set(self._connect().execute("SELECT DISTINCT task, worker FROM votes").fetchall())

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
