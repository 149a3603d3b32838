"""Private helpers: confident learning (Northcutt, Jiang & Chuang, JAIR 2021), written from the paper.

Given each example's noisy (given) label and out-of-sample predicted
probabilities, confident learning estimates the joint distribution of given
and true labels and flags the examples most likely mislabeled:

1. per-class thresholds ``t_j`` = mean predicted probability of class ``j``
   over the examples labelled ``j`` (:func:`per_class_thresholds`);
2. the confident joint ``C[i, j]``: examples with given label ``i`` whose
   probability of some class reaches that class's threshold, counted under the
   confident class with the largest probability ``j`` (:func:`confident_joint`);
3. calibrated so each row sums to the number of examples with that given label
   (:func:`calibrate_joint`), normalised to the joint ``Q[given, true]``;
4. label issues: for each given class ``i`` and true class ``j != i``, the
   ``C[i, j]`` examples labelled ``i`` with the largest margin
   ``p_j - p_i`` ("prune by noise rate"), or the off-diagonal examples of the
   confident joint itself (:func:`find_label_issues`).

Only numpy; no code from cleanlab (AGPL-3.0), whose defaults are followed where
the paper leaves a choice (an epsilon of 1e-6 under the thresholds, at least one
example kept on each diagonal entry, rounding that preserves row totals, and not
flagging an example whose predicted class is its given class).
"""
from __future__ import annotations

import numpy as np

__all__ = ["per_class_thresholds", "confident_joint", "calibrate_joint", "estimate_joint", "noise_matrix",
           "per_class_noise", "find_label_issues", "round_preserving_row_totals", "METHODS"]

#: valid values of ``find_label_issues(method=...)``
METHODS = ("prune_by_noise_rate", "confident_joint", "both")

_EPS = 1e-6


def _check(labels: np.ndarray, pred_probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    labels = np.asarray(labels)
    pred_probs = np.asarray(pred_probs, dtype=np.float64)
    if pred_probs.ndim != 2:
        raise ValueError(f"pred_probs must have shape (N, K), got {pred_probs.shape}")
    if labels.shape != (len(pred_probs),):
        raise ValueError(f"labels must have shape ({len(pred_probs)},) to match pred_probs, got {labels.shape}")
    if len(labels) and (labels.min() < 0 or labels.max() >= pred_probs.shape[1]):
        raise ValueError(f"labels must be class indices in [0, {pred_probs.shape[1]}), "
                         f"got values from {labels.min()} to {labels.max()}")
    return labels.astype(np.int64), pred_probs


def per_class_thresholds(labels: np.ndarray, pred_probs: np.ndarray) -> np.ndarray:
    """Per-class thresholds ``t_j`` = mean of ``pred_probs[:, j]`` over examples labelled ``j``.

    Parameters
    ----------
    labels : ndarray, shape (N,), int in [0, K)
    pred_probs : ndarray, shape (N, K)

    Returns
    -------
    ndarray, shape (K,); ``inf`` for a class no example is labelled with (never confident).

    Examples
    --------
    >>> per_class_thresholds(np.array([0, 0, 1]), np.array([[.8, .2], [.6, .4], [.3, .7]]))
    array([0.7, 0.7])
    """
    labels, pred_probs = _check(labels, pred_probs)
    k = pred_probs.shape[1]
    counts = np.bincount(labels, minlength=k)
    sums = np.zeros(k)
    np.add.at(sums, labels, pred_probs[np.arange(len(labels)), labels])
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, sums / np.maximum(counts, 1), np.inf)


def _confident_class(pred_probs: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """For each example, the confident class with the largest probability, or -1 when none is confident."""
    confident = pred_probs >= thresholds[None, :] - _EPS
    masked = np.where(confident, pred_probs, -np.inf)
    best = masked.argmax(1)
    return np.where(confident.any(1), best, -1)


def confident_joint(labels: np.ndarray, pred_probs: np.ndarray,
                    thresholds: np.ndarray | None = None) -> np.ndarray:
    """The confident joint ``C[given i, true j]`` (uncalibrated counts).

    An example with given label ``i`` is counted in ``C[i, j]`` where ``j`` is,
    among the classes whose probability reaches their threshold
    (``p_j >= t_j``), the one with the largest probability; examples with no
    confident class are not counted. Each diagonal entry is at least 1.

    Parameters
    ----------
    labels : ndarray, shape (N,), int in [0, K)
    pred_probs : ndarray, shape (N, K)
    thresholds : ndarray, shape (K,), optional
        Default :func:`per_class_thresholds`.

    Returns
    -------
    ndarray, shape (K, K), int64

    Examples
    --------
    >>> confident_joint(np.array([0, 0, 1]), np.array([[.8, .2], [.3, .7], [.3, .7]]))
    array([[1, 1],
           [0, 1]])
    """
    labels, pred_probs = _check(labels, pred_probs)
    k = pred_probs.shape[1]
    if thresholds is None:
        thresholds = per_class_thresholds(labels, pred_probs)
    true = _confident_class(pred_probs, np.asarray(thresholds, dtype=np.float64))
    keep = true >= 0
    cj = np.zeros((k, k), dtype=np.int64)
    np.add.at(cj, (labels[keep], true[keep]), 1)
    np.fill_diagonal(cj, np.maximum(np.diagonal(cj), 1))
    return cj


def round_preserving_row_totals(matrix: np.ndarray) -> np.ndarray:
    """Round each row to integers whose sum is the row's rounded total (largest remainders round up).

    Examples
    --------
    >>> round_preserving_row_totals(np.array([[0.4, 0.4, 0.2], [1.5, 1.5, 0.0]]))
    array([[1, 0, 0],
           [2, 1, 0]])
    """
    matrix = np.asarray(matrix, dtype=np.float64)
    floor = np.floor(matrix)
    out = floor.astype(np.int64)
    short = (np.round(matrix.sum(1)) - floor.sum(1)).astype(np.int64)
    rem = matrix - floor
    for i in range(len(matrix)):
        if short[i] > 0:
            order = np.argsort(-rem[i], kind="stable")[:short[i]]
            out[i, order] += 1
    return out


def calibrate_joint(cj: np.ndarray, labels: np.ndarray, num_classes: int | None = None) -> np.ndarray:
    """Calibrate the confident joint so row ``i`` sums to the number of examples labelled ``i``.

    Parameters
    ----------
    cj : ndarray, shape (K, K)
        :func:`confident_joint`.
    labels : ndarray, shape (N,), int
    num_classes : int, optional
        Default ``len(cj)``.

    Returns
    -------
    ndarray, shape (K, K), int64; rows sum to the label counts, the total to N.
    """
    k = num_classes or len(cj)
    counts = np.bincount(np.asarray(labels, np.int64), minlength=k).astype(np.float64)
    rows = np.maximum(cj.sum(1), 1e-12)
    cal = cj / rows[:, None] * counts[:, None]
    cal = cal / max(cal.sum(), 1e-12) * counts.sum()
    return round_preserving_row_totals(cal)


def estimate_joint(calibrated: np.ndarray) -> np.ndarray:
    """The estimated joint distribution ``Q[given, true]`` (sums to 1), shape (K, K)."""
    return calibrated / max(float(calibrated.sum()), 1e-12)


def noise_matrix(joint: np.ndarray) -> np.ndarray:
    """``P(given = i | true = j)``: the joint with each column normalised (columns sum to 1; 0 where empty)."""
    col = joint.sum(0, keepdims=True)
    return np.divide(joint, col, out=np.zeros_like(joint, dtype=np.float64), where=col > 0)


def per_class_noise(joint: np.ndarray) -> np.ndarray:
    """For each given class ``i``, ``P(true != i | given = i)``, shape (K,); 0 for empty rows."""
    row = joint.sum(1)
    diag = np.diagonal(joint)
    return np.divide(row - diag, row, out=np.zeros(len(row)), where=row > 0)


def _keep_one_per_class(prune: np.ndarray) -> np.ndarray:
    """Leave at least one example on each diagonal entry: take what was added from the row's noise counts."""
    prune = prune.astype(np.float64).copy()
    k = len(prune)
    for i in range(k):
        if prune[i, i] < 1:
            need = 1 - prune[i, i]
            off = [j for j in range(k) if j != i and prune[i, j] > 0]
            prune[i, i] = 1
            for j in off:
                prune[i, j] = max(0.0, prune[i, j] - need / len(off))
    return round_preserving_row_totals(prune)


def find_label_issues(labels: np.ndarray, pred_probs: np.ndarray, method: str = "prune_by_noise_rate",
                      calibrated: np.ndarray | None = None) -> np.ndarray:
    """Flag the examples confident learning finds mislabeled.

    Parameters
    ----------
    labels : ndarray, shape (N,), int in [0, K)
    pred_probs : ndarray, shape (N, K)
        Out-of-sample predicted probabilities.
    method : {"prune_by_noise_rate", "confident_joint", "both"}
        ``prune_by_noise_rate``: for each given class ``i`` and ``j != i``, the
        ``C[i, j]`` (calibrated) examples labelled ``i`` with the largest margin
        ``p_j - p_i``. ``confident_joint``: the examples counted off the
        diagonal of the confident joint. ``both``: flagged by both.
    calibrated : ndarray, shape (K, K), optional
        The calibrated confident joint (default: computed here).

    Returns
    -------
    ndarray, shape (N,), bool. An example whose predicted class (argmax) is its
    given label is never flagged.

    Raises
    ------
    ValueError
        Unknown method, or shapes that do not match.
    """
    if method not in METHODS:
        raise ValueError(f"Unknown method {method!r}. Valid values are {{{', '.join(METHODS)}}}.")
    labels, pred_probs = _check(labels, pred_probs)
    n, k = pred_probs.shape
    thresholds = per_class_thresholds(labels, pred_probs)
    flags = np.ones(n, dtype=bool)
    if method in ("prune_by_noise_rate", "both"):
        if calibrated is None:
            calibrated = calibrate_joint(confident_joint(labels, pred_probs, thresholds), labels, k)
        prune = _keep_one_per_class(calibrated)
        pruned = np.zeros(n, dtype=bool)
        for i in range(k):
            rows = np.flatnonzero(labels == i)
            if len(rows) == 0:
                continue
            for j in range(k):
                count = int(prune[i, j])
                if j == i or count <= 0:
                    continue
                margin = pred_probs[rows, j] - pred_probs[rows, i]
                top = rows[np.argsort(-margin, kind="stable")[:count]]
                pruned[top] = True
        flags &= pruned
    if method in ("confident_joint", "both"):
        true = _confident_class(pred_probs, thresholds)
        flags &= (true >= 0) & (true != labels)
    flags &= pred_probs.argmax(1) != labels
    return flags
