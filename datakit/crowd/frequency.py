"""ImageNetV2's selection frequency and test-split curation from it (Recht et al., 2019).

The selection frequency of an image is the share of workers who selected it
(answered "yes") when asked whether it shows its class. ImageNetV2 built test
sets three ways, all offered by :func:`curate_by_frequency`:

* ``matched-frequency``: per class, sample images so that the histogram of
  selection frequencies (bins over [0, 1]) matches a reference dataset's;
* ``threshold``: keep images with frequency >= a minimum (V2 used 0.7);
* ``top``: the ``per_class`` images of each class with the highest frequency.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from datakit.crowd.tasks import YES

__all__ = ["selection_frequency", "curate_by_frequency", "add_vote_columns", "CURATION_STRATEGIES"]

CURATION_STRATEGIES = ("matched-frequency", "threshold", "top")


def selection_frequency(data: pd.DataFrame, *, positive: str = YES) -> pd.DataFrame:
    """Per task: ``n_votes``, ``n_selected`` and ``selection_frequency`` (= n_selected / n_votes).

    A worker's repeat votes on a task count once (the earliest).

    Examples
    --------
    >>> v = pd.DataFrame({"task": ["a", "a", "a", "b"], "worker": ["u", "v", "w", "u"],
    ...                   "label": ["yes", "no", "yes", "no"]})
    >>> selection_frequency(v)["selection_frequency"].round(3).to_dict()
    {'a': 0.667, 'b': 0.0}
    """
    from datakit.crowd.aggregation._base import check_data

    v = check_data(data)
    sel = (v["label"] == str(positive)).groupby(v["task"])
    out = pd.DataFrame({"n_votes": sel.size(), "n_selected": sel.sum().astype(int)})
    out["selection_frequency"] = out["n_selected"] / out["n_votes"]
    out.index.name = "task"
    return out


def _largest_remainder(shares: np.ndarray, total: int) -> np.ndarray:
    raw = shares * total
    base = np.floor(raw).astype(int)
    order = np.argsort(-(raw - base), kind="stable")
    base[order[: total - base.sum()]] += 1
    return base


def curate_by_frequency(frame: pd.DataFrame, strategy: str = "matched-frequency", *,
                        column: str = "selection_frequency", label_column: str = "label",
                        threshold: float = 0.7, per_class: int = 10,
                        reference: pd.Series | np.ndarray | pd.DataFrame | None = None,
                        bins: int = 5, seed: int = 0) -> pd.DataFrame:
    """Choose test-split images by selection frequency, the ImageNetV2 way. A pure function.

    Parameters
    ----------
    frame : DataFrame
        One row per candidate image (a manifest), with ``column`` and ``label_column``.
    strategy : {"matched-frequency", "threshold", "top"}
    threshold : float
        Minimum frequency (``threshold``).
    per_class : int
        Images per class (``top`` and ``matched-frequency``).
    reference : array-like or DataFrame
        ``matched-frequency``: the reference dataset's selection frequencies,
        either one array for all classes or a DataFrame with ``column`` and
        ``label_column`` (per-class histograms; classes missing there use the
        pooled one).
    bins : int
        Equal-width frequency bins over [0, 1] (ImageNetV2: 5).
    seed : int
        Seeds the draws within bins.

    Returns
    -------
    A copy of ``frame`` with ``selected`` (bool) and ``curation_reason`` (null
    when selected, else why not), so nothing is dropped silently.

    Examples
    --------
    >>> f = pd.DataFrame({"label": ["a"] * 3, "selection_frequency": [0.9, 0.5, 0.8]})
    >>> curate_by_frequency(f, "threshold", threshold=0.7)["selected"].tolist()
    [True, False, True]
    """
    if strategy not in CURATION_STRATEGIES:
        raise ValueError(f"Unknown value {strategy!r} for strategy. Valid values are {{{', '.join(CURATION_STRATEGIES)}}}.")
    for col in (column, label_column):
        if col not in frame.columns:
            raise ValueError(f"frame has no {col!r} column (columns: {list(frame.columns)})")
    if not 0 <= threshold <= 1:
        raise ValueError(f"threshold must be in [0, 1], got {threshold!r}")
    if not isinstance(per_class, (int, np.integer)) or per_class < 1:
        raise ValueError(f"per_class must be a positive integer, got {per_class!r}")
    out = frame.copy()
    freq = pd.to_numeric(out[column], errors="coerce")
    selected = np.zeros(len(out), bool)
    reason = np.array([None] * len(out), dtype=object)
    no_votes = freq.isna().to_numpy()
    reason[no_votes] = "no_selection_frequency"
    if strategy == "threshold":
        selected = (freq >= threshold).to_numpy()
        reason[~selected & ~no_votes] = f"selection_frequency<{threshold}"
    elif strategy == "top":
        for _, idx in out.groupby(label_column, sort=True).groups.items():
            pos = out.index.get_indexer(idx)
            ok = pos[~no_votes[pos]]
            ranked = sorted(ok, key=lambda p: (-freq.iloc[p], p))
            selected[ranked[:per_class]] = True
            for p in ranked[per_class:]:
                reason[p] = f"not_in_top_{per_class}"
    else:
        if reference is None:
            raise ValueError("matched-frequency needs reference= (the reference dataset's selection frequencies)")
        if not isinstance(bins, (int, np.integer)) or bins < 1:
            raise ValueError(f"bins must be a positive integer, got {bins!r}")
        edges = np.linspace(0.0, 1.0, bins + 1)

        def hist(values) -> np.ndarray:
            v = np.asarray(pd.to_numeric(pd.Series(values), errors="coerce").dropna(), float)
            h = np.histogram(np.clip(v, 0, 1), bins=edges)[0].astype(float)
            return h / h.sum() if h.sum() else np.full(bins, 1.0 / bins)

        if isinstance(reference, pd.DataFrame):
            pooled = hist(reference[column])
            per_ref = {str(k): hist(g[column]) for k, g in reference.groupby(label_column)}
        else:
            pooled, per_ref = hist(reference), {}
        rng = np.random.default_rng(seed)
        which = np.clip(np.digitize(freq.fillna(-1).to_numpy(), edges[1:-1]), 0, bins - 1)
        for label, idx in out.groupby(label_column, sort=True).groups.items():
            pos = out.index.get_indexer(idx)
            pos = pos[~no_votes[pos]]
            targets = _largest_remainder(per_ref.get(str(label), pooled), per_class)
            for b in range(bins):
                in_bin = pos[which[pos] == b]
                take = in_bin[rng.permutation(len(in_bin))[: targets[b]]]
                selected[take] = True
                rest = np.setdiff1d(in_bin, take)
                reason[rest] = f"matched_frequency_bin_{b}_full"
    out["selected"] = selected
    out["curation_reason"] = pd.Series(np.where(selected, None, reason), index=out.index, dtype="string")
    return out


def add_vote_columns(manifest: pd.DataFrame, votes: pd.DataFrame | None = None,
                     consensus: pd.DataFrame | None = None, *, positive: str = YES) -> pd.DataFrame:
    """Fill the manifest's crowd columns: ``votes``, ``selection_frequency`` and ``p_correct``.

    Parameters
    ----------
    manifest : DataFrame
        With an ``id`` column.
    votes : DataFrame, optional
        Yes/no votes (``task`` = manifest id): gives ``votes`` and ``selection_frequency``.
    consensus : DataFrame, optional
        A consensus result (:data:`datakit.crowd.consensus.CONSENSUS_COLUMNS`): its
        ``p_positive`` becomes ``p_correct`` (the probability that the image shows its
        label), and its counts are used when ``votes`` is not given.

    Returns
    -------
    A copy of ``manifest``; images without votes get null values.
    """
    out = manifest.copy()
    ids = out["id"].astype(str)
    if votes is not None and len(votes):
        freq = selection_frequency(votes, positive=positive)
        out["votes"] = ids.map(freq["n_votes"]).astype("Int64").to_numpy()
        out["selection_frequency"] = ids.map(freq["selection_frequency"]).astype("float64").to_numpy()
    elif consensus is not None:
        c = consensus.set_index(consensus["item"].astype(str))
        out["votes"] = ids.map(c["votes"]).astype("Int64").to_numpy()
        out["selection_frequency"] = ids.map(c["selection_frequency"]).astype("float64").to_numpy()
    if consensus is not None:
        c = consensus.set_index(consensus["item"].astype(str))
        out["p_correct"] = ids.map(c["p_positive"]).astype("float64").to_numpy()
    return out
