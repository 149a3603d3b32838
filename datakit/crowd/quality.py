"""Per-worker quality: gold accuracy, agreement with the others, Dawid-Skene
estimates, and spammer flags."""
from __future__ import annotations

import numpy as np
import pandas as pd

from datakit.crowd.aggregation._base import check_data

__all__ = ["worker_quality", "QUALITY_COLUMNS"]

QUALITY_COLUMNS = ["worker", "n_votes", "gold_n", "gold_accuracy", "agreement", "ds_accuracy",
                   "spam_score", "flag", "reason"]


def _leave_one_out_agreement(data: pd.DataFrame) -> pd.Series:
    """Share of a worker's votes that match the majority of the *other* workers on the task.

    A tie among the others' top labels counts ``1 / n_tied`` when the vote is one
    of them; tasks with no other vote are skipped.
    """
    per_task = {t: g.value_counts() for t, g in data.groupby("task")["label"]}
    scores = np.full(len(data), np.nan)
    for i, (task, label) in enumerate(zip(data["task"], data["label"])):
        counts = per_task[task].copy()
        counts[label] -= 1
        if counts.sum() <= 0:
            continue
        top = counts.max()
        scores[i] = 1.0 / int((counts == top).sum()) if counts[label] == top else 0.0
    return pd.Series(scores, index=data["worker"].to_numpy()).groupby(level=0).mean()


def _spam_score(errors: pd.DataFrame) -> pd.Series:
    """1 - mean total-variation distance between the rows of each worker's confusion
    matrix: 1 when the answer does not depend on the truth (random or constant
    answers), 0 when every true class gets a distinct answer (Raykar & Yu's idea)."""
    out = {}
    for worker, m in errors.groupby(level="worker"):
        rows = m.to_numpy()
        k = len(rows)
        if k < 2:
            out[worker] = np.nan
            continue
        tv = [0.5 * np.abs(rows[i] - rows[j]).sum() for i in range(k) for j in range(i + 1, k)]
        out[worker] = 1.0 - float(np.mean(tv))
    return pd.Series(out, name="spam_score")


def worker_quality(data: pd.DataFrame, gold: pd.Series | None = None, *, min_gold: int = 3,
                   min_gold_accuracy: float = 0.6, max_spam_score: float = 0.8,
                   min_votes: int = 5, n_iter: int = 100) -> pd.DataFrame:
    """One row per worker: how much and how well they voted, and whether they look like a spammer.

    Parameters
    ----------
    data : DataFrame
        Votes ``task, worker, label``.
    gold : Series, optional
        Known labels indexed by task.
    min_gold, min_gold_accuracy : int, float
        Flag a worker with at least ``min_gold`` gold answers and a gold accuracy
        below ``min_gold_accuracy``.
    max_spam_score, min_votes : float, int
        Flag a worker with at least ``min_votes`` votes whose Dawid-Skene
        confusion matrix has a spam score above ``max_spam_score`` (answers that
        do not depend on the true label), or whose estimated accuracy is below
        chance (an adversary).

    Returns
    -------
    DataFrame with :data:`QUALITY_COLUMNS`: ``n_votes``, ``gold_n``,
    ``gold_accuracy`` (NaN without gold), ``agreement`` (share of votes equal to
    the other workers' majority), ``ds_accuracy`` and ``spam_score`` (from
    Dawid-Skene), ``flag`` (bool) and ``reason``.
    """
    from datakit.crowd.aggregation import DawidSkene

    for name, value, lo, hi in (("min_gold_accuracy", min_gold_accuracy, 0, 1), ("max_spam_score", max_spam_score, 0, 1)):
        if not lo <= value <= hi:
            raise ValueError(f"{name} must be in [{lo}, {hi}], got {value!r}")
    data = check_data(data)
    workers = sorted(data["worker"].unique())
    out = pd.DataFrame(index=pd.Index(workers, name="worker"))
    out["n_votes"] = data.groupby("worker").size()
    if gold is not None and len(gold):
        g = gold.dropna().astype(str)
        g.index = g.index.astype(str)
        on_gold = data[data["task"].isin(g.index)]
        correct = on_gold["label"].to_numpy() == on_gold["task"].map(g).to_numpy()
        out["gold_n"] = on_gold.groupby("worker").size()
        out["gold_accuracy"] = pd.Series(correct, index=on_gold["worker"]).groupby(level=0).mean()
    else:
        out["gold_n"], out["gold_accuracy"] = 0, np.nan
    out["gold_n"] = out["gold_n"].fillna(0).astype(int)
    out["agreement"] = _leave_one_out_agreement(data)
    ds = DawidSkene(n_iter=n_iter, smoothing=0.01).fit(data, gold)
    out["ds_accuracy"] = ds.skills_
    out["spam_score"] = _spam_score(ds.errors_)
    n_labels = data["label"].nunique()
    reasons = []
    for w, row in out.iterrows():
        why = []
        if row["gold_n"] >= min_gold and row["gold_accuracy"] < min_gold_accuracy:
            why.append(f"gold accuracy {row['gold_accuracy']:.2f} < {min_gold_accuracy}")
        if row["n_votes"] >= min_votes and row["spam_score"] > max_spam_score:
            why.append(f"spam score {row['spam_score']:.2f} > {max_spam_score}")
        if row["n_votes"] >= min_votes and n_labels > 1 and row["ds_accuracy"] < 1.0 / n_labels:
            why.append(f"estimated accuracy {row['ds_accuracy']:.2f} below chance")
        reasons.append("; ".join(why))
    out["reason"] = reasons
    out["flag"] = out["reason"] != ""
    return out.reset_index()[QUALITY_COLUMNS]
