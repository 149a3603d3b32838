"""Split assignment: stratified fractions, N per class (Caltech101), or the sources' own.

Splits are assigned per *group* of near-duplicate images (perceptual hashes
within a Hamming distance), so no test image has a near-copy in train.
Assignment is stratified by label and deterministic for a seed: each class
gets its own random stream (seeded by ``seed`` and the class id), so adding a
class does not reshuffle the others.
"""
from __future__ import annotations

import logging
import zlib
from typing import Sequence

import numpy as np
import pandas as pd

__all__ = ["assign_splits", "SPLIT_ORDER", "split_counts"]

logger = logging.getLogger(__name__)

#: Canonical order of split names.
SPLIT_ORDER = ("train", "val", "test")


def _label_rng(seed: int, label: str) -> np.random.Generator:
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, zlib.crc32(label.encode())])


def _targets(n: int, fractions: tuple[float, float, float]) -> np.ndarray:
    train = int(round(n * fractions[0]))
    val = int(round(n * fractions[1]))
    train = min(train, n)
    val = min(val, n - train)
    return np.array([train, val, n - train - val])


def assign_splits(labels: Sequence, groups: Sequence[int] | None = None, *, strategy: str = "fractions",
                  fractions: tuple[float, float, float] = (0.8, 0.1, 0.1), per_class: int | None = None,
                  val_per_class: int = 0, seed: int = 0, fixed: Sequence | None = None) -> np.ndarray:
    """Assign a split to every image.

    Parameters
    ----------
    labels : sequence, shape (N,)
        Class id per image (None/NaN for unlabeled images, which form their own stratum).
    groups : sequence of int, shape (N,), optional
        Near-duplicate group id per image; images of one group get one split.
        Default: every image is its own group.
    strategy : {"fractions", "per-class"}
        How to split the images that have no fixed split.
    fractions : (train, val, test)
        Target fractions of images per class for ``"fractions"``.
    per_class, val_per_class : int
        ``"per-class"``: up to ``per_class`` training (and ``val_per_class``
        validation) images per class, the rest to test (Caltech101 protocol).
    seed : int
    fixed : sequence of str or None, shape (N,), optional
        A split an image must keep (its source's own split), or None. A group
        with fixed members goes, whole, to the split of its first fixed member.

    Returns
    -------
    ndarray of str, shape (N,)

    Raises
    ------
    ValueError
        Unknown ``strategy``, lengths that differ, bad fractions or ``per_class``.

    Examples
    --------
    >>> s = assign_splits(["a"] * 8 + ["b"] * 2, strategy="fractions", fractions=(0.5, 0, 0.5), seed=0)
    >>> sorted(s[:8]).count("train"), sorted(s[8:]).count("train")
    (4, 1)
    """
    labels = pd.Series(list(labels), dtype=object)
    n = len(labels)
    groups = np.arange(n, dtype=np.int64) if groups is None else np.asarray(groups, dtype=np.int64)
    if len(groups) != n:
        raise ValueError(f"labels and groups must have the same length, got {n} and {len(groups)}")
    if strategy not in ("fractions", "per-class"):
        raise ValueError(f"Unknown split strategy {strategy!r}. Valid values are {{fractions, per-class}}.")
    if strategy == "fractions":
        if len(fractions) != 3 or min(fractions) < 0 or abs(sum(fractions) - 1) > 1e-6:
            raise ValueError(f"fractions must be three non-negative numbers summing to 1, got {fractions!r}")
    elif per_class is None or per_class < 1:
        raise ValueError(f"per_class must be a positive integer for the per-class protocol, got {per_class!r}")
    fixed_arr = [None] * n if fixed is None else list(fixed)
    if len(fixed_arr) != n:
        raise ValueError(f"labels and fixed must have the same length, got {n} and {len(fixed_arr)}")
    out = np.empty(n, dtype=object)
    if n == 0:
        return out.astype(str)
    keys = labels.map(lambda v: "\x00unlabeled" if v is None or (isinstance(v, float) and np.isnan(v)) else str(v))
    frame = pd.DataFrame({"g": groups, "key": keys.to_numpy(),
                          "fixed": pd.Series(fixed_arr, dtype=object).where(lambda s: s.notna(), None)})
    # groups with a fixed member: whole group to its first fixed split
    fixed_rows = frame[frame["fixed"].notna()]
    group_fixed = fixed_rows.groupby("g", sort=False)["fixed"].first()
    is_fixed = frame["g"].isin(group_fixed.index).to_numpy()
    if is_fixed.any():
        out[is_fixed] = frame.loc[is_fixed, "g"].map(group_fixed).to_numpy()
    free = frame[~is_fixed]
    if len(free):
        # one stratum per group: the group's most common label (first on ties)
        sizes = free.groupby("g", sort=False).size()
        glabel = free.groupby("g", sort=False)["key"].agg(lambda s: s.value_counts(sort=True).index[0]
                                                          if s.nunique() > 1 else s.iloc[0])
        gsplit: dict[int, str] = {}
        for key in sorted(glabel.unique()):
            gids = glabel.index[glabel.to_numpy() == key].to_numpy()
            gids = np.sort(gids)
            rng = _label_rng(seed, key)
            order = gids[rng.permutation(len(gids))]
            gsize = sizes.loc[order].to_numpy()
            if strategy == "fractions":
                target = _targets(int(gsize.sum()), tuple(fractions))
                have = np.zeros(3, dtype=np.int64)
                for g, size in zip(order, gsize):
                    deficit = target - have
                    k = int(np.argmax(deficit))  # first of the largest: train, val, test
                    have[k] += size
                    gsplit[int(g)] = SPLIT_ORDER[k]
            else:
                caps = np.array([per_class, val_per_class])
                have = np.zeros(2, dtype=np.int64)
                for g, size in zip(order, gsize):
                    if have[0] + size <= caps[0]:
                        have[0] += size
                        gsplit[int(g)] = "train"
                    elif have[1] + size <= caps[1]:
                        have[1] += size
                        gsplit[int(g)] = "val"
                    else:
                        gsplit[int(g)] = "test"
                if have[0] < caps[0]:
                    logger.warning("class %r has only %d training images (per_class = %d)",
                                   key, have[0], per_class)
        out[~is_fixed] = free["g"].map(gsplit).to_numpy()
    return out.astype(str)


def split_counts(manifest: pd.DataFrame, by: str) -> pd.DataFrame:
    """Image counts per value of column ``by`` (rows) and split (columns), with a total.

    Parameters
    ----------
    manifest : DataFrame with columns ``split`` and ``by``
    by : str

    Returns
    -------
    DataFrame with columns ``by``, one per split (train, val, test first), ``total``.
    """
    if manifest.empty:
        return pd.DataFrame(columns=[by, "total"])
    table = manifest.groupby([by, "split"], dropna=False).size().unstack("split", fill_value=0)
    cols = [c for c in SPLIT_ORDER if c in table.columns] + sorted(c for c in table.columns if c not in SPLIT_ORDER)
    table = table[cols]
    table["total"] = table.sum(axis=1)
    table.columns.name = None
    return table.reset_index()
