"""Majority vote."""
from __future__ import annotations

import numpy as np
import pandas as pd

from datakit.crowd.aggregation._base import argmax_labels, check_data, check_fitted, check_gold

__all__ = ["MajorityVote"]


class MajorityVote:
    """The most frequent label of each task, optionally weighted by worker skill.

    Tie rule (deterministic): among the labels with the most (weighted) votes,
    the smallest in string sort order wins (``"no"`` before ``"yes"``, ``"3"``
    before ``"7"``).

    Parameters
    ----------
    skills : Series, optional
        Weight of each worker's vote, indexed by worker (default 1 for everyone).

    Attributes
    ----------
    labels_ : Series
        Aggregated label per task (index ``task``).
    probas_ : DataFrame, shape (n_tasks, n_labels)
        Share of the (weighted) votes for each label.
    skills_ : Series
        Per worker, the share of their votes that agree with ``labels_``.

    Examples
    --------
    >>> votes = pd.DataFrame({"task": ["t", "t"], "worker": ["a", "b"], "label": ["yes", "no"]})
    >>> MajorityVote().fit_predict(votes)["t"]  # a tie: the smallest label wins
    'no'
    """

    def __init__(self, *, skills: pd.Series | None = None) -> None:
        self.skills = skills
        self.labels_ = None
        self.probas_ = None
        self.skills_ = None

    def fit(self, data: pd.DataFrame, gold: pd.Series | None = None) -> "MajorityVote":
        """Count votes. ``gold`` (Series task -> label) overrides the vote where given."""
        data = check_data(data)
        weights = np.ones(len(data))
        if self.skills is not None:
            if not isinstance(self.skills, pd.Series):
                raise TypeError(f"skills must be a Series indexed by worker, got {type(self.skills).__name__}")
            weights = data["worker"].map(self.skills.rename(index=str)).fillna(0.0).to_numpy(float)
        table = (data.assign(weight=weights).pivot_table(index="task", columns="label", values="weight",
                                                          aggfunc="sum", fill_value=0.0))
        table = table.reindex(sorted(table.columns), axis=1)
        totals = table.sum(axis=1).replace(0.0, 1.0)
        probas = table.div(totals, axis=0)
        gold = check_gold(gold, list(probas.columns))
        for task, label in gold.items():
            if task in probas.index:
                probas.loc[task] = 0.0
                probas.loc[task, label] = 1.0
        probas.index.name, probas.columns.name = "task", "label"
        self.probas_ = probas
        self.labels_ = argmax_labels(probas)
        agree = data["label"].to_numpy() == data["task"].map(self.labels_).to_numpy()
        self.skills_ = pd.Series(agree, index=data["worker"]).groupby(level=0).mean().rename("skill")
        return self

    def predict(self) -> pd.Series:
        check_fitted(self)
        return self.labels_

    def fit_predict(self, data: pd.DataFrame, gold: pd.Series | None = None) -> pd.Series:
        """Fit and return the label per task (Series indexed by ``task``)."""
        return self.fit(data, gold).labels_

    def fit_predict_proba(self, data: pd.DataFrame, gold: pd.Series | None = None) -> pd.DataFrame:
        """Fit and return vote shares, DataFrame (task x label)."""
        return self.fit(data, gold).probas_
