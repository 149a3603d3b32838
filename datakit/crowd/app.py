"""The annotation app: a small HTTP server for an in-house crowd.

Standard library only (``http.server.ThreadingHTTPServer``, ``sqlite3``); the
page in ``static/`` is plain HTML and JavaScript. Endpoints:

=======  ==========================  ===================================================
GET      ``/``                       the annotation page
GET      ``/static/app.js``          its script
GET      ``/api/next?worker=NAME``   the next task for NAME (fewest annotators first), or ``{"done": true}``
GET      ``/api/task/<task>``        one task
GET      ``/image/<item>``           an item's image (only items of some task)
GET      ``/api/stats``              vote counts
POST     ``/api/submit``             ``{"worker", "task", "answers": {item: label}}``: one transaction
POST     ``/api/vote``               ``{"worker", "task", "item", "label"}``: one vote
=======  ==========================  ===================================================

Bad requests get a 4xx with a JSON ``{"error": reason}`` (missing fields,
unknown task or item, invalid label, oversized body); never a 500 for input.
A submission's reply lists the gold items with the expected answer, so the page
can show feedback. Duplicates: see :mod:`datakit.crowd.db`.
"""
from __future__ import annotations

import json
import logging
import os
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlparse

import pandas as pd

from datakit.crowd.db import DB_FILE, VoteDB
from datakit.crowd.tasks import load_items, load_tasks, task_choices
from datakit.errors import DatakitError

__all__ = ["AnnotationApp", "make_server", "serve"]

log = logging.getLogger(__name__)

STATIC = Path(__file__).with_name("static")
MAX_BODY = 1 << 20
WORKER_RE = re.compile(r"^[\w.@+-]{1,64}$")
_CONTENT_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
                  ".css": "text/css; charset=utf-8", ".png": "image/png", ".jpg": "image/jpeg",
                  ".jpeg": "image/jpeg"}


class RequestError(Exception):
    """A client mistake: HTTP status and reason."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


class AnnotationApp:
    """The state behind the server: tasks, image paths, the vote database.

    Parameters
    ----------
    root : path
        A dataset (or candidates) directory with ``tasks.parquet`` (``datakit
        crowd tasks``); image paths come from its ``manifest.parquet`` (or
        ``candidates.parquet``).
    db_path : path, optional
        Default ``<root>/votes.sqlite``.
    """

    def __init__(self, root: str | os.PathLike, db_path: str | os.PathLike | None = None) -> None:
        self.root = Path(root)
        tasks = load_tasks(self.root)
        self.tasks: dict[str, dict] = {}
        for task, grid in tasks.sort_values(["task", "position"]).groupby("task", sort=True):
            first = grid.iloc[0]
            self.tasks[str(task)] = {
                "task": str(task), "kind": str(first["kind"]), "question": str(first["question"]),
                "question_name": "" if pd.isna(first["question_name"]) else str(first["question_name"]),
                "gloss": "" if pd.isna(first["gloss"]) else str(first["gloss"]),
                "choices": task_choices(str(first["kind"]), str(first["question"])),
                "items": [str(i) for i in grid["item"]],
                "gold": {str(i): str(g) for i, g in zip(grid["item"], grid["gold"]) if pd.notna(g)},
            }
        self.order = list(self.tasks)
        frame, _ = load_items(self.root)
        paths = dict(zip(frame["id"], frame["path"]))
        wanted = {i for t in self.tasks.values() for i in t["items"]}
        self.image_paths = {i: self.root / paths[i] for i in wanted if i in paths}
        missing = wanted - set(self.image_paths)
        if missing:
            raise DatakitError(f"{len(missing)} task items have no image in {self.root} (e.g. {sorted(missing)[:3]})")
        self.db = VoteDB(db_path or self.root / DB_FILE)
        self._lock = threading.Lock()

    # -- request logic (no HTTP here, so it is easy to test) ----------------------------
    @staticmethod
    def check_worker(worker) -> str:
        if not isinstance(worker, str) or not worker.strip():
            raise RequestError(400, "missing field 'worker' (your name)")
        worker = worker.strip()
        if not WORKER_RE.match(worker):
            raise RequestError(400, f"invalid worker name {worker!r}: use 1-64 letters, digits or . _ @ + -")
        return worker

    def get_task(self, task) -> dict:
        if task in (None, ""):
            raise RequestError(400, "missing field 'task'")
        if not isinstance(task, str):
            raise RequestError(400, f"field 'task' must be a string, got {type(task).__name__}")
        if task not in self.tasks:
            raise RequestError(404, f"unknown task {task!r}")
        return self.tasks[task]

    def public_task(self, task: str) -> dict:
        t = self.get_task(task)
        return {k: t[k] for k in ("task", "kind", "question", "question_name", "gloss", "choices")} | {
            "items": [{"item": i, "url": f"/image/{i}"} for i in t["items"]], "n_gold": len(t["gold"])}

    def next_task(self, worker: str) -> dict:
        worker = self.check_worker(worker)
        done = self.db.done_tasks(worker)
        counts = self.db.workers_per_task()
        todo = [t for t in self.order if t not in done]
        if not todo:
            return {"done": True, "worker": worker}
        best = min(todo, key=lambda t: (counts.get(t, 0), self.order.index(t)))
        return self.public_task(best)

    def submit(self, payload) -> dict:
        if not isinstance(payload, dict):
            raise RequestError(400, "the body must be a JSON object")
        worker = self.check_worker(payload.get("worker"))
        t = self.get_task(payload.get("task"))
        answers = payload.get("answers")
        if not isinstance(answers, dict) or not answers:
            raise RequestError(400, "missing field 'answers' (an object item -> label)")
        return self._record(worker, t, answers)

    def vote(self, payload) -> dict:
        if not isinstance(payload, dict):
            raise RequestError(400, "the body must be a JSON object")
        worker = self.check_worker(payload.get("worker"))
        t = self.get_task(payload.get("task"))
        for field in ("item", "label"):
            if payload.get(field) in (None, ""):
                raise RequestError(400, f"missing field {field!r}")
        return self._record(worker, t, {payload["item"]: payload["label"]})

    def _record(self, worker: str, t: dict, answers: dict) -> dict:
        items = set(t["items"])
        votes = []
        for item, label in answers.items():
            if item not in items:
                raise RequestError(404, f"unknown item {item!r} in task {t['task']!r}")
            if not isinstance(label, str) or label not in t["choices"]:
                raise RequestError(400, f"invalid label {label!r} for item {item!r}; valid values are "
                                        f"{{{', '.join(t['choices'])}}}")
            votes.append((t["task"], item, worker, label))
        new, dup = self.db.record(votes)
        gold = [{"item": i, "expected": t["gold"][i], "given": answers[i], "correct": answers[i] == t["gold"][i]}
                for i in answers if i in t["gold"]]
        return {"recorded": new, "duplicates": dup, "gold": gold,
                "gold_correct": sum(g["correct"] for g in gold), "gold_total": len(gold)}

    def stats(self) -> dict:
        return {"votes": self.db.count(), "tasks": len(self.tasks),
                "tasks_with_votes": len(self.db.workers_per_task())}


class _Handler(BaseHTTPRequestHandler):
    server_version = "datakit-annotate/1"
    app: AnnotationApp  # set on the class made by make_server

    def log_message(self, fmt, *args):  # to logging, not stderr
        log.info("%s %s", self.address_string(), fmt % args)

    def _send(self, status: int, body: bytes, ctype: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, obj) -> None:
        self._send(status, json.dumps(obj).encode(), "application/json")

    def _file(self, path: Path) -> None:
        self._send(200, path.read_bytes(), _CONTENT_TYPES.get(path.suffix.lower(), "application/octet-stream"))

    def _dispatch(self, fn) -> None:
        try:
            fn()
        except RequestError as exc:
            self._json(exc.status, {"error": exc.reason})
        except (BrokenPipeError, ConnectionResetError):
            pass
        except Exception:  # noqa: BLE001 - a server bug, not the client's: log it, answer 500
            log.exception("internal error on %s %s", self.command, self.path)
            self._json(500, {"error": "internal server error (see the server log)"})

    def do_GET(self) -> None:
        self._dispatch(self._get)

    def do_POST(self) -> None:
        self._dispatch(self._post)

    def _get(self) -> None:
        url = urlparse(self.path)
        path = unquote(url.path)
        query = parse_qs(url.query)
        if path in ("/", "/index.html"):
            return self._file(STATIC / "index.html")
        if path.startswith("/static/"):
            name = path[len("/static/"):]
            target = STATIC / name
            if "/" in name or name.startswith(".") or not target.is_file():
                raise RequestError(404, f"no static file {name!r}")
            return self._file(target)
        if path.startswith("/image/"):
            item = path[len("/image/"):]
            if item not in self.app.image_paths:
                raise RequestError(404, f"unknown item {item!r}")
            return self._file(self.app.image_paths[item])
        if path == "/api/next":
            return self._json(200, self.app.next_task(query.get("worker", [""])[0]))
        if path.startswith("/api/task/"):
            return self._json(200, self.app.public_task(path[len("/api/task/"):]))
        if path == "/api/stats":
            return self._json(200, self.app.stats())
        raise RequestError(404, f"no such page {path!r}")

    def _post(self) -> None:
        path = urlparse(self.path).path
        if path not in ("/api/submit", "/api/vote"):
            raise RequestError(404, f"no such endpoint {path!r}")
        try:
            length = int(self.headers.get("Content-Length", ""))
        except ValueError:
            raise RequestError(411, "Content-Length header required") from None
        if length < 0 or length > MAX_BODY:
            raise RequestError(413, f"body of {length} bytes is over the {MAX_BODY}-byte limit")
        raw = self.rfile.read(length)
        try:
            payload = json.loads(raw.decode("utf-8") or "null")
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise RequestError(400, f"the body is not valid JSON: {exc}") from None
        result = self.app.submit(payload) if path == "/api/submit" else self.app.vote(payload)
        self._json(200, result)


class _Server(ThreadingHTTPServer):
    """ThreadingHTTPServer with a listen backlog for a crowd, not the default 5.

    With the default backlog, twenty annotators connecting at the same moment
    overflow the accept queue and some connections are reset by the kernel.
    """

    request_queue_size = 128
    daemon_threads = True


def make_server(root: str | os.PathLike, host: str = "127.0.0.1", port: int = 8000,
                db_path: str | os.PathLike | None = None) -> ThreadingHTTPServer:
    """A ready (not yet serving) HTTP server for the dataset at ``root``; ``port=0`` picks a free port.

    Call ``serve_forever()`` on it (or :func:`serve`); ``server.server_address`` has the bound port.
    """
    app = AnnotationApp(root, db_path)
    handler = type("AnnotateHandler", (_Handler,), {"app": app})
    server = _Server((host, port), handler)
    server.app = app  # type: ignore[attr-defined]
    return server


def serve(root: str | os.PathLike, host: str = "127.0.0.1", port: int = 8000) -> None:
    """Serve until interrupted."""
    server = make_server(root, host, port)
    try:
        server.serve_forever()
    finally:
        server.server_close()
