"""Invitations of the annotation app: one random secret per worker, only its hash stored.

``datakit annotate invite`` makes a secret with :func:`secrets.token_urlsafe`
(32 bytes, 256 bits) per worker and prints it once, inside the worker's link;
the dataset keeps only its SHA-256 (a plain hash is enough for a secret of
this entropy: nobody can guess one to match). The table lives in the app's
database (``votes.sqlite``, table ``credentials``), so an invitation or a
revocation is one SQLite transaction -- atomic, visible to a running server at
its next request, never half-written.

Roles: ``worker`` (annotates; its name is the vote's worker) and
``operator`` (the operator's pages, one credential at a time). Inviting a
worker again replaces the old secret (the old link stops working); revoking
keeps the row, so a revoked worker's votes stay attributed and the app stays
in invitation mode.
"""
from __future__ import annotations

import hashlib
import os
import re
import secrets
import sqlite3
import threading
import time as _time
from dataclasses import dataclass
from pathlib import Path

from datakit.crowd.db import thread_connection

__all__ = ["Credential", "CredentialStore", "OPERATOR", "WORKER_RE", "check_worker_name", "hash_token"]

OPERATOR = "operator"
WORKER_RE = re.compile(r"^[\w.@+-]{1,64}$")
TOKEN_BYTES = 32

_SCHEMA = """
CREATE TABLE IF NOT EXISTS credentials (
    worker      TEXT PRIMARY KEY,
    role        TEXT NOT NULL,
    token_hash  TEXT NOT NULL UNIQUE,
    created     REAL NOT NULL,
    revoked     REAL
);
"""


def hash_token(token: str) -> str:
    """The stored form of a secret: hex SHA-256 of its UTF-8 bytes."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def check_worker_name(name) -> str:
    """``name`` stripped, or ValueError saying what a worker name may contain."""
    if not isinstance(name, str) or not name.strip():
        raise ValueError("a worker name must not be empty")
    name = name.strip()
    if not WORKER_RE.match(name):
        raise ValueError(f"invalid worker name {name!r}: use 1-64 letters, digits or . _ @ + -")
    if name == OPERATOR:
        raise ValueError(f"{OPERATOR!r} is the operator's name; choose another worker name")
    return name


@dataclass(frozen=True)
class Credential:
    """Who a valid secret belongs to."""

    worker: str
    role: str  # "worker" or "operator"
    revoked: bool = False


class CredentialStore:
    """The ``credentials`` table of an app database. Safe to share between threads.

    Parameters
    ----------
    path : path
        The SQLite file (``<dataset>/votes.sqlite``); created if missing.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self._local = threading.local()
        self._connect().executescript(_SCHEMA)

    def _connect(self) -> sqlite3.Connection:
        return thread_connection(self._local, self.path)

    def _issue(self, con: sqlite3.Connection, worker: str, role: str) -> str:
        token = secrets.token_urlsafe(TOKEN_BYTES)
        con.execute("INSERT INTO credentials (worker, role, token_hash, created, revoked) VALUES (?, ?, ?, ?, NULL) "
                    "ON CONFLICT (worker) DO UPDATE SET role = excluded.role, token_hash = excluded.token_hash, "
                    "created = excluded.created, revoked = NULL", (worker, role, hash_token(token), _time.time()))
        return token

    def invite(self, workers: list[str]) -> dict[str, str]:
        """New secrets for ``workers`` (replacing earlier ones), in one transaction: ``{worker: secret}``."""
        names = [check_worker_name(w) for w in workers]
        if not names:
            raise ValueError("no workers to invite")
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"worker names given twice: {', '.join(dup)}")
        con = self._connect()
        con.execute("BEGIN IMMEDIATE")
        try:
            tokens = {n: self._issue(con, n, "worker") for n in names}
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
        return tokens

    def operator(self) -> str:
        """A new operator secret (the previous one stops working)."""
        con = self._connect()
        con.execute("BEGIN IMMEDIATE")
        try:
            token = self._issue(con, OPERATOR, OPERATOR)
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
        return token

    def revoke(self, worker: str) -> bool:
        """End ``worker``'s credential; False when there was no unrevoked one."""
        cur = self._connect().execute("UPDATE credentials SET revoked = ? WHERE worker = ? AND revoked IS NULL",
                                      (_time.time(), worker))
        return cur.rowcount == 1

    def verify(self, token) -> Credential | None:
        """The credential a secret belongs to (revoked ones too, flagged), or None."""
        if not isinstance(token, str) or not token or len(token) > 256:
            return None
        row = self._connect().execute("SELECT worker, role, revoked FROM credentials WHERE token_hash = ?",
                                      (hash_token(token),)).fetchone()
        if row is None:
            return None
        return Credential(worker=row[0], role=row[1], revoked=row[2] is not None)

    def has_workers(self) -> bool:
        """Whether any worker was ever invited (the app then requires credentials)."""
        return self._connect().execute("SELECT 1 FROM credentials WHERE role = 'worker' LIMIT 1").fetchone() is not None

    def has_operator(self) -> bool:
        return self._connect().execute(
            "SELECT 1 FROM credentials WHERE role = ? AND revoked IS NULL", (OPERATOR,)).fetchone() is not None

    def workers(self) -> dict[str, bool]:
        """Invited workers -> revoked?"""
        rows = self._connect().execute("SELECT worker, revoked FROM credentials WHERE role = 'worker' ORDER BY worker")
        return {w: r is not None for w, r in rows}

    def close(self) -> None:
        con = getattr(self._local, "con", None)
        if con is not None:
            con.close()
            self._local.con = None
