"""Inter-annotator agreement from maintained libraries: Fleiss' kappa
(statsmodels), Krippendorff's alpha (``krippendorff``, nominal) and pairwise
Cohen's kappa (scikit-learn), overall and per class (one class against the rest)."""
from __future__ import annotations

import itertools
import logging
import warnings

import numpy as np
import pandas as pd

from datakit.crowd.aggregation._base import check_data

__all__ = ["fleiss_kappa", "krippendorff_alpha", "pairwise_cohen_kappa", "agreement_report"]

log = logging.getLogger(__name__)


def _equal_raters(data: pd.DataFrame, n_raters: int | None) -> tuple[pd.DataFrame, int]:
    """Fleiss' kappa needs the same number of ratings per task: keep tasks with at
    least ``n_raters`` votes (default: the most common count, at least 2) and, of
    each, the first ``n_raters`` votes in table order."""
    sizes = data.groupby("task").size()
    if n_raters is None:
        eligible = sizes[sizes >= 2]
        n_raters = int(eligible.mode().max()) if len(eligible) else 2
    keep = sizes[sizes >= n_raters].index
    sub = data[data["task"].isin(keep)].groupby("task", sort=False).head(n_raters)
    return sub, n_raters


def fleiss_kappa(data: pd.DataFrame, *, n_raters: int | None = None, labels: list[str] | None = None) -> float:
    """Fleiss' kappa of the votes (statsmodels).

    Parameters
    ----------
    data : DataFrame
        Votes ``task, worker, label``.
    n_raters : int, optional
        Ratings per task to use (see :func:`_equal_raters`); tasks with fewer are left out.

    Returns
    -------
    float (NaN when no task has ``n_raters`` votes or only one label occurs).
    """
    from statsmodels.stats.inter_rater import fleiss_kappa as _fk

    data = check_data(data)
    sub, n = _equal_raters(data, n_raters)
    if sub.empty:
        return float("nan")
    table = pd.crosstab(sub["task"], sub["label"])
    if labels is not None:
        table = table.reindex(columns=labels, fill_value=0)
    if table.shape[1] < 2:
        return float("nan")
    with np.errstate(invalid="ignore", divide="ignore"):
        return float(_fk(table.to_numpy()))


def krippendorff_alpha(data: pd.DataFrame) -> float:
    """Krippendorff's alpha, nominal level (``krippendorff`` package); any number of votes per task."""
    import krippendorff

    data = check_data(data)
    labels = sorted(data["label"].unique())
    if len(labels) < 2:
        return float("nan")
    codes = data.assign(code=pd.Index(labels).get_indexer(data["label"]).astype(float))
    matrix = codes.pivot_table(index="worker", columns="task", values="code", aggfunc="first")
    pairable = matrix.notna().sum(axis=0) >= 2
    if pairable.sum() == 0:
        return float("nan")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return float(krippendorff.alpha(reliability_data=matrix.loc[:, pairable].to_numpy(),
                                        level_of_measurement="nominal", value_domain=list(range(len(labels)))))


def pairwise_cohen_kappa(data: pd.DataFrame, *, min_common: int = 5) -> pd.DataFrame:
    """Cohen's kappa (scikit-learn) for every pair of workers with ``min_common`` tasks in common.

    Returns
    -------
    DataFrame with columns ``worker_a, worker_b, n_common, kappa``.
    """
    from sklearn.metrics import cohen_kappa_score

    data = check_data(data)
    wide = data.pivot_table(index="task", columns="worker", values="label", aggfunc="first")
    rows = []
    present = wide.notna()
    for a, b in itertools.combinations(wide.columns, 2):
        both = present[a] & present[b]
        n = int(both.sum())
        if n < min_common:
            continue
        ya, yb = wide.loc[both, a], wide.loc[both, b]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            k = cohen_kappa_score(ya, yb) if len(set(ya) | set(yb)) > 1 else float("nan")
        rows.append((a, b, n, float(k)))
    return pd.DataFrame(rows, columns=["worker_a", "worker_b", "n_common", "kappa"])


def agreement_report(data: pd.DataFrame, *, classes: pd.Series | None = None, min_common: int = 5) -> pd.DataFrame:
    """Agreement overall and per class.

    Parameters
    ----------
    data : DataFrame
        Votes ``task, worker, label``.
    classes : Series, optional
        Class of each task (indexed by task). For yes/no verification votes pass
        the class each item was asked about: per-class rows then use that
        class's tasks. Without it, each label is scored against the rest
        (votes recoded as ``label == class``); for two labels that equals the
        overall figure, so only the overall row is given.
    min_common : int
        Shared tasks needed for a pair's Cohen's kappa.

    Returns
    -------
    DataFrame, one row per scope (``"overall"``, then each class) with columns
    ``scope, n_tasks, n_votes, fleiss_kappa, krippendorff_alpha, cohen_kappa_mean, cohen_pairs``.
    """
    data = check_data(data)
    scopes = [("overall", data)]
    if classes is not None:
        cls = pd.Series(classes.astype(str).to_numpy(), index=classes.index.astype(str))
        mapped = data["task"].map(cls)
        for c in sorted(mapped.dropna().unique()):
            scopes.append((c, data[mapped == c]))
    else:
        labels = sorted(data["label"].unique())
        if len(labels) > 2:
            for label in labels:
                scopes.append((label, data.assign(label=np.where(data["label"] == label, label, "other"))))
    rows = []
    for scope, frame in scopes:
        pairs = pairwise_cohen_kappa(frame, min_common=min_common)
        rows.append({"scope": scope, "n_tasks": int(frame["task"].nunique()), "n_votes": len(frame),
                     "fleiss_kappa": fleiss_kappa(frame), "krippendorff_alpha": krippendorff_alpha(frame),
                     "cohen_kappa_mean": float(pairs["kappa"].mean()) if len(pairs) else float("nan"),
                     "cohen_pairs": len(pairs)})
    return pd.DataFrame(rows)
