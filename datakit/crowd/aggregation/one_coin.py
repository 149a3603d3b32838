"""One-coin Dawid-Skene: one accuracy per worker instead of a confusion matrix."""
from __future__ import annotations

import numpy as np

from datakit.crowd.aggregation.dawid_skene import DawidSkene

__all__ = ["OneCoinDawidSkene"]


class OneCoinDawidSkene(DawidSkene):
    """Dawid-Skene where worker ``w`` is right with probability ``skill[w]`` and
    otherwise picks one of the other ``K - 1`` labels uniformly.

    M-step: ``skill[w] = (smoothing + sum_{votes of w} P(t = l_wt)) / (2 * smoothing + n_w)``;
    ``errors[w, k, k] = skill[w]``, ``errors[w, k, l != k] = (1 - skill[w]) / (K - 1)``.
    Fewer parameters than full Dawid-Skene: steadier with few votes per worker.
    Same parameters and attributes as :class:`~datakit.crowd.aggregation.DawidSkene`.
    """

    def _m_errors(self, probas, w, t, lab, n_workers, n_labels, votes):
        hits = np.zeros(n_workers)
        np.add.at(hits, w, probas[t, lab])
        n = np.bincount(w, minlength=n_workers).astype(float)
        skill = (self.smoothing + hits) / np.maximum(2 * self.smoothing + n, 1e-300)
        off = (1.0 - skill) / max(n_labels - 1, 1)
        errors = np.repeat(off[:, None, None], n_labels, axis=1).repeat(n_labels, axis=2)
        idx = np.arange(n_labels)
        errors[:, idx, idx] = skill[:, None]
        return errors
