"""Near-duplicate search: every pair of 64-bit hashes within a Hamming radius.

Memory is bounded for clustered hashes too (the pHashes of augmented or
re-encoded images: many equal or near-equal hashes, so a few buckets are very
heavy):

* Equal hashes are collapsed first (:class:`_Distinct`): the search runs over
  distinct values and the pairs among equal hashes are written out directly.
* The multi-index search (:mod:`datakit.dedup.tables`, block layout from
  :mod:`datakit.dedup.plan`) caps the candidates it materialises at once;
  when the planner prefers the quadratic scan, :func:`_search_brute` runs it
  in chunks. Both give the same answer.
* Verified pairs stream out chunk by chunk (:func:`_search_chunks`,
  :func:`_pair_chunks`), with int32 indices (below 2**31 items) and uint8
  distances. :func:`near_duplicate_pairs` packs each pair into one uint64 key,
  sorts the keys inside the result's own buffer and decodes them in place
  (:func:`_collect_sorted`: the peak is about the result itself, 24 bytes a
  pair). The grouping functions consume the chunks and never hold the list.

Examples
--------
>>> h = np.array([0, 1, 3, 2**63, 0xFFFF], dtype=np.uint64)
>>> near_duplicate_pairs(h, 2)
array([[0, 1],
       [0, 2],
       [0, 3],
       [1, 2],
       [1, 3]])
"""
from __future__ import annotations

import logging

import numpy as np

from datakit.dedup import _limits
from datakit.dedup.hashes import _check_distance, _check_hashes, _check_jobs, _index_dtype, popcount64
from datakit.dedup.plan import _plan
from datakit.dedup.tables import _capped_expand, _Search, _Table

__all__ = ["near_duplicate_pairs", "nearest_neighbors"]

logger = logging.getLogger(__name__)


_DONE = object()


def _run_tasks(search: _Search, tasks: list[tuple], n_jobs: int):
    """Yield every task's chunks; with ``n_jobs > 1`` threads run the tasks through a bounded queue."""
    if n_jobs <= 1 or len(tasks) <= 1:
        for task in tasks:
            yield from search.run(task)
        return
    import queue
    import threading

    chunks: queue.Queue = queue.Queue(maxsize=2 * n_jobs)  # bounded: workers wait for the consumer
    todo = iter(tasks)
    lock, stop = threading.Lock(), threading.Event()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                chunks.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def worker() -> None:
        try:
            while not stop.is_set():
                with lock:
                    task = next(todo, None)
                if task is None:
                    break
                for found in search.run(task):
                    if not put(found):
                        return
        except Exception as exc:  # re-raised in the consumer
            put(exc)
        finally:
            put(_DONE)

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(min(n_jobs, len(tasks)))]
    for t in threads:
        t.start()
    try:
        running = len(threads)
        while running:
            item = chunks.get()
            if item is _DONE:
                running -= 1
            elif isinstance(item, Exception):
                raise item
            else:
                yield item
    finally:
        stop.set()
        for t in threads:
            t.join()


def _search_chunks(query: np.ndarray, db: np.ndarray, radius: int, self_join: bool, n_jobs: int = 1,
                   tables: list[_Table] | None = None, blocks=None, radii=None):
    """Yield verified ``(i, j, d)`` chunks (compact dtypes) between ``query`` and ``db``, as they are found.

    Within one set (``self_join``) each unordered pair comes once, as ``(i, j)``
    or ``(j, i)``. Without ``blocks`` the plan is chosen here (brute force
    when the planner says so).
    """
    if len(query) == 0 or len(db) == 0:
        return
    idx = _index_dtype(len(query), len(db))
    if blocks is None:
        plan = _plan(len(db), len(query), radius, self_join)
        if plan is None:
            yield from _search_brute(query, db, radius, self_join)
            return
        blocks, radii = plan
    if isinstance(radii, int):  # one radius for every block
        radii = [radii] * len(blocks)
    search = _Search(query, radius, radii, blocks, self_join, tables)
    if tables is not None:  # given (a fitted HashIndex): every block at once
        rounds = [list(range(len(blocks)))]
    else:  # built here: one block's table at a time (a pair is kept from its first block, whatever the order)
        rounds = [[b] for b, s in enumerate(radii) if s >= 0]
    n_pairs = n_tasks = 0
    for round_ in rounds:
        if tables is None:
            search.load(round_[0], _Table(db, *blocks[round_[0]]))
        tasks = search.tasks(round_)
        n_tasks += len(tasks)
        for i, j, d in _run_tasks(search, tasks, n_jobs):
            n_pairs += len(i)
            yield i.astype(idx, copy=False), j.astype(idx, copy=False), d.astype(np.uint8, copy=False)
        if tables is None:
            search.unload(round_[0])
    logger.debug("multi-index search: %d blocks, radii %s, %d tasks, %d pairs", len(blocks), radii,
                 n_tasks, n_pairs)


def _search_tables(query: np.ndarray, db: np.ndarray, radius: int, blocks: list[tuple[int, int]], radii,
                   self_join: bool, tables: list[_Table] | None = None, n_jobs: int = 1
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Multi-index search with a given block layout: pairs (K, 2) int64 sorted by ``i`` then ``j``, distances (K,)."""
    chunks = _search_chunks(query, db, radius, self_join, n_jobs=n_jobs, tables=tables, blocks=blocks, radii=radii)
    return _collect_sorted(chunks, len(query), len(db), self_join)


def _search_brute(query: np.ndarray, db: np.ndarray, radius: int, self_join: bool):
    """Chunked quadratic scan; yields ``(i, j, d)`` chunks, ``i < j`` within one set."""
    idx = _index_dtype(len(query), len(db))
    step = max(1, _limits.CHUNK // max(1, len(db)))
    for lo in range(0, len(query), step):
        q = query[lo:lo + step]
        first = lo + 1 if self_join else 0  # self: only columns j > i
        d = popcount64(q[:, None] ^ db[None, first:])
        if self_join:
            d[np.tril_indices(len(q), -1, d.shape[1])] = 255  # j <= i within the chunk
        i, j = np.nonzero(d <= radius)
        if len(i):
            yield (i + lo).astype(idx), (j + first).astype(idx), d[i, j].astype(np.uint8)


def _collect_sorted(chunks, n_rows: int, n_cols: int, self_join: bool) -> tuple[np.ndarray, np.ndarray]:
    """Gather ``(i, j, d)`` chunks into pairs sorted by ``i`` then ``j`` (``i < j`` within one set).

    Each pair is packed into one uint64 key ``(i * n_cols + j) * 64 + d`` and
    the keys are sorted in place inside the result's buffer: the peak is the
    result itself (24 bytes per pair) plus one capped chunk, with no ``lexsort``.
    """
    packed = n_rows * n_cols * 64 < 2**64
    keys, parts = [], []
    for i, j, d in chunks:
        if self_join:
            i, j = np.minimum(i, j), np.maximum(i, j)
        if packed:
            k = i.astype(np.uint64) * np.uint64(n_cols)
            k += j.astype(np.uint64)
            k <<= np.uint64(6)
            k |= d.astype(np.uint64)
            keys.append(k)
        else:
            parts.append((i.astype(np.int64), j.astype(np.int64), d))
    if not packed:
        if not parts:
            return np.zeros((0, 2), dtype=np.int64), np.zeros(0, dtype=np.int64)
        i, j, d = (np.concatenate(p) for p in zip(*parts))
        order = np.lexsort((j, i))
        return np.stack([i[order], j[order]], axis=1), d[order].astype(np.int64)
    if not keys:
        return np.zeros((0, 2), dtype=np.int64), np.zeros(0, dtype=np.int64)
    # The keys are sorted in the back half of the result's own buffer and decoded front to back:
    # pair k overwrites only keys 0..k, which were read already, so the peak is the result itself.
    total = sum(len(k) for k in keys)
    buf = np.empty(2 * total, dtype=np.uint64)
    key = buf[total:]
    np.concatenate(keys, out=key)
    keys.clear()
    key.sort()
    dist = np.empty(total, dtype=np.int64)
    for lo in range(0, total, _limits.MAX_CANDIDATES):
        k = key[lo:lo + _limits.MAX_CANDIDATES].copy()  # read before the writes below reach it
        hi = lo + len(k)
        dist[lo:hi] = k & np.uint64(63)
        k >>= np.uint64(6)
        i = k // np.uint64(n_cols)
        buf[2 * lo + 1:2 * hi:2] = k - i * np.uint64(n_cols)
        buf[2 * lo:2 * hi:2] = i
    pairs = buf.view(np.int64).reshape(total, 2)
    return pairs, dist


class _Distinct:
    """Equal hashes collapsed: ``values`` (sorted, distinct) and each value's members as CSR over ``order``."""

    def __init__(self, hashes: np.ndarray) -> None:
        index = _index_dtype(len(hashes) + 1)  # int32 below 2**31 items: 12 bytes an item, not 24
        self.order = np.argsort(hashes, kind="stable").astype(index)  # members of a value: ascending indices
        sorted_ = hashes[self.order]
        new = np.ones(len(hashes), dtype=bool)
        new[1:] = sorted_[1:] != sorted_[:-1]
        self.values = sorted_[new]
        del sorted_
        self.start = np.flatnonzero(new).astype(index)
        self.count = np.diff(np.append(self.start, index(len(hashes))))
        self.singletons = bool(len(self.values) == len(hashes))

    def first(self, u: np.ndarray) -> np.ndarray:
        return self.order[self.start[u]]

    def equal_pairs(self):
        """Yield ``(i, j)`` chunks of all pairs of equal hashes, ``i < j``."""
        if self.singletons:
            return
        ends = np.repeat(self.start + self.count, self.count)
        pos = np.arange(len(self.order), dtype=ends.dtype)
        c = ends - pos - 1
        rows = pos[c > 0]
        c = c[c > 0]
        del ends, pos
        for r0, r1, cc, partners in _capped_expand(rows + 1, c):
            yield self.order[np.repeat(rows[r0:r1], cc)], self.order[partners]


def _expand_distinct(chunks, left: _Distinct, right: _Distinct):
    """Map ``(u, v, d)`` chunks over distinct values to ``(i, j, d)`` chunks over the original items."""
    for u, v, d in chunks:
        if left.singletons and right.singletons:
            yield left.first(u), right.first(v), d
            continue
        cu, cv = left.count[u].astype(np.int64), right.count[v].astype(np.int64)
        for r0, r1, c, local in _capped_expand(np.zeros(len(u), dtype=np.intp), cu * cv):
            owner = np.repeat(np.arange(r0, r1), c)
            w = cv[owner]
            yield (left.order[left.start[u[owner]] + local // w],
                   right.order[right.start[v[owner]] + local % w], d[owner])


def _pair_chunks(query: np.ndarray, db: np.ndarray | None, radius: int, n_jobs: int):
    """Yield ``(i, j, d)`` chunks of every pair within ``radius`` (``db=None``: within ``query``).

    Equal hashes are collapsed first, so a value held by many items is searched
    once and its pairs are written out directly (no candidate lists).
    """
    left = _Distinct(query)
    right = left if db is None else _Distinct(db)
    idx = _index_dtype(len(query), len(query) if db is None else len(db))
    if db is None:
        for i, j in left.equal_pairs():
            yield i.astype(idx, copy=False), j.astype(idx, copy=False), np.zeros(len(i), dtype=np.uint8)
    found = _search_chunks(left.values, right.values, radius, self_join=db is None, n_jobs=n_jobs)
    for i, j, d in _expand_distinct(found, left, right):
        yield i.astype(idx, copy=False), j.astype(idx, copy=False), d


def near_duplicate_pairs(hashes: np.ndarray, max_distance: int, *, other: np.ndarray | None = None,
                         return_distances: bool = False, n_jobs: int | None = None):
    """All pairs of 64-bit hashes within ``max_distance`` bits of each other.

    Parameters
    ----------
    hashes : ndarray, shape (N,), uint64
    max_distance : int
        Largest Hamming distance (bits out of 64) that counts as a near
        duplicate, 0..32 (0: equal hashes).
    other : ndarray, shape (M,), uint64, optional
        Search between ``hashes`` and ``other`` instead of within ``hashes``.
    return_distances : bool, default False
        Also return each pair's Hamming distance.
    n_jobs : int, optional
        Threads for the search (None: 1; -1: one per core). numpy releases
        the GIL in the inner loops, so 2 threads run about twice as fast on 2
        idle cores.

    Returns
    -------
    pairs : ndarray, shape (K, 2), int64
        Within ``hashes``: rows ``(i, j)`` with ``i < j``. With ``other``: rows
        ``(i, j)`` indexing ``hashes`` and ``other``. Sorted by ``i`` then ``j``.
    distances : ndarray, shape (K,), int64
        Only with ``return_distances=True``.

    Raises
    ------
    TypeError
        If a hash array is not uint64, or ``max_distance`` is not an int.
    ValueError
        If a hash array is not 1-D, ``max_distance`` is outside 0..32, or ``n_jobs`` is invalid.

    Notes
    -----
    Sub-quadratic multi-index hashing (see the module docstring); the output
    itself can be quadratic (N equal hashes give N(N-1)/2 pairs), and the
    peak memory is about the output (24 bytes a pair) plus a bounded working
    set. When only the groups are needed, :func:`~datakit.dedup.near_duplicate_groups`
    never materialises the pairs.

    Examples
    --------
    >>> h = np.array([0b1011, 0b0011, 0xFF00], dtype=np.uint64)
    >>> near_duplicate_pairs(h, 1, return_distances=True)
    (array([[0, 1]]), array([1]))
    >>> near_duplicate_pairs(h, 0, other=np.array([0xFF00], dtype=np.uint64))
    array([[2, 0]])
    """
    query = _check_hashes(hashes, "hashes")
    radius = _check_distance(max_distance)
    jobs = _check_jobs(n_jobs)
    db = None if other is None else _check_hashes(other, "other")
    chunks = _pair_chunks(query, db, radius, jobs)
    pairs, dist = _collect_sorted(chunks, len(query), len(query) if db is None else len(db), db is None)
    return (pairs, dist) if return_distances else pairs


def _nearest_from_pairs(n: int, pairs: np.ndarray, dist: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Nearest match of each of ``n`` items from (i, j) pairs and their distances.

    Ties go to the smallest ``j``; items without a pair get index and distance -1.
    """
    index = np.full(n, -1, dtype=np.int64)
    distance = np.full(n, -1, dtype=np.int64)
    if len(pairs):
        order = np.lexsort((pairs[:, 1], dist, pairs[:, 0]))
        i, j, d = pairs[order, 0], pairs[order, 1], dist[order]
        first = np.ones(len(i), dtype=bool)
        first[1:] = i[1:] != i[:-1]
        index[i[first]] = j[first]
        distance[i[first]] = d[first]
    return index, distance


def nearest_neighbors(hashes: np.ndarray, max_distance: int, *, other: np.ndarray | None = None
                      ) -> tuple[np.ndarray, np.ndarray]:
    """Nearest other hash of each hash, within ``max_distance``.

    Parameters
    ----------
    hashes : ndarray, shape (N,), uint64
    max_distance : int
        0..32.
    other : ndarray, shape (M,), uint64, optional
        Search ``other`` instead of the rest of ``hashes``.

    Returns
    -------
    index : ndarray, shape (N,), int64
        Index (into ``hashes``, or ``other``) of the nearest hash, the smallest
        index among ties; -1 where none is within ``max_distance``.
    distance : ndarray, shape (N,), int64
        Its Hamming distance; -1 where there is none.

    Examples
    --------
    >>> nearest_neighbors(np.array([0, 3, 1, 0xFFFF], dtype=np.uint64), 2)
    (array([ 2,  2,  0, -1]), array([ 1,  1,  1, -1]))
    """
    query = _check_hashes(hashes, "hashes")
    pairs, dist = near_duplicate_pairs(query, max_distance, other=other, return_distances=True)
    if other is None:  # both directions
        pairs = np.concatenate([pairs, pairs[:, ::-1]])
        dist = np.concatenate([dist, dist])
    return _nearest_from_pairs(len(query), pairs, dist)
