"""A fitted multi-index over a fixed set of hashes, queried many times (:class:`HashIndex`).

Where :func:`datakit.dedup.near_duplicate_pairs` builds its block tables for
one call, :class:`HashIndex` builds them once in ``fit`` and searches every
later query batch against them (e.g. each incoming candidate batch of a
build against everything already kept).
"""
from __future__ import annotations

import numpy as np

from datakit.dedup.hashes import _check_distance, _check_hashes, _check_jobs
from datakit.dedup.plan import _block_radii, _plan
from datakit.dedup.search import _collect_sorted, _nearest_from_pairs, _search_brute, _search_chunks
from datakit.dedup.tables import _Table

__all__ = ["HashIndex"]


class HashIndex:
    """A multi-index over a fixed set of 64-bit hashes, queried many times.

    Build it once (``fit``) and search it with batches of new hashes, e.g.
    each incoming candidate batch of a build against everything already kept.

    Parameters
    ----------
    max_distance : int, default 8
        The largest radius :meth:`query` will be asked for (0..32); the block
        layout is chosen for it.
    n_jobs : int, optional
        Threads per query (None: 1; -1: one per core).

    Attributes
    ----------
    hashes_ : ndarray, shape (M,), uint64
        The indexed hashes.
    blocks_ : list of (shift, width)
        Block layout (None when the index falls back to a brute-force scan).
    block_radii_ : list of int
        Per-block search radius at the fitted ``max_distance``.

    Examples
    --------
    >>> index = HashIndex(max_distance=2).fit(np.array([0, 2**63], dtype=np.uint64))
    >>> index.query(np.array([3, 7], dtype=np.uint64))
    array([[0, 0]])
    >>> index.nearest(np.array([3, 2**63 + 1], dtype=np.uint64))
    (array([0, 1]), array([2, 1]))
    """

    def __init__(self, *, max_distance: int = 8, n_jobs: int | None = None) -> None:
        self.max_distance = max_distance
        self.n_jobs = n_jobs

    def fit(self, hashes: np.ndarray) -> "HashIndex":
        """Index ``hashes`` (shape (M,), uint64); returns ``self``."""
        radius = _check_distance(self.max_distance)
        _check_jobs(self.n_jobs)
        self.hashes_ = _check_hashes(hashes, "hashes").copy()
        # Plan for a query batch as large as the index (a typical use).
        plan = _plan(len(self.hashes_), max(len(self.hashes_), 1), radius, self_join=False)
        if plan is None or len(self.hashes_) == 0:
            self.blocks_, self.block_radii_, self._tables = None, [], []
        else:
            self.blocks_, self.block_radii_ = plan
            self._tables = [_Table(self.hashes_, shift, width) for shift, width in self.blocks_]
        return self

    def _check_fitted(self) -> None:
        if not hasattr(self, "hashes_"):
            from sklearn.exceptions import NotFittedError

            raise NotFittedError("This HashIndex is not fitted yet; call fit(hashes) before query().")

    def query(self, hashes: np.ndarray, max_distance: int | None = None, *, return_distances: bool = False):
        """Pairs ``(i, j)``: query hash ``i`` is within ``max_distance`` of indexed hash ``j``.

        Parameters
        ----------
        hashes : ndarray, shape (N,), uint64
        max_distance : int, optional
            At most the fitted ``max_distance`` (default: that value).
        return_distances : bool, default False

        Returns
        -------
        pairs : ndarray, shape (K, 2), int64, sorted by ``i`` then ``j``
        distances : ndarray, shape (K,), int64 (only with ``return_distances``)
        """
        self._check_fitted()
        query = _check_hashes(hashes, "hashes")
        radius = self.max_distance if max_distance is None else _check_distance(max_distance)
        if radius > self.max_distance:
            raise ValueError(f"max_distance={radius} exceeds the index's max_distance={self.max_distance}; "
                             "fit a HashIndex with a larger max_distance")
        if len(query) == 0 or len(self.hashes_) == 0:
            pairs, dist = np.zeros((0, 2), dtype=np.int64), np.zeros(0, dtype=np.int64)
        elif self.blocks_ is None:
            pairs, dist = _collect_sorted(_search_brute(query, self.hashes_, radius, self_join=False),
                                          len(query), len(self.hashes_), self_join=False)
        else:
            # A smaller radius keeps the fitted blocks; the per-block radii only shrink.
            radii = _block_radii(radius, len(self.blocks_))
            chunks = _search_chunks(query, self.hashes_, radius, self_join=False, n_jobs=_check_jobs(self.n_jobs),
                                    tables=self._tables, blocks=self.blocks_, radii=radii)
            pairs, dist = _collect_sorted(chunks, len(query), len(self.hashes_), self_join=False)
        return (pairs, dist) if return_distances else pairs

    def nearest(self, hashes: np.ndarray, max_distance: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Nearest indexed hash of each query (index, distance; -1 where none within range)."""
        pairs, dist = self.query(hashes, max_distance, return_distances=True)
        return _nearest_from_pairs(len(np.asarray(hashes)), pairs, dist)

    def __len__(self) -> int:
        return len(getattr(self, "hashes_", ()))
