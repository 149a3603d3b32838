"""The operator's view: votes per task and round, each worker's gold accuracy and agreement,
consensus progress and what remains, pauses and invitations.
"""
from __future__ import annotations

import logging
import re
import threading
import time as _time
from collections import Counter, defaultdict

import pandas as pd

from datakit.crowd.app.state import AnnotationApp
from datakit.crowd.tasks import NO, YES
from datakit.errors import DatakitError

__all__ = ["operator_report", "round_of"]

log = logging.getLogger(__name__)

_ROUND_RE = re.compile(r"-round(\d+)-")
_CONSENSUS_TTL = 10.0
_consensus_cache: dict[str, tuple[float, object, dict]] = {}
_consensus_lock = threading.Lock()


def round_of(task: str) -> int:
    """The round of a task id (``...-round<N>-...`` from ``crowd tasks --needing-votes``; else 1)."""
    m = _ROUND_RE.search(task)
    return int(m.group(1)) if m else 1


def _agreement(frame: pd.DataFrame, question: dict[str, str]) -> dict[str, tuple[int, int]]:
    """Per worker ``(agreeing, compared)``: votes that match the majority of the *other* workers on the item."""
    key = [(question.get(t, ""), i) for t, i in zip(frame["task"], frame["item"])]
    counts: dict[tuple, Counter] = defaultdict(Counter)
    for k, label in zip(key, frame["label"]):
        counts[k][label] += 1
    out: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for k, worker, label in zip(key, frame["worker"], frame["label"]):
        others = counts[k].copy()
        others[label] -= 1
        ranked = [(n, lab) for lab, n in others.items() if n > 0]
        if not ranked:
            continue
        ranked.sort(reverse=True)
        if len(ranked) > 1 and ranked[0][0] == ranked[1][0]:
            continue  # the others are tied: no majority to agree with
        out[worker][1] += 1
        out[worker][0] += ranked[0][1] == label
    return {w: (a, n) for w, (a, n) in out.items()}


def _consensus(app: AnnotationApp, frame: pd.DataFrame) -> dict:
    """ImageNet's adaptive consensus over the binary tasks' votes, per question (cached a few seconds)."""
    from datakit.crowd.consensus import plan_votes

    tasks = app.tasks
    binary = {t: s for t, s in tasks.items() if s["kind"] == "binary"}
    if not binary:
        return {"questions": [], "note": "no yes/no tasks"}
    sig = (id(tasks), len(frame))
    now = _time.monotonic()
    with _consensus_lock:
        hit = _consensus_cache.get(str(app.db.path))
        if hit and hit[1] == sig and now - hit[0] < _CONSENSUS_TTL:
            return hit[2]
    items = pd.DataFrame([(i, s["question"]) for s in binary.values() for i in s["items"]],
                         columns=["item", "question"]).drop_duplicates("item")
    votes = frame[frame["task"].isin(binary) & frame["label"].isin([YES, NO])]
    votes = pd.DataFrame({"task": votes["item"], "worker": votes["worker"], "label": votes["label"]})
    try:
        plan = plan_votes(votes, items)
    except (DatakitError, ValueError, KeyError) as exc:  # too few votes to say anything yet
        return {"questions": [], "note": f"consensus not available yet: {exc}"}
    rows = []
    for q, g in plan.groupby("question", sort=True):
        rows.append({"question": str(q), "images": int(len(g)), "votes": int(g["votes"].sum()),
                     "accepted": int((g["decision"] == "accepted").sum()),
                     "rejected": int((g["decision"] == "rejected").sum()),
                     "open": int((~g["decision"].isin(["accepted", "rejected"])).sum()),
                     "more_votes": int(g["more_votes"].sum())})
    out = {"questions": rows, "note": "adaptive consensus (threshold 0.95, as `datakit crowd consensus`)"}
    with _consensus_lock:
        _consensus_cache[str(app.db.path)] = (now, sig, out)
    return out


def operator_report(app: AnnotationApp) -> dict:
    """Everything the operator's page shows, as JSON-ready dicts."""
    app.maybe_reload()
    tasks = app.tasks
    frame = app.db.frame()
    paused = app.db.paused()
    invited = app.credentials.workers()
    assigned = app.assignments()
    question = {t: s["question"] for t, s in tasks.items()}

    per_task = frame.groupby("task").agg(votes=("item", "size"), workers=("worker", "nunique"))
    task_rows = []
    for t, s in tasks.items():
        votes = int(per_task["votes"].get(t, 0)) if len(per_task) else 0
        workers = int(per_task["workers"].get(t, 0)) if len(per_task) else 0
        task_rows.append({"task": t, "round": round_of(t), "kind": s["kind"], "question": s["question"],
                          "items": len(s["items"]), "n_gold": len(s["gold"]), "workers": workers, "votes": votes,
                          "in_progress": sum(1 for a in assigned.values() if a == t)})
    rounds: dict[int, dict] = {}
    for r in task_rows:
        agg = rounds.setdefault(r["round"], {"round": r["round"], "tasks": 0, "tasks_with_votes": 0,
                                             "tasks_without_votes": 0, "votes": 0, "workers_per_task": 0.0})
        agg["tasks"] += 1
        agg["votes"] += r["votes"]
        agg["tasks_with_votes" if r["workers"] else "tasks_without_votes"] += 1
        agg["workers_per_task"] += r["workers"]
    for agg in rounds.values():
        agg["workers_per_task"] = round(agg["workers_per_task"] / agg["tasks"], 2)

    agree = _agreement(frame, question) if len(frame) else {}
    worker_rows = []
    names = sorted(set(frame["worker"]) | set(invited) | set(paused))
    by_worker = frame.groupby("worker") if len(frame) else None
    for w in names:
        mine = by_worker.get_group(w) if by_worker is not None and w in by_worker.groups else frame.iloc[:0]
        correct = total = 0
        for t, i, label in zip(mine["task"], mine["item"], mine["label"]):
            expected = tasks.get(t, {}).get("gold", {}).get(i)
            if expected is not None:
                total += 1
                correct += label == expected
        a, n = agree.get(w, (0, 0))
        worker_rows.append({
            "worker": w, "votes": int(len(mine)), "tasks": int(mine["task"].nunique()),
            "gold_correct": correct, "gold_total": total, "gold_accuracy": round(correct / total, 4) if total else None,
            "agreement": round(a / n, 4) if n else None, "agreement_votes": n,
            "paused": paused.get(w), "flagged_votes": int(len(mine)) if w in paused else 0,
            "invited": w in invited, "revoked": invited.get(w, False), "working_on": assigned.get(w)})

    return {
        "mode": "invitations" if invited else "open",
        "pause_below": app.pause_below, "min_gold": app.min_gold,
        "totals": {"tasks": len(tasks), "votes": int(len(frame)), "workers": int(frame["worker"].nunique()),
                   "tasks_without_votes": sum(1 for r in task_rows if not r["workers"]),
                   "flagged_votes": sum(r["flagged_votes"] for r in worker_rows), "paused_workers": len(paused)},
        "rounds": [rounds[k] for k in sorted(rounds)],
        "tasks": task_rows,
        "workers": worker_rows,
        "consensus": _consensus(app, frame) if len(frame) else {"questions": [], "note": "no votes yet"},
    }
