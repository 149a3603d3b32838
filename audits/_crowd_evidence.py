"""Private helper of ``label_issues``: crowd votes as evidence about each image's label.

Reads a dataset's ``annotations.parquet`` (the long ``task, worker, label``
table; ``task`` is the manifest ``id``, as in ``label_agreement``) and combines
the votes with the model's out-of-fold probabilities the way CROWDLAB does
(Goh, Tkachenko & Mueller, "CROWDLAB: Supervised learning to infer consensus
labels and quality scores for data with multiple annotators", 2022): a
weighted average of the model's probabilities and each vote, the weights
measured from how often the model and each annotator agree with the
consensus, relative to always guessing the most common class.

Votes are either class ids (or class names) — "pick the class" tasks — or
``yes`` / ``no`` — "is this a <given label>?" verification tasks, where ``yes``
is a vote for the given label and ``no`` a vote spread over the other classes.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = ["combine_with_votes", "crowd_posterior"]

_MIN_WEIGHT = 0.01


def crowd_posterior(pred_probs: np.ndarray, votes: list[np.ndarray], model_weight: float,
                    annotator_weight: np.ndarray, vote_accuracy: float) -> np.ndarray:
    """Weighted average of model probabilities and votes, per example.

    Parameters
    ----------
    pred_probs : ndarray, shape (N, K)
    votes : list of N int ndarrays of shape (V_i, 3)
        Each vote as (class index, annotator index, negative): ``negative = 0``
        is a vote *for* the class (likelihood ``vote_accuracy`` on it, the rest
        spread evenly); ``negative = 1`` a vote *against* it (``1 - vote_accuracy``
        on it, the rest spread evenly over the other classes).
    model_weight : float
    annotator_weight : ndarray, shape (A,)
    vote_accuracy : float
        Probability that a vote is right.

    Returns
    -------
    ndarray, shape (N, K); rows without votes are ``pred_probs``.

    Examples
    --------
    >>> p = np.array([[0.9, 0.1]])
    >>> crowd_posterior(p, [np.array([[1, 0, 0], [1, 1, 0]])], 1.0, np.array([1.0, 1.0]), 0.9).round(3)
    array([[0.367, 0.633]])
    """
    pred_probs = np.asarray(pred_probs, dtype=np.float64)
    k = pred_probs.shape[1]
    acc = float(np.clip(vote_accuracy, 1.0 / k, 1.0))
    post = pred_probs.copy()
    for i, v in enumerate(votes):
        if len(v) == 0:
            continue
        w = annotator_weight[v[:, 1]]
        dist = np.empty((len(v), k))
        for r, (cls, _, neg) in enumerate(v):
            if neg:
                dist[r] = acc / max(k - 1, 1)
                dist[r, cls] = 1 - acc
            else:
                dist[r] = (1 - acc) / max(k - 1, 1)
                dist[r, cls] = acc
        post[i] = (model_weight * pred_probs[i] + (w[:, None] * dist).sum(0)) / (model_weight + w.sum())
    return post


def _agreement(votes: pd.DataFrame) -> pd.Series:
    """Per vote: the share of the other votes on its task with the same label (NaN for a task's only vote)."""
    size = votes.groupby("task")["label"].transform("size")
    same = votes.groupby(["task", "label"])["label"].transform("size")
    return ((same - 1) / (size - 1)).where(size > 1)


def combine_with_votes(ds, frame: pd.DataFrame, y: np.ndarray, probs: np.ndarray,
                       classes: list[str]) -> tuple[np.ndarray, dict]:
    """Model probabilities updated with the crowd votes on the examined images.

    Parameters
    ----------
    ds : Dataset
    frame : DataFrame
        Examined manifest rows (``id`` column), aligned with ``y`` and ``probs``.
    y : ndarray, shape (N,), int
        Given labels.
    probs : ndarray, shape (N, K)
        Out-of-fold model probabilities.
    classes : list of str

    Returns
    -------
    probs : ndarray, shape (N, K)
        Unchanged when the dataset has no votes on these images.
    info : dict
        Empty without votes; else ``n_voted``, ``n_votes``, ``model_weight``,
        ``mean_annotator_weight``, ``vote_accuracy``, ``model_accuracy``, ``kind``,
        ``ignored_votes``.
    """
    from datakit.crowd.tasks import load_annotations

    raw = load_annotations(ds.root)
    if raw.empty:
        return probs, {}
    k = len(classes)
    row_of = pd.Series(np.arange(len(frame)), index=frame["id"].astype(str).to_numpy())
    v = raw[raw["task"].isin(row_of.index)][["task", "worker", "label"]].dropna().astype(str)
    if v.empty:
        return probs, {}
    rows = row_of.loc[v["task"]].to_numpy()
    given = y[rows]
    binary = set(v["label"].str.lower()) <= {"yes", "no"}
    ignored = 0
    if binary:
        neg = (v["label"].str.lower() == "no").to_numpy().astype(np.int64)
        cls = given
    else:
        idx = {c: i for i, c in enumerate(classes)}
        names = dict(zip(ds.categories["label"].astype(str), ds.categories["name"].astype(str))) \
            if "name" in ds.categories else {}
        idx.update({names[c]: i for i, c in enumerate(classes) if c in names and names[c] not in idx})
        mapped = v["label"].map(idx)
        ok = mapped.notna().to_numpy()
        ignored = int((~ok).sum())
        v, rows, given = v[ok], rows[ok], given[ok]
        cls = mapped[ok].to_numpy(dtype=np.int64)
        neg = np.zeros(len(v), np.int64)
        if v.empty:
            return probs, {}
    workers, worker_idx = np.unique(v["worker"].to_numpy(), return_inverse=True)
    # consensus per voted image: majority (ties: the model's most probable of the tied classes)
    score = np.zeros((len(frame), k))
    if binary:
        np.add.at(score, (rows, cls), np.where(neg == 1, -1.0, 1.0))
    else:
        np.add.at(score, (rows, cls), 1.0)
    voted = np.unique(rows)
    if binary:
        yes = score[voted, y[voted]] > 0
        model_right = (probs[voted].argmax(1) == y[voted]) == yes
        consensus = y[voted]
    else:
        tied = score[voted] == score[voted].max(1, keepdims=True)
        consensus = np.where(tied, probs[voted], -1).argmax(1)
        model_right = probs[voted].argmax(1) == consensus
    prior_error = max(1.0 - np.bincount(consensus, minlength=k).max() / len(voted), 1e-3)
    agree = _agreement(v).to_numpy()
    has = ~np.isnan(agree)
    mean_agree = float(agree[has].mean()) if has.any() else 1.0 - prior_error
    per_worker = np.full(len(workers), mean_agree)
    if has.any():
        sums = np.bincount(worker_idx[has], weights=agree[has], minlength=len(workers))
        counts = np.bincount(worker_idx[has], minlength=len(workers))
        per_worker = np.where(counts > 0, sums / np.maximum(counts, 1), mean_agree)
    annotator_weight = np.maximum(1 - (1 - per_worker) / prior_error, _MIN_WEIGHT)
    model_accuracy = float(model_right.mean())
    votes_per = np.bincount(rows, minlength=len(frame))[voted]
    model_weight = max(1 - (1 - model_accuracy) / prior_error, _MIN_WEIGHT) * float(np.sqrt(votes_per.mean()))
    grouped: list[np.ndarray] = [np.zeros((0, 3), np.int64)] * len(frame)
    triples = np.stack([cls, worker_idx, neg], 1).astype(np.int64)
    order = np.argsort(rows, kind="stable")
    bounds = np.searchsorted(rows[order], voted)
    ends = np.append(bounds[1:], len(order))
    for r, b, e in zip(voted, bounds, ends):
        grouped[r] = triples[order[b:e]]
    post = crowd_posterior(probs, grouped, model_weight, annotator_weight, mean_agree)
    return post, {"n_voted": int(len(voted)), "n_votes": int(len(v)), "kind": "yes/no" if binary else "class",
                  "model_weight": float(model_weight), "model_accuracy": model_accuracy,
                  "mean_annotator_weight": float(annotator_weight.mean()), "vote_accuracy": mean_agree,
                  "n_workers": int(len(workers)), "ignored_votes": ignored}
