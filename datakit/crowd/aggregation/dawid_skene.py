"""Dawid-Skene: EM over one confusion matrix per worker (Dawid & Skene, 1979)."""
from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from datakit.crowd.aggregation._base import argmax_labels, check_data, check_fitted, check_gold, encode

__all__ = ["DawidSkene"]

log = logging.getLogger(__name__)


class DawidSkene:
    """Dawid-Skene label aggregation, with gold answers clamped.

    Model: each task has a true label ``k`` drawn from ``priors``; worker
    ``w`` answers ``l`` with probability ``errors[w, k, l]``. EM starts from
    the majority-vote shares, then alternates

    * M-step: ``priors[k] = mean_t P(t = k)``;
      ``errors[w, k, l] ∝ smoothing + sum_{t: w said l on t} P(t = k)``
      (each row normalised over ``l``; an empty row is uniform);
    * E-step: ``P(t = k) ∝ priors[k] * prod_{w voted on t} errors[w, k, l_wt]``,

    for ``n_iter`` rounds or until no probability moves by more than ``tol``.
    Tasks in ``gold`` are fixed to their known label at every step.

    Parameters
    ----------
    n_iter : int
        Maximum number of EM rounds (one M-step and one E-step each).
    tol : float
        Stop when the largest change of any task probability is below this.
    smoothing : float
        Pseudo-count added to every confusion-matrix cell (0 = plain ML, as
        in crowd-kit).

    Attributes
    ----------
    labels_ : Series
        Most probable label per task (ties: the smallest label in sort order).
    probas_ : DataFrame, shape (n_tasks, n_labels)
    priors_ : Series, shape (n_labels,)
    errors_ : DataFrame, shape (n_workers * n_labels, n_labels)
        Confusion matrices; index ``(worker, true label)``, columns observed label.
    skills_ : Series, shape (n_workers,)
        Estimated accuracy per worker, ``sum_k priors[k] * errors[w, k, k]``.
    loglik_ : float
        Log-likelihood of the votes at the end.
    n_iter_ : int
        EM rounds run.

    Examples
    --------
    >>> votes = pd.DataFrame({"task": list("aabbcc"), "worker": ["u", "v"] * 3,
    ...                       "label": ["yes", "yes", "no", "no", "yes", "no"]})
    >>> DawidSkene(n_iter=10).fit_predict(votes).to_dict()
    {'a': 'yes', 'b': 'no', 'c': 'no'}
    """

    def __init__(self, *, n_iter: int = 100, tol: float = 1e-6, smoothing: float = 0.0) -> None:
        self.n_iter = n_iter
        self.tol = tol
        self.smoothing = smoothing
        self.labels_ = None

    # -- hooks the one-coin variant overrides -------------------------------------------
    def _m_errors(self, probas: np.ndarray, w: np.ndarray, t: np.ndarray, lab: np.ndarray,
                  n_workers: int, n_labels: int, votes) -> np.ndarray:
        # counts[w, k, l] = smoothing + sum of P(t = k) over the votes (t, w, l), as one sparse product
        summed = np.asarray(votes.T @ probas).reshape(n_workers, n_labels, n_labels)  # [w, l, k]
        counts = summed.transpose(0, 2, 1) + float(self.smoothing)
        totals = counts.sum(axis=2, keepdims=True)
        uniform = np.full_like(counts, 1.0 / n_labels)
        return np.where(totals > 0, counts / np.where(totals > 0, totals, 1.0), uniform)

    # -----------------------------------------------------------------------------------
    def _check_params(self) -> None:
        if not isinstance(self.n_iter, (int, np.integer)) or self.n_iter < 1:
            raise ValueError(f"n_iter must be a positive integer, got {self.n_iter!r}")
        if not self.tol >= 0:
            raise ValueError(f"tol must be >= 0, got {self.tol!r}")
        if not self.smoothing >= 0:
            raise ValueError(f"smoothing must be >= 0, got {self.smoothing!r}")

    @staticmethod
    def _votes_matrix(w, t, lab, n_workers, n_labels, n_tasks):
        """Sparse (n_tasks, n_workers * n_labels) matrix with a 1 for each vote (task t, worker w, label l)."""
        from scipy import sparse

        return sparse.csr_matrix((np.ones(len(t)), (t, w * n_labels + lab)), shape=(n_tasks, n_workers * n_labels))

    def _e_step(self, priors, errors, votes):
        n_workers, n_labels = errors.shape[0], errors.shape[1]
        # log(0) is taken as log(1e-300): an impossible vote weighs about -690 instead of -inf
        log_errors = np.log(np.maximum(errors, 1e-300))  # [w, k, l]
        by_vote = log_errors.transpose(0, 2, 1).reshape(n_workers * n_labels, n_labels)  # row w*K + l -> [k]
        with np.errstate(divide="ignore"):
            logp = np.log(priors)[None, :] + np.asarray(votes @ by_vote)
        top = logp.max(axis=1, keepdims=True)
        dead = ~np.isfinite(top[:, 0])
        top[dead] = 0.0
        p = np.exp(logp - top)
        total = p.sum(axis=1, keepdims=True)
        p = np.where(total > 0, p / np.where(total > 0, total, 1.0), priors[None, :])
        loglik = float(np.sum((np.log(total[~dead, 0]) + top[~dead, 0])))
        return p, loglik

    def fit(self, data: pd.DataFrame, gold: pd.Series | None = None) -> "DawidSkene":
        """Run EM on the votes.

        Parameters
        ----------
        data : DataFrame
            Columns ``task, worker, label`` (one vote per row; a worker's repeat
            votes on a task count once, the earliest).
        gold : Series, optional
            Known labels indexed by task; clamped throughout.
        """
        self._check_params()
        data = check_data(data)
        tasks, workers, labels, t, w, lab = encode(data)
        n_t, n_w, n_k = len(tasks), len(workers), len(labels)
        gold = check_gold(gold, list(labels))
        gold = gold[gold.index.isin(tasks)]
        g_rows = pd.Index(tasks).get_indexer(gold.index)
        g_cols = pd.Index(labels).get_indexer(gold.values)

        def clamp(p: np.ndarray) -> np.ndarray:
            if len(g_rows):
                p[g_rows] = 0.0
                p[g_rows, g_cols] = 1.0
            return p

        probas = np.zeros((n_t, n_k))
        np.add.at(probas, (t, lab), 1.0)
        probas = clamp(probas / probas.sum(axis=1, keepdims=True))
        votes = self._votes_matrix(w, t, lab, n_w, n_k, n_t)
        loglik = float("nan")
        n_done = 0
        for n_done in range(1, self.n_iter + 1):
            priors = probas.mean(axis=0)
            errors = self._m_errors(probas, w, t, lab, n_w, n_k, votes)
            new, loglik = self._e_step(priors, errors, votes)
            new = clamp(new)
            delta = float(np.abs(new - probas).max())
            probas = new
            if delta < self.tol:
                break
        log.debug("%s converged after %d rounds (loglik %.4f)", type(self).__name__, n_done, loglik)
        self.probas_ = pd.DataFrame(probas, index=pd.Index(tasks, name="task"), columns=pd.Index(labels, name="label"))
        self.priors_ = pd.Series(priors, index=pd.Index(labels, name="label"), name="prior")
        index = pd.MultiIndex.from_product([workers, labels], names=["worker", "true"])
        self.errors_ = pd.DataFrame(errors.reshape(n_w * n_k, n_k), index=index,
                                    columns=pd.Index(labels, name="observed"))
        diag = errors[:, np.arange(n_k), np.arange(n_k)]
        self.skills_ = pd.Series(diag @ priors, index=pd.Index(workers, name="worker"), name="skill")
        self.loglik_ = loglik
        self.n_iter_ = n_done
        self.labels_ = argmax_labels(self.probas_)
        return self

    def predict(self) -> pd.Series:
        check_fitted(self)
        return self.labels_

    def predict_proba(self) -> pd.DataFrame:
        check_fitted(self)
        return self.probas_

    def fit_predict(self, data: pd.DataFrame, gold: pd.Series | None = None) -> pd.Series:
        """Fit and return the most probable label per task (Series indexed by ``task``)."""
        return self.fit(data, gold).labels_

    def fit_predict_proba(self, data: pd.DataFrame, gold: pd.Series | None = None) -> pd.DataFrame:
        """Fit and return the posterior label probabilities (task x label)."""
        return self.fit(data, gold).probas_
