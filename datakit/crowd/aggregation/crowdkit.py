"""crowd-kit's classification aggregators behind datakit's aggregator interface.

crowd-kit (Toloka, Apache-2.0) implements algorithms datakit does not:
GLAD, MACE, M-MSR, Wawa and Zero-Based Skill, and its own Dawid-Skene,
one-coin Dawid-Skene and majority vote. They take the same long
``task, worker, label`` table as datakit's own aggregators, so the wrappers
here only check the input, call crowd-kit, and return datakit's result shape
(``labels_`` a Series indexed by task; ``probas_`` a task x label DataFrame
with the labels sorted). crowd-kit is an optional extra
(``pip install 'datakit[crowdkit]'``) imported when a wrapper is fitted, so
registering these names costs nothing.

Names (``datakit crowd aggregate --method NAME``): an algorithm datakit lacks
keeps its plain name (``glad``, ``mace``, ``mmsr``, ``wawa``,
``zero_based_skill``); crowd-kit's version of one datakit also has is
prefixed (``crowdkit_dawid_skene``, ``crowdkit_one_coin``,
``crowdkit_majority_vote``).

Gold answers: crowd-kit's Dawid-Skene takes them (``true_labels``) and uses
them during EM; the other crowd-kit algorithms have no such input, so gold
tasks get their known label in the output only (worker estimates do not see
them).
"""
from __future__ import annotations

import importlib
import logging
import warnings
from typing import Any

import pandas as pd

from datakit.crowd.aggregation._base import argmax_labels, check_data, check_fitted, check_gold
from datakit.errors import DatakitError
from datakit.registry import Registry

__all__ = ["CROWDKIT_AGGREGATORS", "CrowdKitAggregator", "CrowdKitMissing", "crowdkit_available", "GLAD", "MACE",
           "MMSR", "Wawa", "ZeroBasedSkill", "CrowdKitDawidSkene", "CrowdKitOneCoin", "CrowdKitMajorityVote"]

logger = logging.getLogger(__name__)

#: name -> wrapper class (aggregators backed by crowd-kit, an optional extra)
CROWDKIT_AGGREGATORS: Registry[type] = Registry("aggregator")

INSTALL_HINT = "pip install 'datakit[crowdkit]'"


class CrowdKitMissing(DatakitError, ImportError):
    """crowd-kit is not installed; the message says how to install it."""


def crowdkit_available() -> bool:
    """Whether ``crowdkit`` can be imported."""
    try:
        importlib.import_module("crowdkit.aggregation")
    except ImportError:
        return False
    return True


def _crowdkit_class(name: str, method: str) -> type:
    try:
        module = importlib.import_module("crowdkit.aggregation")
    except ImportError as exc:
        raise CrowdKitMissing(f"Aggregation method {method!r} runs on crowd-kit, which is not installed "
                              f"({exc}). Install it with: {INSTALL_HINT}") from None
    return getattr(module, name)


class CrowdKitAggregator:
    """Base wrapper: a crowd-kit classification aggregator with datakit's interface.

    Parameters
    ----------
    **params
        Keyword arguments of the crowd-kit class (e.g. ``n_iter``); checked
        by crowd-kit when :meth:`fit` builds the model.

    Attributes
    ----------
    labels_ : Series
        Aggregated label per task (index ``task``).
    probas_ : DataFrame or None, shape (n_tasks, n_labels)
        Posterior label probabilities (columns sorted); None for methods that
        give none (M-MSR gives scores, in ``scores_``).
    skills_ : Series or None
        Per-worker skill, when the method estimates one (crowd-kit's scale).
    model_ : object
        The fitted crowd-kit estimator.
    """

    #: crowd-kit class name in ``crowdkit.aggregation``
    crowdkit_name: str = ""
    #: whether the crowd-kit class gives probabilities (``fit_predict_proba``)
    has_proba: bool = True
    #: whether the crowd-kit ``fit`` takes gold answers as ``true_labels``
    takes_gold: bool = False
    #: the crowd-kit class only learns ``skills_`` in ``fit`` and then takes a skill-weighted majority vote
    #: (Wawa, Zero-Based Skill); the vote is taken here with crowd-kit's MajorityVote, because crowd-kit
    #: 1.4.2's own ``predict`` calls scikit-learn's ``check_is_fitted``, which fails with scikit-learn >= 1.6
    #: (its classes define no ``__sklearn_tags__``)
    skills_then_vote: bool = False
    #: registry name (set by :func:`_register`)
    method: str = ""

    def __init__(self, **params: Any) -> None:
        self.params = params
        self.labels_ = None
        self.probas_ = None
        self.skills_ = None
        self.scores_ = None
        self.model_ = None

    def fit(self, data: pd.DataFrame, gold: pd.Series | None = None) -> "CrowdKitAggregator":
        """Fit crowd-kit's model on the votes.

        Parameters
        ----------
        data : DataFrame
            Columns ``task, worker, label`` (a worker's repeat votes on a task
            count once, the earliest, as for datakit's aggregators).
        gold : Series, optional
            Known labels indexed by task (see the module notes on how each
            method uses them).

        Raises
        ------
        CrowdKitMissing
            crowd-kit is not installed.
        DatakitError
            crowd-kit itself failed on the votes (the message names the method).
        ValueError, TypeError
            Malformed votes or gold labels.
        """
        data = check_data(data)
        labels = sorted(data["label"].unique())
        gold = check_gold(gold, labels)
        gold = gold[gold.index.isin(set(data["task"]))]
        cls = _crowdkit_class(self.crowdkit_name, self.method)
        try:
            model = cls(**self.params)
        except TypeError as exc:
            raise ValueError(f"{self.method}: bad parameters {self.params} for crowd-kit's {self.crowdkit_name} "
                             f"({exc})") from None
        kwargs = {"true_labels": gold} if self.takes_gold and len(gold) else {}
        with warnings.catch_warnings():
            # crowd-kit 1.4.2 uses pandas idioms pandas 3 deprecates (inplace=True): nothing a user can act on
            warnings.filterwarnings("ignore", category=FutureWarning, module=r"crowdkit\.")
            warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"crowdkit\.")
            try:
                self._fit_model(model, data, gold, labels, kwargs)
            except (ValueError, ArithmeticError) as exc:
                # crowd-kit failing on votes that passed our checks (e.g. M-MSR's skill-weighted vote when a
                # task's weights sum to zero): say which method, and that others may work
                raise DatakitError(f"{self.method}: crowd-kit's {self.crowdkit_name} failed on these votes "
                                   f"({type(exc).__name__}: {exc}); try another method, e.g. dawid_skene.") from exc
        self.model_ = model
        logger.debug("%s (crowd-kit %s) fitted on %d votes", self.method, self.crowdkit_name, len(data))
        return self

    def _fit_model(self, model, data: pd.DataFrame, gold: pd.Series, labels: list[str], kwargs: dict) -> None:
        tasks = pd.Index(sorted(data["task"].unique()), name="task")
        if self.has_proba:
            if self.skills_then_vote:
                model.fit(data)
                vote = _crowdkit_class("MajorityVote", self.method)()
                probas = vote.fit(data, skills=model.skills_).probas_
            else:
                probas = model.fit_predict_proba(data, **kwargs)
            probas = probas.reindex(index=tasks, columns=labels).fillna(0.0).astype(float)
            probas.index.name, probas.columns.name = "task", "label"
            if len(gold) and not self.takes_gold:
                probas.loc[gold.index] = 0.0
                for task, label in gold.items():
                    probas.loc[task, label] = 1.0
            self.probas_ = probas
            self.labels_ = argmax_labels(probas)  # datakit's tie rule: the smallest label
        else:
            result = model.fit_predict(data, **kwargs).reindex(tasks).astype(str)
            if len(gold):
                result.loc[gold.index] = gold.to_numpy()
            self.labels_ = pd.Series(result.to_numpy(), index=tasks, name="label")
            scores = getattr(model, "scores_", None)
            if scores is not None:
                self.scores_ = scores.reindex(index=tasks, columns=labels)
        skills = getattr(model, "skills_", None)
        if isinstance(skills, pd.Series):
            self.skills_ = skills.rename("skill").rename_axis("worker")

    def predict(self) -> pd.Series:
        check_fitted(self)
        return self.labels_

    def predict_proba(self) -> pd.DataFrame:
        check_fitted(self)
        if self.probas_ is None:
            raise DatakitError(f"{self.method} (crowd-kit {self.crowdkit_name}) gives no probabilities; use "
                               "labels_ / fit_predict, or a method that gives them (e.g. glad, mace, wawa).")
        return self.probas_

    def fit_predict(self, data: pd.DataFrame, gold: pd.Series | None = None) -> pd.Series:
        """Fit and return the label per task (Series indexed by ``task``)."""
        return self.fit(data, gold).labels_

    def fit_predict_proba(self, data: pd.DataFrame, gold: pd.Series | None = None) -> pd.DataFrame:
        """Fit and return the label probabilities (task x label)."""
        return self.fit(data, gold).predict_proba()

    def __repr__(self) -> str:
        opts = ", ".join(f"{k}={v!r}" for k, v in self.params.items())
        return f"{type(self).__name__}({opts})"


def _register(name: str, crowdkit_name: str, doc: str, *, has_proba: bool = True, takes_gold: bool = False,
              skills_then_vote: bool = False) -> type:
    cls = type(crowdkit_name if not name.startswith("crowdkit_") else "CrowdKit" + crowdkit_name,
               (CrowdKitAggregator,),
               {"__doc__": doc, "crowdkit_name": crowdkit_name, "has_proba": has_proba, "takes_gold": takes_gold,
                "method": name, "skills_then_vote": skills_then_vote, "__module__": __name__})
    return CROWDKIT_AGGREGATORS.register(name)(cls)


GLAD = _register("glad", "GLAD", "GLAD (Whitehill et al., 2009): worker expertise and task difficulty, by EM.")
MACE = _register("mace", "MACE", "MACE (Hovy et al., 2013): each worker is competent or a spammer, variational "
                                 "Bayes with restarts (crowd-kit seeds it: ``random_state=0``).")
MMSR = _register("mmsr", "MMSR", "M-MSR (Ma and Olshevsky, 2020): worker skills from a low-rank matrix "
                                 "completion of their agreements; gives labels and scores, no probabilities.",
                 has_proba=False)
Wawa = _register("wawa", "Wawa", "Worker Agreement with Aggregate: majority vote, then votes weighted by each "
                                 "worker's agreement with it.", skills_then_vote=True)
ZeroBasedSkill = _register("zero_based_skill", "ZeroBasedSkill",
                           "Zero-Based Skill: skills learned by gradient steps from a majority vote.",
                           skills_then_vote=True)
CrowdKitDawidSkene = _register("crowdkit_dawid_skene", "DawidSkene",
                               "crowd-kit's Dawid-Skene (EM over per-worker confusion matrices; gold used in EM).",
                               takes_gold=True)
CrowdKitOneCoin = _register("crowdkit_one_coin", "OneCoinDawidSkene", "crowd-kit's one-coin Dawid-Skene.")
CrowdKitMajorityVote = _register("crowdkit_majority_vote", "MajorityVote", "crowd-kit's majority vote.")

