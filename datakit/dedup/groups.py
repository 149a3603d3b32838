"""Groups of duplicates: connected components of the near-duplicate graph, and equal content ids.

:class:`_Components` is a union-find on numpy arrays fed edges chunk by chunk
(a bounded edge buffer, ``_limits.MAX_EDGES``), so
:func:`near_duplicate_groups` never holds the pair list. Every group is named
by its smallest member index (:func:`_group_ids`).

Examples
--------
>>> h = np.array([0, 1, 3, 2**63, 0xFFFF], dtype=np.uint64)
>>> near_duplicate_groups(h, 1)
array([0, 0, 0, 0, 4])
>>> exact_duplicate_groups(["a", "b", "a"])
array([0, 1, 0])
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from datakit.dedup import _limits
from datakit.dedup.hashes import _check_distance, _check_hashes, _check_jobs, _index_dtype
from datakit.dedup.search import _search_chunks

__all__ = ["near_duplicate_groups", "exact_duplicate_groups"]


class _Components:
    """Connected components fed edges chunk by chunk: a union-find on numpy arrays.

    Memory: one parent index per node (int32 below 2**31 nodes) and a bounded
    buffer of edges between roots. A merge joins the buffered roots through a
    graph of just those roots, so its working set follows the buffer, not the
    number of nodes (a scipy graph over all nodes took about 30 MB at a
    million nodes, at every merge).
    """

    def __init__(self, n: int) -> None:
        self.n = n
        self.parent = np.arange(n, dtype=_index_dtype(max(n, 1)))
        self._edges: list[tuple[np.ndarray, np.ndarray]] = []
        self._buffered = 0

    def _find(self, x: np.ndarray) -> np.ndarray:
        """Roots of nodes ``x``; the paths walked are shortened to point at them."""
        r = self.parent[x]
        while True:
            up = self.parent[r]
            if (up == r).all():
                break
            r = up
        self.parent[x] = r
        return r

    def add(self, i: np.ndarray, j: np.ndarray) -> None:
        a, b = self._find(i), self._find(j)
        keep = a != b
        if keep.any():
            self._edges.append((a[keep], b[keep]))
            self._buffered += int(keep.sum())
            if self._buffered >= _limits.MAX_EDGES:
                self._merge()

    def _merge(self) -> None:
        if not self._edges:
            return
        from scipy.sparse import coo_matrix
        from scipy.sparse.csgraph import connected_components

        a = np.concatenate([e[0] for e in self._edges])
        b = np.concatenate([e[1] for e in self._edges])
        self._edges, self._buffered = [], 0
        a, b = self._find(a), self._find(b)  # roots now (a merge may have come between)
        roots, inverse = np.unique(np.concatenate([a, b]), return_inverse=True)
        m = len(a)
        del a, b
        graph = coo_matrix((np.ones(m, dtype=np.int8), (inverse[:m], inverse[m:])), shape=(len(roots),) * 2)
        del inverse
        n_comp, comp = connected_components(graph, directed=False)
        smallest = np.full(n_comp, self.n, dtype=roots.dtype)
        np.minimum.at(smallest, comp, roots)
        self.parent[roots] = smallest[comp]  # each component's smallest root stays a root

    def labels(self) -> np.ndarray:
        """Component label of each node (the index of its component's root), shape (n,)."""
        self._merge()
        return self._find(np.arange(self.n))


def _group_ids(n: int, labels: np.ndarray) -> np.ndarray:
    """Group id per item = smallest index of an item with the same label."""
    first = np.full(int(labels.max()) + 1 if n else 0, n, dtype=np.int64)
    np.minimum.at(first, labels, np.arange(n, dtype=np.int64))
    return first[labels]


def near_duplicate_groups(hashes: np.ndarray, max_distance: int, *, n_jobs: int | None = None) -> np.ndarray:
    """Connected components of the near-duplicate graph.

    Parameters
    ----------
    hashes : ndarray, shape (N,), uint64
    max_distance : int
        As in :func:`~datakit.dedup.near_duplicate_pairs` (0..32).
    n_jobs : int, optional
        Threads, as in :func:`~datakit.dedup.near_duplicate_pairs`.

    Returns
    -------
    ndarray, shape (N,), int64
        Group id of each hash: the smallest index in its group (so a hash with
        no near duplicate has its own index). Chains join groups: if ``a~b`` and
        ``b~c`` then ``a``, ``b``, ``c`` share a group even if ``a`` and ``c``
        are far apart.

    Examples
    --------
    >>> near_duplicate_groups(np.array([7, 0, 6, 0xFF00], dtype=np.uint64), 1)
    array([0, 1, 0, 3])
    """
    hashes = _check_hashes(hashes, "hashes")
    radius = _check_distance(max_distance)
    jobs = _check_jobs(n_jobs)
    n = len(hashes)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    unique, inverse = np.unique(hashes, return_inverse=True)  # equal hashes: one node
    components = _Components(len(unique))  # fed chunk by chunk: no pair list is ever materialised
    for i, j, _ in _search_chunks(unique, unique, radius, self_join=True, n_jobs=jobs):
        components.add(i, j)
    return _group_ids(n, components.labels()[inverse.ravel()].astype(np.int64))


def exact_duplicate_groups(ids: Sequence[str]) -> np.ndarray:
    """Group equal content ids.

    Parameters
    ----------
    ids : sequence of str, length N
        Content ids (e.g. the manifest's sha256 ``id``). Missing values
        (``None``/NaN) are never grouped with anything.

    Returns
    -------
    ndarray, shape (N,), int64
        Group id of each item: the smallest index holding the same id.

    Examples
    --------
    >>> exact_duplicate_groups(["b", "a", "b", None, "a"])
    array([0, 1, 0, 3, 1])
    """
    import pandas as pd

    if isinstance(ids, (str, bytes)):
        raise TypeError("ids must be a sequence of content ids, not a single string")
    codes, _ = pd.factorize(pd.Series(list(ids) if not hasattr(ids, "__array__") else ids, dtype=object))
    n = len(codes)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    codes = codes.astype(np.int64)
    missing = codes < 0
    codes[missing] = codes.max() + 1 + np.arange(int(missing.sum()))
    return _group_ids(n, codes)
