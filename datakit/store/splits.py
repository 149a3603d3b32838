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

__all__ = ["assign_splits", "assign_split_codes", "SPLIT_ORDER", "UNLABELED_KEY", "split_counts"]

logger = logging.getLogger(__name__)

#: Canonical order of split names.
SPLIT_ORDER = ("train", "val", "test")
#: Stratum key of unlabeled images.
UNLABELED_KEY = "\x00unlabeled"


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
    labels = list(labels)
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
    fixed_list = [None] * n if fixed is None else list(fixed)
    if len(fixed_list) != n:
        raise ValueError(f"labels and fixed must have the same length, got {n} and {len(fixed_list)}")
    if n == 0:
        return np.empty(0, dtype=object).astype(str)
    keys = pd.Series(labels, dtype=object).map(
        lambda v: UNLABELED_KEY if v is None or (isinstance(v, float) and np.isnan(v)) else str(v))
    label_codes, label_keys = pd.factorize(keys, sort=False)
    fixed_ser = pd.Series(fixed_list, dtype=object)
    fixed_ser = fixed_ser.where(fixed_ser.notna(), None)
    fixed_codes, fixed_names = pd.factorize(fixed_ser, sort=False, use_na_sentinel=True)
    codes, names = assign_split_codes(label_codes, [str(k) for k in label_keys], groups,
                                      fixed_codes=fixed_codes, fixed_names=list(fixed_names), strategy=strategy,
                                      fractions=fractions, per_class=per_class, val_per_class=val_per_class,
                                      seed=seed)
    return np.asarray([str(x) for x in names], dtype=object)[codes].astype(str)


def _fractions_walk(gsize: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Greedy walk over groups (in order): each goes to the split furthest below its target.

    Equivalent to, per group, ``argmax(target - have)`` (first of the largest), then
    ``have[k] += size``; runs of single-image groups are done at once: their picks are
    the merge of the descending deficit sequences, ordered by (deficit desc, split asc).
    """
    m = len(gsize)
    res = np.empty(m, dtype=np.int64)
    have = np.zeros(3, dtype=np.int64)
    pos = 0
    for b in [*np.flatnonzero(gsize != 1).tolist(), m]:
        r = b - pos
        if r > 0:
            values = ((target - have)[:, None] - np.arange(r, dtype=np.int64)[None, :]).ravel()
            which = np.repeat(np.arange(3, dtype=np.int64), r)
            picks = which[np.lexsort((which, -values))[:r]]
            res[pos:b] = picks
            have += np.bincount(picks, minlength=3)
        if b < m:
            k = int(np.argmax(target - have))  # first of the largest: train, val, test
            have[k] += gsize[b]
            res[b] = k
        pos = b + 1
    return res


def _per_class_walk(gsize: np.ndarray, caps: tuple[int, int]) -> tuple[np.ndarray, int]:
    """Caltech101 protocol over groups in order: train while it fits, then val, then test."""
    m = len(gsize)
    res = np.empty(m, dtype=np.int64)
    have0 = have1 = 0
    pos = 0
    for b in [*np.flatnonzero(gsize != 1).tolist(), m]:
        r = b - pos
        if r > 0:
            a = max(0, min(r, caps[0] - have0))
            v = max(0, min(r - a, caps[1] - have1))
            res[pos:pos + a] = 0
            res[pos + a:pos + a + v] = 1
            res[pos + a + v:b] = 2
            have0 += a
            have1 += v
        if b < m:
            size = int(gsize[b])
            if have0 + size <= caps[0]:
                have0 += size
                res[b] = 0
            elif have1 + size <= caps[1]:
                have1 += size
                res[b] = 1
            else:
                res[b] = 2
        pos = b + 1
    return res, have0


def assign_split_codes(label_codes: np.ndarray, label_keys: Sequence[str], groups: np.ndarray, *,
                       fixed_codes: np.ndarray | None = None, fixed_names: Sequence[str] = (),
                       strategy: str = "fractions", fractions: tuple[float, float, float] = (0.8, 0.1, 0.1),
                       per_class: int | None = None, val_per_class: int = 0,
                       seed: int = 0) -> tuple[np.ndarray, list[str]]:
    """:func:`assign_splits` on integer codes (compact: no Python object per image).

    Parameters
    ----------
    label_codes : ndarray of int, shape (N,)
        Index into ``label_keys`` per image (every image has one; unlabeled
        images use the key ``UNLABELED_KEY``).
    label_keys : sequence of str
        The stratum keys (class ids as strings).
    groups : ndarray of int, shape (N,)
        Near-duplicate group id per image.
    fixed_codes : ndarray of int, shape (N,), optional
        Index into ``fixed_names`` of the split an image must keep, or -1.
    fixed_names : sequence of str
    strategy, fractions, per_class, val_per_class, seed
        As in :func:`assign_splits` (not validated here).

    Returns
    -------
    codes : ndarray of int64, shape (N,)
        Index into ``names`` per image.
    names : list of str
        ``SPLIT_ORDER`` followed by the fixed split names not in it.
    """
    groups = np.asarray(groups)
    n = len(groups)
    index = np.int32 if n < 2**31 else np.int64  # per-image arrays are kept narrow: a 1M build runs this
    label_codes = np.asarray(label_codes).astype(index, copy=False)
    names = list(SPLIT_ORDER) + [str(f) for f in dict.fromkeys(str(x) for x in fixed_names) if f not in SPLIT_ORDER]
    out = np.full(n, -1, dtype=np.int64)
    if n == 0:
        return out, names
    # compact group index, in group id order
    if groups.min() >= 0 and groups.max() < 2 * n:  # group ids are row numbers: rank them with a bitmap
        present = np.zeros(int(groups.max()) + 1, dtype=bool)
        present[groups] = True
        rank = np.cumsum(present, dtype=index)
        del present
        ginv = rank[groups] - 1
        del rank
    else:
        _, ginv = np.unique(groups, return_inverse=True)
        ginv = ginv.reshape(-1).astype(index)
    n_groups = int(ginv.max()) + 1
    is_fixed = None
    if fixed_codes is not None:
        fixed_codes = np.asarray(fixed_codes, dtype=np.int64)
        rows = np.flatnonzero(fixed_codes >= 0)
        if len(rows):
            # groups with a fixed member: whole group to its first fixed split
            name_idx = {nm: i for i, nm in enumerate(names)}
            fixed_map = np.array([name_idx[str(f)] for f in fixed_names], dtype=np.int64)
            ug, first = np.unique(ginv[rows], return_index=True)
            group_fixed = np.full(n_groups, -1, dtype=np.int64)
            group_fixed[ug] = fixed_map[fixed_codes[rows[first]]]
            row_fixed = group_fixed[ginv]
            is_fixed = row_fixed >= 0
            out[is_fixed] = row_fixed[is_fixed]
            del row_fixed, group_fixed
    if is_fixed is None:  # every image is free: no copies
        free_rows, fg, fl = None, ginv, label_codes
    else:
        free_rows = np.flatnonzero(~is_fixed)
        if not len(free_rows):
            return out, names
        fg, fl = ginv[free_rows], label_codes[free_rows]
    sizes = np.bincount(fg, minlength=n_groups)
    free_groups = np.flatnonzero(sizes).astype(index)  # ascending group ids
    # one stratum per group: the group's most common label (first on ties, as pandas value_counts orders them)
    gmin = np.full(n_groups, np.iinfo(index).max, dtype=index)
    gmax = np.full(n_groups, np.iinfo(index).min, dtype=index)
    np.minimum.at(gmin, fg, fl)
    np.maximum.at(gmax, fg, fl)
    glabel = np.full(n_groups, -1, dtype=index)
    glabel[free_groups] = gmin[free_groups]
    mixed = (gmin != gmax) & (sizes > 0)
    del gmin, gmax
    if mixed.any():
        rows_m = np.flatnonzero(mixed[fg])  # rows of mixed groups, in row order
        rows_m = rows_m[np.argsort(fg[rows_m], kind="stable")]  # ... grouped, each group's rows in row order
        gm = fg[rows_m]
        cut = np.flatnonzero(np.r_[True, gm[1:] != gm[:-1], True])
        key_index = {str(k): i for i, k in enumerate(label_keys)}
        for s, e in zip(cut[:-1], cut[1:]):
            member = rows_m[s:e]
            keys = pd.Series([str(label_keys[c]) for c in fl[member]], dtype=object)
            glabel[gm[s]] = key_index[keys.value_counts(sort=True).index[0]]
    del mixed
    gsplit = np.full(n_groups, -1, dtype=np.int64 if len(names) > 127 else np.int8)
    stratum = glabel[free_groups]
    by_stratum = np.argsort(stratum, kind="stable").astype(index)
    bounds = np.flatnonzero(np.r_[True, stratum[by_stratum][1:] != stratum[by_stratum][:-1], True])
    segments = {int(stratum[by_stratum[bounds[i]]]): free_groups[by_stratum[bounds[i]:bounds[i + 1]]]
                for i in range(len(bounds) - 1)}
    for code in sorted(segments, key=lambda c: str(label_keys[c])):
        key = str(label_keys[code])
        gids = segments[code]  # ascending group ids
        rng = _label_rng(seed, key)
        walk = gids[rng.permutation(len(gids))]
        gsize = sizes[walk]
        if strategy == "fractions":
            target = _targets(int(gsize.sum()), tuple(fractions))
            gsplit[walk] = _fractions_walk(gsize, target)
        else:
            res, have0 = _per_class_walk(gsize, (int(per_class), int(val_per_class)))
            gsplit[walk] = res
            if have0 < per_class:
                logger.warning("class %r has only %d training images (per_class = %d)", key, have0, per_class)
    if free_rows is None:
        out[:] = gsplit[fg]
    else:
        out[free_rows] = gsplit[fg]
    return out, names


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
