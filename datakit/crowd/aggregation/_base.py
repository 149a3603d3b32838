"""Shared checks of the aggregators (private)."""
from __future__ import annotations

import numpy as np
import pandas as pd

from datakit.errors import DatakitError

__all__ = ["check_data", "check_fitted", "encode", "argmax_labels", "check_gold"]


def check_data(data: pd.DataFrame) -> pd.DataFrame:
    """Validate the long table; return ``task, worker, label`` as strings, one vote per (task, worker)."""
    if not isinstance(data, pd.DataFrame):
        raise TypeError(f"data must be a pandas DataFrame with columns task, worker, label, got {type(data).__name__}")
    missing = [c for c in ("task", "worker", "label") if c not in data.columns]
    if missing:
        raise ValueError(f"data is missing columns {missing}; expected columns task, worker, label")
    if data[["task", "worker", "label"]].isna().any().any():
        raise ValueError("data has missing values in task, worker or label")
    if data.empty:
        raise ValueError("data has no votes")
    from datakit.crowd.tasks import dedupe_votes

    out = data[["task", "worker", "label"] + (["time"] if "time" in data.columns else [])].copy()
    for c in ("task", "worker", "label"):
        out[c] = out[c].astype(str)
    return dedupe_votes(out)[["task", "worker", "label"]]


def check_gold(gold: pd.Series | None, labels: list[str]) -> pd.Series:
    if gold is None:
        return pd.Series(dtype=object)
    if not isinstance(gold, pd.Series):
        raise TypeError(f"gold must be a pandas Series indexed by task, got {type(gold).__name__}")
    gold = gold.dropna().astype(str)
    gold.index = gold.index.astype(str)
    bad = sorted(set(gold) - set(labels))
    if bad:
        raise ValueError(f"gold labels {bad} never occur in the votes; valid values are {{{', '.join(labels)}}}")
    return gold


def check_fitted(estimator, attribute: str = "labels_") -> None:
    if getattr(estimator, attribute, None) is None:
        raise DatakitError(f"This {type(estimator).__name__} is not fitted yet. Call 'fit' with the votes first.")


def encode(data: pd.DataFrame, labels: list[str] | None = None):
    """Integer codes: tasks (sorted), workers (sorted), labels (sorted); arrays t, w, l of shape (n_votes,)."""
    tasks = np.array(sorted(data["task"].unique()), dtype=object)
    workers = np.array(sorted(data["worker"].unique()), dtype=object)
    labels = np.array(sorted(data["label"].unique()) if labels is None else labels, dtype=object)
    t = pd.Index(tasks).get_indexer(data["task"])
    w = pd.Index(workers).get_indexer(data["worker"])
    lab = pd.Index(labels).get_indexer(data["label"])
    return tasks, workers, labels, t, w, lab


def argmax_labels(probas: pd.DataFrame) -> pd.Series:
    """Most probable label per task; ties go to the smallest label in sort order
    (the columns are sorted, and ``argmax`` returns the first maximum)."""
    values = probas.to_numpy()
    idx = values.argmax(axis=1)
    return pd.Series(probas.columns.to_numpy()[idx], index=probas.index, name="label")
