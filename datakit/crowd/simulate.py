"""A simulated crowd, for planning a labelling effort and for tests.

Honest workers answer correctly with their own accuracy (drawn per worker) and
otherwise pick a wrong answer -- following the configured class confusions when
there are any, uniformly otherwise; spammers answer uniformly at random;
adversaries answer wrongly on purpose. Everything is seeded.
"""
from __future__ import annotations

import time as _time
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from datakit.crowd.tasks import ANNOTATION_COLUMNS, conform_annotations, task_choices

__all__ = ["SimulatedCrowd", "WORKER_KINDS", "truth_for_tasks"]

WORKER_KINDS = ("honest", "spammer", "adversary")


class SimulatedCrowd:
    """A seeded pool of simulated workers.

    Parameters
    ----------
    n_workers : int
        Size of the pool.
    accuracy : float or (low, high)
        Honest workers' accuracy, fixed or drawn uniformly from the range.
    spammer_share, adversary_share : float
        Shares of the pool answering at random / wrongly on purpose
        (rounded to whole workers).
    confusions : mapping, optional
        ``{(true, answer): p}``: when an honest worker errs on ``true`` it
        answers ``answer`` with weight ``p`` (e.g. shirts taken for T-shirts);
        other wrong answers share what is left uniformly.
    seed : int

    Attributes
    ----------
    workers_ : DataFrame
        ``worker, kind, accuracy`` per simulated worker.

    Examples
    --------
    >>> crowd = SimulatedCrowd(n_workers=5, accuracy=1.0, seed=0)
    >>> votes = crowd.annotate(pd.Series({"a": "yes", "b": "no"}), ["yes", "no"], votes_per_item=3)
    >>> sorted(set(zip(votes["task"], votes["label"])))
    [('a', 'yes'), ('b', 'no')]
    """

    def __init__(self, *, n_workers: int = 30, accuracy: float | tuple[float, float] = (0.7, 0.95),
                 spammer_share: float = 0.0, adversary_share: float = 0.0,
                 confusions: Mapping[tuple[str, str], float] | None = None, seed: int = 0) -> None:
        if not isinstance(n_workers, (int, np.integer)) or n_workers < 1:
            raise ValueError(f"n_workers must be a positive integer, got {n_workers!r}")
        lo, hi = (accuracy, accuracy) if np.isscalar(accuracy) else tuple(accuracy)
        if not 0 <= lo <= hi <= 1:
            raise ValueError(f"accuracy must be a probability or a (low, high) range in [0, 1], got {accuracy!r}")
        for name, share in (("spammer_share", spammer_share), ("adversary_share", adversary_share)):
            if not 0 <= share <= 1:
                raise ValueError(f"{name} must be in [0, 1], got {share!r}")
        if spammer_share + adversary_share > 1:
            raise ValueError(f"spammer_share + adversary_share must be <= 1, got {spammer_share + adversary_share}")
        self.n_workers = int(n_workers)
        self.confusions = {(str(a), str(b)): float(p) for (a, b), p in (confusions or {}).items()}
        self.rng = np.random.default_rng(seed)
        n_spam = int(round(spammer_share * n_workers))
        n_adv = int(round(adversary_share * n_workers))
        kinds = ["spammer"] * n_spam + ["adversary"] * n_adv + ["honest"] * (n_workers - n_spam - n_adv)
        kinds = list(np.asarray(kinds, dtype=object)[self.rng.permutation(n_workers)])
        acc = self.rng.uniform(lo, hi, n_workers)
        width = len(str(n_workers - 1))
        self.workers_ = pd.DataFrame({"worker": [f"sim{i:0{width}d}" for i in range(n_workers)], "kind": kinds,
                                      "accuracy": acc})
        self._kind = dict(zip(self.workers_["worker"], kinds))
        self._acc = dict(zip(self.workers_["worker"], acc))

    def vote(self, worker: str, truth: str, choices: Sequence[str]) -> str:
        """One answer of ``worker`` to an item whose true answer is ``truth``."""
        choices = [str(c) for c in choices]
        truth = str(truth)
        kind = self._kind[worker]
        wrong = [c for c in choices if c != truth]
        if kind == "spammer":
            return choices[self.rng.integers(len(choices))]
        if kind == "adversary":
            return wrong[self.rng.integers(len(wrong))] if wrong else truth
        if self.rng.random() < self._acc[worker] or not wrong:
            return truth
        weights = np.array([self.confusions.get((truth, c), 0.0) for c in wrong])
        rest = max(0.0, 1.0 - weights.sum())
        weights = weights + rest / len(wrong)
        return wrong[self.rng.choice(len(wrong), p=weights / weights.sum())]

    def pick_workers(self, k: int, exclude: set[str] = frozenset()) -> list[str]:
        """``k`` distinct workers at random (fewer if the pool runs out), none from ``exclude``."""
        pool = [w for w in self.workers_["worker"] if w not in exclude]
        k = min(k, len(pool))
        return [pool[i] for i in self.rng.choice(len(pool), size=k, replace=False)] if k else []

    def annotate(self, truth: pd.Series, choices: Sequence[str], *, votes_per_item: int = 5) -> pd.DataFrame:
        """Votes for every item of ``truth`` (Series item -> true answer), each from distinct workers.

        Returns
        -------
        DataFrame with :data:`~datakit.crowd.tasks.ANNOTATION_COLUMNS`, ``batch="simulated"``.
        """
        if votes_per_item < 1:
            raise ValueError(f"votes_per_item must be >= 1, got {votes_per_item!r}")
        rows = []
        now = _time.time()
        for item, true in truth.items():
            for worker in self.pick_workers(votes_per_item):
                rows.append((str(item), worker, self.vote(worker, true, choices), now, "simulated", None, None))
        return conform_annotations(pd.DataFrame(rows, columns=ANNOTATION_COLUMNS))

    def answer_tasks(self, tasks: pd.DataFrame, truth: pd.Series, *, assignments: int = 3) -> pd.DataFrame:
        """Each task (grid) answered whole by ``assignments`` distinct workers, as on a crowd platform.

        Parameters
        ----------
        tasks : DataFrame
            :data:`~datakit.crowd.tasks.TASK_COLUMNS` rows.
        truth : Series
            True answer per item (``"yes"``/``"no"`` for binary tasks, a class id
            for multiclass); gold items use their ``gold`` value when missing here.
        """
        rows = []
        now = _time.time()
        for task, grid in tasks.groupby("task", sort=True):
            kind, question = grid["kind"].iloc[0], grid["question"].iloc[0]
            choices = task_choices(kind, question)
            for a, worker in enumerate(self.pick_workers(assignments)):
                for item, gold in zip(grid["item"], grid["gold"]):
                    true = truth.get(item, gold)
                    if true is None or (isinstance(true, float) and np.isnan(true)):
                        raise ValueError(f"no true answer for item {item!r} of task {task!r}")
                    rows.append((str(item), worker, self.vote(worker, true, choices), now, "simulated",
                                 task, f"{task}/{a}"))
        return conform_annotations(pd.DataFrame(rows, columns=ANNOTATION_COLUMNS))


def truth_for_tasks(tasks: pd.DataFrame, true_class: pd.Series) -> pd.Series:
    """True answers of task items from their true classes.

    Parameters
    ----------
    tasks : DataFrame
        :data:`~datakit.crowd.tasks.TASK_COLUMNS`.
    true_class : Series
        True class id per item id (an item keyed ``<synset>:<id>`` is looked up by ``id``).

    Returns
    -------
    Series item -> answer: for binary tasks ``"yes"`` when the item's true class
    is the task's question, else ``"no"``; for multiclass tasks the class.
    Items without a known class are left out.
    """
    true_class = true_class.astype(str)
    true_class.index = true_class.index.astype(str)
    out = {}
    for item, kind, question in zip(tasks["item"].astype(str), tasks["kind"], tasks["question"]):
        key = item if item in true_class.index else item.rpartition(":")[2]
        if key not in true_class.index:
            continue
        c = true_class[key]
        out[item] = ("yes" if c == str(question) else "no") if kind == "binary" else c
    return pd.Series(out, name="truth", dtype=object)
