"""The state behind the annotation app: tasks (reloaded live), assignments, votes, gold checks.

No HTTP here: :mod:`datakit.crowd.app.api` turns requests into these calls,
so the logic is easy to test on its own.
"""
from __future__ import annotations

import logging
import os
import threading
import time as _time
from pathlib import Path
from urllib.parse import quote

import pandas as pd

from datakit.crowd.credentials import CredentialStore, check_worker_name
from datakit.crowd.db import DB_FILE, VoteDB
from datakit.crowd.tasks import TASKS_FILE, load_items, load_tasks, task_choices
from datakit.errors import DatakitError

__all__ = ["AnnotationApp", "RequestError"]

log = logging.getLogger(__name__)

#: a task handed out by /api/next counts as "in progress" for this long (seconds)
ASSIGNMENT_TTL = 3600.0
#: how often the voters-per-task counts are re-read from the database (seconds)
PAIRS_TTL = 10.0


class RequestError(Exception):
    """A client mistake: HTTP status and reason (plus optional extra JSON fields)."""

    def __init__(self, status: int, reason: str, **extra) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.extra = extra


def _read_tasks(root: Path) -> tuple[dict[str, dict], dict[str, Path]]:
    """Tasks of ``root`` (``{task: spec}`` in task order) and the image path of every task item."""
    tasks = load_tasks(root)
    out: dict[str, dict] = {}
    for task, grid in tasks.sort_values(["task", "position"]).groupby("task", sort=True):
        first = grid.iloc[0]
        out[str(task)] = {
            "task": str(task), "kind": str(first["kind"]), "question": str(first["question"]),
            "question_name": "" if pd.isna(first["question_name"]) else str(first["question_name"]),
            "gloss": "" if pd.isna(first["gloss"]) else str(first["gloss"]),
            "choices": task_choices(str(first["kind"]), str(first["question"])),
            "items": [str(i) for i in grid["item"]],
            "gold": {str(i): str(g) for i, g in zip(grid["item"], grid["gold"]) if pd.notna(g)},
        }
    frame, _ = load_items(root)
    paths = dict(zip(frame["id"], frame["path"]))
    wanted = {i for t in out.values() for i in t["items"]}
    image_paths = {i: root / paths[i] for i in wanted if i in paths}
    missing = wanted - set(image_paths)
    if missing:
        raise DatakitError(f"{len(missing)} task items have no image in {root} (e.g. {sorted(missing)[:3]})")
    return out, image_paths


class AnnotationApp:
    """Tasks, image paths, the vote database and the invitations of one dataset.

    Parameters
    ----------
    root : path
        A dataset (or candidates) directory with ``tasks.parquet`` (``datakit
        crowd tasks``); image paths come from its ``manifest.parquet`` (or
        ``candidates.parquet``). When ``tasks.parquet`` changes (a new round)
        the next request sees the new tasks, without a restart.
    db_path : path, optional
        Default ``<root>/votes.sqlite`` (votes, pauses and invitations).
    pause_below : float, optional
        Pause a worker whose share of correct gold answers falls below this
        (0-1), once they have answered ``min_gold`` gold items. None: never.
    min_gold : int
        Gold answers needed before a worker can be paused.
    """

    def __init__(self, root: str | os.PathLike, db_path: str | os.PathLike | None = None, *,
                 pause_below: float | None = None, min_gold: int = 10) -> None:
        if pause_below is not None and not 0 <= pause_below <= 1:
            raise ValueError(f"pause_below must be in [0, 1], got {pause_below!r}")
        if min_gold < 1:
            raise ValueError(f"min_gold must be at least 1, got {min_gold!r}")
        self.root = Path(root)
        self.pause_below = pause_below
        self.min_gold = int(min_gold)
        self._tasks_file = self.root / TASKS_FILE
        self._signature = self._file_signature()
        self.tasks, self.image_paths = _read_tasks(self.root)
        self._rank = {t: k for k, t in enumerate(self.tasks)}
        self.db = VoteDB(db_path or self.root / DB_FILE)
        self.credentials = CredentialStore(self.db.path)
        self._reload_lock = threading.Lock()
        self._assign_lock = threading.Lock()
        self._assigned: dict[str, tuple[str, float]] = {}  # worker -> (task, since)
        self._pairs: set[tuple[str, str]] | None = None  # (task, worker) with votes: for balancing only
        self._pairs_at = 0.0
        self._pairs_lock = threading.Lock()

    @property
    def order(self) -> list[str]:
        return list(self.tasks)

    # -- live rounds ---------------------------------------------------------------------
    def _file_signature(self):
        try:
            st = self._tasks_file.stat()
        except FileNotFoundError:
            return None
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def maybe_reload(self) -> bool:
        """Reload the tasks if ``tasks.parquet`` changed since they were read; True if it did.

        A file that cannot be read (for example one whose items have no image)
        is logged and the tasks already served stay.
        """
        sig = self._file_signature()
        if sig == self._signature or sig is None:
            return False
        with self._reload_lock:
            if sig == self._signature:
                return False
            try:
                tasks, images = _read_tasks(self.root)
            except (DatakitError, OSError, ValueError, KeyError) as exc:
                log.error("new %s not loaded, still serving the previous %d tasks: %s", self._tasks_file,
                          len(self.tasks), exc)
                self._signature = sig
                return False
            self._rank = {t: k for k, t in enumerate(tasks)}
            self.image_paths = images
            self.tasks = tasks
            self._signature = sig
            log.info("reloaded %s: %d tasks", self._tasks_file, len(tasks))
            return True

    # -- checks ----------------------------------------------------------------------------
    @staticmethod
    def check_worker(worker) -> str:
        if not isinstance(worker, str) or not worker.strip():
            raise RequestError(400, "missing field 'worker' (your name)")
        try:
            return check_worker_name(worker)
        except ValueError as exc:
            raise RequestError(400, str(exc)) from None

    def check_active(self, worker: str) -> None:
        """RequestError 403 if ``worker`` is paused."""
        reason = self.db.is_paused(worker)
        if reason is not None:
            raise RequestError(403, f"paused: {reason}. Your votes are kept for the operator to review; "
                                    "ask the operator to look at your work.", paused=True)

    def get_task(self, task, status: int = 400) -> dict:
        """The task spec; ``status`` for an unknown task (400 in a body, 404 in a URL)."""
        if task in (None, ""):
            raise RequestError(400, "missing field 'task'")
        if not isinstance(task, str):
            raise RequestError(400, f"field 'task' must be a string, got {type(task).__name__}")
        spec = self.tasks.get(task)
        if spec is None:
            raise RequestError(status, f"unknown task {task!r}")
        return spec

    def public_task(self, task: str, status: int = 404) -> dict:
        t = self.get_task(task, status)
        return {k: t[k] for k in ("task", "kind", "question", "question_name", "gloss", "choices")} | {
            "items": [{"item": i, "url": f"/image/{quote(i, safe='')}"} for i in t["items"]],
            "n_gold": len(t["gold"])}

    # -- worker actions --------------------------------------------------------------------
    def next_task(self, worker: str) -> dict:
        """The task ``worker`` should do next: the one handed out before and not yet done, else the
        least-annotated one (counting tasks in progress), or ``{"done": true}``."""
        worker = self.check_worker(worker)
        self.check_active(worker)
        self.maybe_reload()
        tasks = self.tasks
        done = self.db.done_tasks(worker)
        now = _time.time()
        with self._assign_lock:
            mine = self._assigned.get(worker)
            if mine and mine[0] in tasks and mine[0] not in done and now - mine[1] < ASSIGNMENT_TTL:
                best = mine[0]
            else:
                todo = [t for t in tasks if t not in done]
                if not todo:
                    self._assigned.pop(worker, None)
                    return {"done": True, "worker": worker, "tasks_done": len(done)}
                counts = self._workers_per_task()
                busy: dict[str, int] = {}
                for w, (t, since) in self._assigned.items():
                    if w != worker and now - since < ASSIGNMENT_TTL:
                        busy[t] = busy.get(t, 0) + 1
                best = min(todo, key=lambda t: (counts.get(t, 0) + busy.get(t, 0), self._rank[t]))
            self._assigned[worker] = (best, now)
        return self.public_task(best) | {"worker": worker, "tasks_done": len(done)}

    def _workers_per_task(self) -> dict[str, int]:
        """Distinct voters per task, from a cache re-read from the database every few seconds
        (so balancing stays cheap with many votes; what a worker has done always comes from the database)."""
        now = _time.monotonic()
        with self._pairs_lock:
            if self._pairs is None or now - self._pairs_at > PAIRS_TTL:
                self._pairs = self.db.task_workers()
                self._pairs_at = now
            counts: dict[str, int] = {}
            for task, _ in self._pairs:
                counts[task] = counts.get(task, 0) + 1
        return counts

    def submit(self, payload, worker: str | None = None) -> dict:
        """Record a grid: ``{"task", "answers": {item: label}}`` (``"worker"`` too when ``worker`` is None)."""
        worker = self._worker_of(payload, worker)
        t = self.get_task(payload.get("task"))
        answers = payload.get("answers")
        if not isinstance(answers, dict) or not answers:
            raise RequestError(400, "missing field 'answers' (an object item -> label)")
        return self._record(worker, t, answers)

    def vote(self, payload, worker: str | None = None) -> dict:
        """Record one vote: ``{"task", "item", "label"}``."""
        worker = self._worker_of(payload, worker)
        t = self.get_task(payload.get("task"))
        for field in ("item", "label"):
            if payload.get(field) in (None, ""):
                raise RequestError(400, f"missing field {field!r}")
        if not isinstance(payload["item"], str):
            raise RequestError(400, f"field 'item' must be a string, got {type(payload['item']).__name__}")
        return self._record(worker, t, {payload["item"]: payload["label"]})

    def _worker_of(self, payload, worker: str | None) -> str:
        if not isinstance(payload, dict):
            raise RequestError(400, "the body must be a JSON object")
        claimed = payload.get("worker")
        if worker is None:
            worker = self.check_worker(claimed)
        elif claimed not in (None, "", worker):
            raise RequestError(403, f"you are signed in as {worker!r}: you cannot vote as {claimed!r}")
        self.check_active(worker)
        return worker

    def _record(self, worker: str, t: dict, answers: dict) -> dict:
        items = set(t["items"])
        votes = []
        for item, label in answers.items():
            if item not in items:
                raise RequestError(400, f"unknown item {item!r} in task {t['task']!r}")
            if not isinstance(label, str) or label not in t["choices"]:
                raise RequestError(400, f"invalid label {label!r} for item {item!r}; valid values are "
                                        f"{{{', '.join(t['choices'])}}}")
            votes.append((t["task"], item, worker, label))
        new, dup = self.db.record(votes)
        if new:
            with self._pairs_lock:
                if self._pairs is not None:
                    self._pairs.add((t["task"], worker))
        gold = [{"item": i, "expected": t["gold"][i], "given": answers[i], "correct": answers[i] == t["gold"][i]}
                for i in answers if i in t["gold"]]
        correct, total = self.gold_stats(worker)
        paused = self._maybe_pause(worker, correct, total)
        return {"recorded": new, "duplicates": dup, "gold": gold,
                "gold_correct": sum(g["correct"] for g in gold), "gold_total": len(gold),
                "worker_gold_correct": correct, "worker_gold_total": total, "paused": paused}

    def gold_stats(self, worker: str) -> tuple[int, int]:
        """``(correct, answered)`` gold items of ``worker`` over every task served now."""
        tasks = self.tasks
        correct = total = 0
        for task, item, label in self.db.worker_votes(worker):
            expected = tasks.get(task, {}).get("gold", {}).get(item)
            if expected is not None:
                total += 1
                correct += label == expected
        return correct, total

    def _maybe_pause(self, worker: str, correct: int, total: int) -> bool:
        if self.pause_below is None or total < self.min_gold or correct / total >= self.pause_below:
            return False
        reason = (f"{correct} of {total} check items right ({correct / total:.0%}), "
                  f"below the {self.pause_below:.0%} required")
        if self.db.pause(worker, reason):
            log.warning("paused worker %s: %s", worker, reason)
        return True

    def me(self, worker: str) -> dict:
        """What the page shows about ``worker``: progress, gold score, pause."""
        worker = self.check_worker(worker)
        self.maybe_reload()
        done = self.db.done_tasks(worker) & set(self.tasks)
        correct, total = self.gold_stats(worker)
        return {"worker": worker, "tasks_done": len(done), "tasks_left": len(self.tasks) - len(done),
                "gold_correct": correct, "gold_total": total, "paused": self.db.is_paused(worker)}

    def stats(self) -> dict:
        self.maybe_reload()
        return {"votes": self.db.count(), "tasks": len(self.tasks),
                "tasks_with_votes": len(set(self.db.workers_per_task()) & set(self.tasks))}

    def assignments(self) -> dict[str, str]:
        """Workers -> the task they are working on now (handed out, not yet submitted)."""
        now = _time.time()
        with self._assign_lock:
            return {w: t for w, (t, since) in self._assigned.items() if now - since < ASSIGNMENT_TTL}
