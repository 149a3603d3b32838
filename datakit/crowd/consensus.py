"""ImageNet's adaptive consensus (Deng et al., 2009).

Per class (synset): a random subset of its candidates gets at least
``initial_votes`` yes/no votes each; their majority answer is taken as the
truth, and from it a confidence model is fitted -- the class prior
``pi = P(positive)``, and the crowd's sensitivity ``se = P(yes | positive)`` and
specificity ``sp = P(no | negative)`` -- which gives the confidence table::

    P(positive | y yes, n no) = pi se^y (1-se)^n / (pi se^y (1-se)^n + (1-pi) (1-sp)^y sp^n)

(``se`` and ``sp`` are Laplace-smoothed). Every other candidate then gets one
vote at a time until ``P(positive) >= threshold`` (accepted) or
``P(negative) >= threshold`` (rejected), or ``max_votes`` is reached
(undecided). Hard classes (workers disagree more) need more votes; easy ones
fewer -- ImageNet's point.

Three vote sources share one interface, ``ask(item) -> label or None``:
a :class:`SimulatedOracle`; :func:`plan_votes` instead reads votes that were
already collected (imported batches or the annotation app's database) and
says which images need how many more votes.
"""
from __future__ import annotations

import logging
import math
from typing import Callable, Protocol

import numpy as np
import pandas as pd

from datakit.crowd.aggregation._base import check_fitted
from datakit.crowd.tasks import NO, YES

__all__ = ["ConfidenceModel", "AdaptiveConsensus", "SimulatedOracle", "VoteOracle", "plan_votes",
           "CONSENSUS_COLUMNS"]

log = logging.getLogger(__name__)

#: Columns of a consensus result, one row per item.
CONSENSUS_COLUMNS = ["item", "question", "phase", "yes", "no", "votes", "selection_frequency",
                     "p_positive", "p_correct", "decision"]


class VoteOracle(Protocol):
    def ask(self, item: str) -> str | None:
        """One more ``"yes"``/``"no"`` vote on ``item``, or None when no worker is left."""


class ConfidenceModel:
    """The confidence table of one class: ``P(positive | yes votes, no votes)``.

    Parameters
    ----------
    smoothing : float
        Laplace pseudo-count for ``pi``, ``se`` and ``sp``.

    Attributes
    ----------
    prior_, sensitivity_, specificity_ : float
    n_items_ : int
        Subset size the model was fitted on.
    """

    def __init__(self, *, smoothing: float = 1.0) -> None:
        self.smoothing = smoothing
        self.prior_ = None

    def fit(self, yes: np.ndarray, no: np.ndarray) -> "ConfidenceModel":
        """Fit from the subset's vote counts, arrays of shape (n_items,).

        Each item's truth is its majority answer (ties: not positive).
        """
        yes, no = np.asarray(yes, float), np.asarray(no, float)
        if yes.shape != no.shape or yes.ndim != 1 or len(yes) == 0:
            raise ValueError(f"yes and no must be non-empty 1-d arrays of one length, got {yes.shape} and {no.shape}")
        a = float(self.smoothing)
        pos = yes > no
        self.prior_ = (pos.sum() + a) / (len(pos) + 2 * a)
        self.sensitivity_ = (yes[pos].sum() + a) / ((yes + no)[pos].sum() + 2 * a)
        self.specificity_ = (no[~pos].sum() + a) / ((yes + no)[~pos].sum() + 2 * a)
        self.n_items_ = len(pos)
        return self

    def p_positive(self, yes, no) -> np.ndarray:
        """``P(positive | yes, no)`` for arrays (or scalars) of vote counts."""
        check_fitted(self, "prior_")
        yes, no = np.asarray(yes, float), np.asarray(no, float)
        lp = math.log(self.prior_) + yes * math.log(self.sensitivity_) + no * math.log1p(-self.sensitivity_)
        ln = math.log1p(-self.prior_) + yes * math.log1p(-self.specificity_) + no * math.log(self.specificity_)
        return 1.0 / (1.0 + np.exp(ln - lp))

    def table(self, max_votes: int = 10) -> pd.DataFrame:
        """The confidence table: rows = yes votes, columns = no votes, cells ``P(positive)``."""
        y, n = np.meshgrid(np.arange(max_votes + 1), np.arange(max_votes + 1), indexing="ij")
        t = pd.DataFrame(self.p_positive(y, n), index=pd.Index(range(max_votes + 1), name="yes"),
                         columns=pd.Index(range(max_votes + 1), name="no"))
        return t.where(y + n <= max_votes)


class SimulatedOracle:
    """Votes from a :class:`~datakit.crowd.simulate.SimulatedCrowd`, each item asked of distinct workers.

    Parameters
    ----------
    crowd : SimulatedCrowd
    truth : Series
        ``"yes"``/``"no"`` per item.

    Attributes
    ----------
    log_ : list of (item, worker, label)
        Every vote handed out, in order.
    """

    def __init__(self, crowd, truth: pd.Series) -> None:
        self.crowd = crowd
        self.truth = truth
        self._asked: dict[str, set[str]] = {}
        self.log_: list[tuple[str, str, str]] = []

    def ask(self, item: str) -> str | None:
        seen = self._asked.setdefault(item, set())
        picked = self.crowd.pick_workers(1, exclude=seen)
        if not picked:
            return None
        worker = picked[0]
        seen.add(worker)
        label = self.crowd.vote(worker, self.truth[item], [YES, NO])
        self.log_.append((item, worker, label))
        return label

    def annotations(self) -> pd.DataFrame:
        """The votes handed out, as the long ``task, worker, label`` table."""
        return pd.DataFrame(self.log_, columns=["task", "worker", "label"])


def _subset_size(subset: float | int, n: int, min_subset: int = 1) -> int:
    if isinstance(subset, (int, np.integer)) and not isinstance(subset, bool):
        return min(max(int(subset), min_subset), n)
    return min(n, max(1, min_subset, int(math.ceil(float(subset) * n))))


class AdaptiveConsensus:
    """ImageNet's adaptive consensus over yes/no votes, one model per class.

    Parameters
    ----------
    threshold : float
        Confidence to reach before an image is accepted (or rejected).
    initial_votes : int
        Votes per image of the random subset the confidence table is fitted on.
    subset : float or int
        Share (float in (0, 1]) or number (int) of each class's images in the subset.
    min_subset : int
        The subset has at least this many images (or the whole class when smaller):
        a table fitted on a handful of images is unreliable.
    min_votes, max_votes : int
        Votes every other image gets first / at most.
    seed : int

    Attributes
    ----------
    models_ : dict of str -> ConfidenceModel
    results_ : DataFrame
        :data:`CONSENSUS_COLUMNS`, one row per item.
    """

    def __init__(self, *, threshold: float = 0.95, initial_votes: int = 10, subset: float | int = 0.1,
                 min_subset: int = 20, min_votes: int = 1, max_votes: int = 10, seed: int = 0) -> None:
        self.threshold = threshold
        self.initial_votes = initial_votes
        self.subset = subset
        self.min_subset = min_subset
        self.min_votes = min_votes
        self.max_votes = max_votes
        self.seed = seed
        self.results_ = None

    def _check(self) -> None:
        if not 0.5 < self.threshold < 1:
            raise ValueError(f"threshold must be in (0.5, 1), got {self.threshold!r}")
        if not 1 <= self.min_votes <= self.max_votes:
            raise ValueError(f"need 1 <= min_votes <= max_votes, got min_votes={self.min_votes!r}, "
                             f"max_votes={self.max_votes!r}")
        if self.initial_votes < 1:
            raise ValueError(f"initial_votes must be >= 1, got {self.initial_votes!r}")
        if isinstance(self.subset, float) and not 0 < self.subset <= 1:
            raise ValueError(f"subset as a share must be in (0, 1], got {self.subset!r}")
        if isinstance(self.subset, int) and self.subset < 1:
            raise ValueError(f"subset as a count must be >= 1, got {self.subset!r}")
        if not isinstance(self.min_subset, (int, np.integer)) or self.min_subset < 1:
            raise ValueError(f"min_subset must be a positive integer, got {self.min_subset!r}")

    def _decide(self, p: float) -> str | None:
        if p >= self.threshold:
            return "accepted"
        if 1.0 - p >= self.threshold:
            return "rejected"
        return None

    def run(self, items: pd.DataFrame, oracle: VoteOracle,
            progress: Callable[[int], None] | None = None) -> pd.DataFrame:
        """Collect votes from ``oracle`` until every item is decided or capped.

        Parameters
        ----------
        items : DataFrame
            ``item`` (id) and ``question`` (the class the item is a candidate for).
        oracle : object with ``ask(item) -> "yes" | "no" | None``
        progress : callable, optional
            Called with ``n`` after every ``n`` items are decided (e.g. a progress bar).

        Returns
        -------
        DataFrame with :data:`CONSENSUS_COLUMNS`.
        """
        self._check()
        for col in ("item", "question"):
            if col not in items.columns:
                raise ValueError(f"items need columns item, question; missing {col!r}")
        rng = np.random.default_rng(self.seed)
        self.models_ = {}
        rows = []
        for question, group in items.groupby("question", sort=True):
            ids = group["item"].astype(str).to_numpy()
            order = rng.permutation(len(ids))
            k = _subset_size(self.subset, len(ids), self.min_subset)
            counts: dict[str, list[int]] = {}

            def poll(item: str, target: int) -> None:
                c = counts.setdefault(item, [0, 0])
                while c[0] + c[1] < target:
                    vote = oracle.ask(item)
                    if vote is None:
                        break
                    c[0 if vote == YES else 1] += 1

            subset_ids = ids[order[:k]]
            for item in subset_ids:
                poll(item, self.initial_votes)
            model = ConfidenceModel().fit([counts[i][0] for i in subset_ids], [counts[i][1] for i in subset_ids])
            self.models_[str(question)] = model
            phase = {i: "subset" for i in subset_ids}
            for item in ids[order[k:]]:
                phase[item] = "adaptive"
                poll(item, self.min_votes)
                while True:
                    c = counts[item]
                    if self._decide(float(model.p_positive(c[0], c[1]))) or c[0] + c[1] >= self.max_votes:
                        break
                    before = c[0] + c[1]
                    poll(item, before + 1)
                    if counts[item][0] + counts[item][1] == before:  # oracle ran dry
                        break
            for item in ids:
                y, n = counts[item]
                rows.append(self._row(item, question, phase[item], y, n, model))
            if progress is not None:
                progress(len(ids))
        self.results_ = pd.DataFrame(rows, columns=CONSENSUS_COLUMNS)
        return self.results_

    def _row(self, item, question, phase, y, n, model) -> tuple:
        p = float(model.p_positive(y, n))
        decision = self._decide(p) or "undecided"
        freq = y / (y + n) if y + n else float("nan")
        return (item, str(question), phase, int(y), int(n), int(y + n), freq, p, max(p, 1 - p), decision)


def plan_votes(votes: pd.DataFrame, items: pd.DataFrame, *, threshold: float = 0.95, initial_votes: int = 10,
               max_votes: int = 10, subset: float | int = 0.1, min_subset: int = 20, seed: int = 0) -> pd.DataFrame:
    """Adaptive consensus over votes already collected: who is decided, who needs how many more votes.

    Per class, the items that already have ``initial_votes`` votes form the
    subset the confidence table is fitted on; when there are none yet, a random
    ``subset`` of the class is chosen and asked for ``initial_votes`` each.

    Parameters
    ----------
    votes : DataFrame
        ``task, worker, label`` with ``task`` = item and labels ``"yes"``/``"no"``
        (a worker's repeat votes count once).
    items : DataFrame
        ``item, question``.

    Returns
    -------
    DataFrame with :data:`CONSENSUS_COLUMNS` plus ``more_votes``: the fewest
    further votes that could settle the item (all agreeing with the current
    leaning), 0 when decided or capped; subset items still short of
    ``initial_votes`` need the difference. Classes without a fitted table yet
    have NaN confidences.
    """
    from datakit.crowd.tasks import dedupe_votes

    consensus = AdaptiveConsensus(threshold=threshold, initial_votes=initial_votes, max_votes=max_votes,
                                  subset=subset, min_subset=min_subset, seed=seed)
    consensus._check()
    bad = sorted(set(votes["label"].astype(str)) - {YES, NO})
    if bad:
        raise ValueError(f"consensus needs yes/no votes; found labels {bad[:5]}")
    v = dedupe_votes(votes.assign(task=votes["task"].astype(str), label=votes["label"].astype(str)))
    counts = v.groupby("task")["label"].agg(yes=lambda s: int((s == YES).sum()), no=lambda s: int((s == NO).sum()))
    rng = np.random.default_rng(seed)
    rows = []
    for question, group in items.groupby("question", sort=True):
        ids = group["item"].astype(str).to_numpy()
        y = counts["yes"].reindex(ids).fillna(0).astype(int).to_numpy()
        n = counts["no"].reindex(ids).fillna(0).astype(int).to_numpy()
        full = (y + n) >= initial_votes
        target = _subset_size(subset, len(ids), min_subset)
        in_subset = full.copy()
        model = None
        if full.sum() >= target:
            model = ConfidenceModel().fit(y[full], n[full])
        else:  # the subset is not complete yet: top it up at random and wait for it
            rest = np.flatnonzero(~full)
            in_subset[rest[rng.permutation(len(rest))[: target - int(full.sum())]]] = True
        for i, item in enumerate(ids):
            total = y[i] + n[i]
            phase = "subset" if in_subset[i] else "adaptive"
            freq = y[i] / total if total else float("nan")
            if model is None:
                need = max(initial_votes - total, 0) if in_subset[i] else 0
                rows.append((item, str(question), phase, y[i], n[i], total, freq, np.nan, np.nan,
                             "needs_votes" if need else "waiting", need))
                continue
            p = float(model.p_positive(y[i], n[i]))
            decision = consensus._decide(p) or ("undecided" if total >= max_votes else "needs_votes")
            need = 0
            if decision == "needs_votes":
                lean_yes = p >= 0.5
                for extra in range(1, max_votes - total + 1):
                    q = float(model.p_positive(y[i] + extra * lean_yes, n[i] + extra * (not lean_yes)))
                    if consensus._decide(q):
                        need = extra
                        break
                else:
                    need = max_votes - total
            if in_subset[i] and total < initial_votes:
                need = max(need, initial_votes - total)
                decision = "needs_votes"
            rows.append((item, str(question), phase, y[i], n[i], total, freq, p, max(p, 1 - p), decision, need))
    return pd.DataFrame(rows, columns=CONSENSUS_COLUMNS + ["more_votes"])
