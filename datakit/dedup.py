"""Exact and near-duplicate search over content ids and 64-bit perceptual hashes.

Near-duplicate search is sub-quadratic **multi-index hashing** (Norouzi, Punjani
and Fleet, "Fast Search in Hamming Space with Multi-Index Hashing", CVPR 2012),
in pure numpy:

* The 64 bits are cut into ``m`` disjoint blocks. If two hashes differ in at
  most ``r`` bits, then by the pigeonhole principle some block differs in at most
  ``s = r // m`` bits (sharper: with ``r = s m + a``, one of the first ``a + 1``
  blocks is within ``s`` or one of the others within ``s - 1``, so ``r = 6``
  searches one 22-bit block at radius 2 and two at radius 1).
* For each block, a direct-addressed table (an occupancy bitmap and packed
  CSR start/count over the ``2**width`` block values) lists the hashes holding
  each value. Every hash looks up the values within ``s`` bits of its own
  block (``1 + w + w(w-1)/2`` values for ``s = 2``), vectorised and chunked.
* Every candidate pair is verified with a vectorised popcount of the XOR, and a
  pair that several blocks find is kept only from the first one (so no global
  ``unique`` over the candidates is needed).
* Within one set, an unordered pair is enumerated only from the hash whose block
  value is the smaller (a flip mask whose top bit is 0 in the query), which
  halves the lookups.

Memory is bounded for clustered hashes too (the pHashes of augmented or
re-encoded images: many equal or near-equal hashes, so a few buckets are very
heavy):

* Equal hashes are collapsed first: the search runs over distinct values and
  the pairs among equal hashes are written out directly.
* Candidate lists are cut before they are materialised: the bucket sizes give
  each query's candidate count, so a chunk never holds more than
  ``_MAX_CANDIDATES`` candidates (a heavy bucket is split over chunks).
* Verified pairs stream out chunk by chunk, with int32 indices (below 2**31
  items) and uint8 distances. :func:`near_duplicate_pairs` packs each pair
  into one uint64 key, sorts the keys inside the result's own buffer and
  decodes them in place (the peak is about the result itself, 24 bytes a
  pair); :func:`near_duplicate_groups` feeds the chunks to a
  connected-components merge with a bounded edge buffer and never holds the
  pair list; :func:`confirmed_duplicate_groups` keeps the candidate pairs as
  int32 (8 bytes a pair) and asks for thumbnails in bounded batches.

``m`` is chosen per call from a cost model (``m = 3`` blocks of 22, 21 and 21
bits, radius 2 in each, for ``r = 8`` and a million hashes); when the model
says the quadratic scan is cheaper (tiny inputs, or ``r`` above about 20, where
almost every pair is a candidate) a chunked brute force is used. Both give the
same answer. With the block width capped at 24 bits, the candidate term grows
as ``n**2 / 2**22``: fine to a few million hashes at ``r = 8``.

Examples
--------
>>> import numpy as np
>>> h = np.array([0, 1, 3, 2**63, 0xFFFF], dtype=np.uint64)
>>> near_duplicate_pairs(h, 2)
array([[0, 1],
       [0, 2],
       [0, 3],
       [1, 2],
       [1, 3]])
>>> near_duplicate_groups(h, 1)
array([0, 0, 0, 0, 4])
>>> exact_duplicate_groups(["a", "b", "a"])
array([0, 1, 0])
"""
from __future__ import annotations

import itertools
import logging
import math
import os
from typing import Callable, Sequence

import numpy as np

__all__ = [
    "near_duplicate_pairs",
    "near_duplicate_groups",
    "confirmed_duplicate_groups",
    "thumbnail",
    "exact_duplicate_groups",
    "nearest_neighbors",
    "HashIndex",
    "popcount64",
    "MAX_DISTANCE",
]

logger = logging.getLogger(__name__)

#: Largest supported search radius (bits out of 64).
MAX_DISTANCE = 32

#: Widest block (bits) a direct-addressed table may have: 2**24 int64 spans = 128 MiB.
_MAX_TABLE_BITS = 24
#: Target number of looked-up keys (or brute-force cells) per vectorised chunk.
_CHUNK = 1 << 21
#: Keys per vectorised lookup chunk (small enough to stay in cache).
_LOOKUP_CHUNK = 1 << 18

# Relative per-element costs for the planner (measured roughly on numpy 2.x).
_COST_LOOKUP = 4.0  # one key: xor, bitmap gather, nonzero
_COST_CANDIDATE = 4.0  # one candidate: expand, gather, xor, popcount
_COST_BRUTE = 1.0  # one cell of the brute-force scan
_COST_TABLE = 1.0  # one table bucket (bincount + cumsum)


# ---------------------------------------------------------------------------
# popcount and validation
# ---------------------------------------------------------------------------

_BYTE_POP = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)


def popcount64(x: np.ndarray) -> np.ndarray:
    """Number of set bits of each element.

    Parameters
    ----------
    x : ndarray of uint64, any shape

    Returns
    -------
    ndarray of uint8, same shape as ``x``
    """
    x = np.asarray(x, dtype=np.uint64)
    if hasattr(np, "bitwise_count"):  # numpy >= 2.0
        return np.bitwise_count(x)
    return _BYTE_POP[np.ascontiguousarray(x).view(np.uint8).reshape(*x.shape, 8)].sum(-1, dtype=np.uint8)


def _check_hashes(hashes, name: str) -> np.ndarray:
    array = np.asarray(hashes)
    if array.dtype != np.uint64:
        if array.size == 0 and array.ndim == 1:
            return np.zeros(0, dtype=np.uint64)
        raise TypeError(
            f"{name} must be a 1-D uint64 array of 64-bit hashes, got dtype {array.dtype}. "
            "Convert with np.asarray(values, dtype=np.uint64) (a manifest's `phash` column is uint64)."
        )
    if array.ndim != 1:
        raise ValueError(f"{name} must be 1-D (one hash per item), got shape {array.shape}")
    return np.ascontiguousarray(array)


def _check_distance(max_distance) -> int:
    if isinstance(max_distance, (bool, np.bool_)) or not isinstance(max_distance, (int, np.integer)):
        raise TypeError(f"max_distance must be an int in 0..{MAX_DISTANCE}, got {max_distance!r}")
    if not 0 <= int(max_distance) <= MAX_DISTANCE:
        raise ValueError(f"max_distance must be in 0..{MAX_DISTANCE} (bits out of 64), got {max_distance}")
    return int(max_distance)


# ---------------------------------------------------------------------------
# planning
# ---------------------------------------------------------------------------


def _ball(width: int, radius: int) -> int:
    """Number of values within ``radius`` bits of a ``width``-bit value."""
    return sum(math.comb(width, k) for k in range(min(radius, width) + 1))


def _blocks(m: int) -> list[tuple[int, int]]:
    """``m`` contiguous blocks covering 64 bits, as ``(shift, width)``, widest first."""
    base, extra = divmod(64, m)
    widths = [base + (1 if k < extra else 0) for k in range(m)]
    out, shift = [], 0
    for w in widths:
        out.append((shift, w))
        shift += w
    return out


def _block_radii(radius: int, m: int) -> list[int]:
    """Per-block search radii for ``m`` blocks (Norouzi et al. 2012, Proposition 1).

    With ``radius = s * m + a`` (``0 <= a < m``), two hashes within ``radius``
    agree to within ``s`` bits on one of the first ``a + 1`` blocks or to within
    ``s - 1`` bits on one of the others (else they would differ in at least
    ``(a + 1)(s + 1) + (m - a - 1) s = radius + 1`` bits). A radius of -1 means
    the block need not be searched.
    """
    s, a = divmod(radius, m)
    return [s] * (a + 1) + [s - 1] * (m - a - 1)


def _plan(n_db: int, n_query: int, radius: int, self_join: bool
          ) -> tuple[list[tuple[int, int]], list[int]] | None:
    """Choose blocks and per-block radii minimising the estimated cost; None = brute force."""
    pairs = n_query * (n_db - 1) / 2 if self_join else n_query * n_db
    best, best_cost = None, _COST_BRUTE * pairs
    for m in range(1, 65):
        blocks = _blocks(m)
        if blocks[0][1] > _MAX_TABLE_BITS:
            continue
        radii = _block_radii(radius, m)
        if radii[0] > 3:  # the flip-mask enumeration grows too fast; more blocks are cheaper
            continue
        cost = 0.0
        for (_, w), s in zip(blocks, radii):
            if s < 0:
                continue
            ball = _ball(w, s)
            lookups = n_query * ball * (0.5 if self_join else 1.0)
            cands = lookups * n_db / 2.0**w
            cost += _COST_LOOKUP * lookups + _COST_CANDIDATE * cands + _COST_TABLE * 2.0**w + 2.0 * n_db
        if cost < best_cost:
            best, best_cost = (blocks, radii), cost
    return best


# ---------------------------------------------------------------------------
# the search
# ---------------------------------------------------------------------------


class _Table:
    """CSR table of one block: ``order[start:start + count]`` hold the hashes whose block is ``v``.

    ``occupied`` (bool) answers "is anything there" with the cheapest gather
    (and hits numpy's fast ``flatnonzero`` path); ``span`` packs each bucket's
    start (low 40 bits) and count (high bits) into one int64 so a
    hit costs one more gather; ``sorted_hashes`` (hashes in table order) lets
    candidates be verified before their original index is looked up.
    """

    def __init__(self, hashes: np.ndarray, shift: int, width: int) -> None:
        self.shift, self.width = shift, width
        self.keys = ((hashes >> np.uint64(shift)) & np.uint64((1 << width) - 1)).astype(np.intp)
        counts = np.bincount(self.keys, minlength=1 << width).astype(np.int64)
        self.occupied = counts > 0
        self.span = np.cumsum(counts) - counts  # bucket starts ...
        self.span |= counts << _SPAN_SHIFT  # ... and counts, in one int64
        del counts
        self.order = np.argsort(self.keys, kind="stable").astype(np.intp)
        self.sorted_hashes = hashes[self.order]

    def block_distance(self, xor: np.ndarray) -> np.ndarray:
        return popcount64((xor >> np.uint64(self.shift)) & np.uint64((1 << self.width) - 1))


#: ``span = start | count << _SPAN_SHIFT``: starts below 2**40 (a trillion hashes).
_SPAN_SHIFT = 40


def _masks_by_top_bit(width: int, radius: int) -> list[tuple[int, np.ndarray]]:
    """Nonzero flip masks of ``width`` bits with at most ``radius`` bits, grouped by top bit."""
    out = []
    for top in range(width):
        masks = [1 << top]
        for k in range(1, radius):
            masks += [(1 << top) | sum(1 << b for b in low) for low in itertools.combinations(range(top), k)]
        out.append((top, np.array(masks, dtype=np.intp)))
    return out


def _expand(starts: np.ndarray, counts: np.ndarray, ends: np.ndarray | None = None) -> np.ndarray:
    """Concatenate ``arange(start, start + count)`` for each row (CSR expansion).

    ``ends`` is ``np.cumsum(counts)`` when the caller has it already.
    """
    if ends is None:
        ends = np.cumsum(counts)
    total = int(ends[-1]) if len(ends) else 0
    if total == 0:
        return np.zeros(0, dtype=np.intp)
    base = np.repeat(starts - (ends - counts), counts)
    base += np.arange(total, dtype=np.intp)
    return base


#: Most candidate pairs (or expanded output pairs) materialised at once per thread; about 40 bytes
#: each in temporaries, so 2**20 candidates stay under 50 MiB however heavy a bucket is.
_MAX_CANDIDATES = 1 << 20
#: Edges buffered before they are merged into the connected components (int32 pairs: 16 MiB).
_MAX_EDGES = 1 << 21
#: Most thumbnails (1024 float32 = 4 KiB each) held at once by :func:`confirmed_duplicate_groups`.
_MAX_THUMBNAILS = 1 << 15
#: Candidate pairs whose thumbnails are compared at once (2 x 4 KiB each: 32 MiB).
_PAIR_CHUNK = 1 << 12
#: From this many thumbnail batches on, candidate pairs are sorted by batch once instead of scanned per batch.
_SORT_BATCHES = 64


def _capped_expand(starts: np.ndarray, counts: np.ndarray, cap: int | None = None):
    """CSR expansion of rows ``(start, count)`` cut into pieces of at most ``cap`` candidates.

    Yields ``(r0, r1, c, pos)``: the piece covers rows ``r0:r1``, ``c`` (shape
    ``(r1 - r0,)``) is each row's share of the piece and ``pos`` the expanded
    positions (shape ``(c.sum(),)``). A row holding more than ``cap`` candidates
    (a heavy bucket) is split over several pieces, so memory is bounded by
    ``cap`` (default :data:`_MAX_CANDIDATES`), never by the largest bucket.
    """
    if cap is None:
        cap = _MAX_CANDIDATES
    if not len(counts):
        return
    ends = np.cumsum(counts)
    total = int(ends[-1])
    if total <= cap:
        if total:
            yield 0, len(counts), counts, _expand(starts, counts, ends)
        return
    for lo in range(0, total, cap):
        hi = min(lo + cap, total)
        r0 = int(np.searchsorted(ends, lo, side="right"))
        r1 = int(np.searchsorted(ends, hi - 1, side="right")) + 1
        c = counts[r0:r1].copy()
        s = starts[r0:r1].copy()
        skip = lo - int(ends[r0] - counts[r0])
        s[0] += skip
        c[0] -= skip
        c[-1] -= int(ends[r1 - 1]) - hi
        yield r0, r1, c, _expand(s, c)


class _Search:
    """One multi-index search, cut into independent tasks (one per block and mask group).

    Each task yields verified ``(i, j, distance)`` chunks whose candidate
    count is capped (:data:`_MAX_CANDIDATES`); a pair several blocks find is
    kept only from the first (no global ``unique``). Tasks only call numpy
    routines that release the GIL, so threads run them in parallel.
    """

    def __init__(self, query: np.ndarray, radius: int, radii: list[int], tables: list[_Table], self_join: bool):
        self.query, self.radius, self.radii, self.tables = query, radius, radii, tables
        self.self_join = self_join
        self.qkeys = [t.keys if self_join else
                      ((query >> np.uint64(t.shift)) & np.uint64((1 << t.width) - 1)).astype(np.intp)
                      for t in tables]

    def tasks(self) -> list[tuple]:
        out = []
        for b, (table, s) in enumerate(zip(self.tables, self.radii)):
            if s < 0:
                continue
            if self.self_join:
                out.append((b, "bucket", None))
                if s:
                    out += [(b, top, masks) for top, masks in _masks_by_top_bit(table.width, s)]
            else:
                masks = [np.array([0], dtype=np.intp)]
                if s:
                    masks += [m for _, m in _masks_by_top_bit(table.width, s)]
                out.append((b, None, np.concatenate(masks)))
        # largest first, so two threads finish together
        return sorted(out, key=lambda t: -(len(t[2]) if t[2] is not None else 1))

    def verify(self, i: np.ndarray, pos: np.ndarray, block: int, i_hashes: np.ndarray):
        """Candidates: query rows ``i`` (hashes ``i_hashes``) against positions ``pos`` of table ``block``."""
        table = self.tables[block]
        xor = i_hashes ^ table.sorted_hashes[pos]
        d = popcount64(xor)
        keep = np.flatnonzero(d <= self.radius)
        if not len(keep):
            return None
        i, j, xor, d = i[keep], table.order[pos[keep]], xor[keep], d[keep]
        if block:
            first = np.ones(len(i), dtype=bool)
            for earlier, s in zip(self.tables[:block], self.radii[:block]):
                if s >= 0:
                    first &= earlier.block_distance(xor) > s
            i, j, d = i[first], j[first], d[first]
        return i, j, d

    def run(self, task: tuple):
        """Yield the verified ``(i, j, d)`` chunks of one task."""
        b, top, masks = task
        table, qkeys = self.tables[b], self.qkeys[b]
        if top == "bucket":  # mask 0 within one set: pairs inside a bucket, each once
            order = table.order
            span = table.span[qkeys[order]]
            ends = (span & ((1 << _SPAN_SHIFT) - 1)) + (span >> _SPAN_SHIFT)
            del span
            for lo in range(0, len(order), _CHUNK):
                pos = np.arange(lo, min(lo + _CHUNK, len(order)), dtype=np.intp)
                c = ends[lo:lo + _CHUNK] - pos - 1
                rows = pos[c > 0]
                c = c[c > 0]
                for r0, r1, cc, partners in _capped_expand(rows + 1, c):
                    rr = np.repeat(rows[r0:r1], cc)
                    found = self.verify(order[rr], partners, b, table.sorted_hashes[rr])
                    if found is not None:
                        yield found
            return
        if top is None:
            queries = np.arange(len(self.query), dtype=np.intp)
        else:  # only queries whose block has a 0 at the mask's top bit: key ^ mask > key
            queries = np.flatnonzero(((qkeys >> top) & 1) == 0)
        n_masks = len(masks)
        step = max(1, _LOOKUP_CHUNK // n_masks)
        for lo in range(0, len(queries), step):
            qi = queries[lo:lo + step]
            keys = (qkeys[qi][:, None] ^ masks[None, :]).ravel()
            hit = np.flatnonzero(np.take(table.occupied, keys))
            if not len(hit):
                continue
            span = np.take(table.span, keys[hit])
            rows = qi[hit // n_masks]
            for r0, r1, c, pos in _capped_expand(span & ((1 << _SPAN_SHIFT) - 1), span >> _SPAN_SHIFT):
                rr = np.repeat(rows[r0:r1], c)
                found = self.verify(rr, pos, b, self.query[rr])
                if found is not None:
                    yield found


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


def _index_dtype(*sizes: int):
    return np.int32 if max(sizes) < 2**31 else np.int64


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
    if tables is None:
        tables = [_Table(db, shift, width) for shift, width in blocks]
    search = _Search(query, radius, radii, tables, self_join)
    tasks = search.tasks()
    n_pairs = 0
    for i, j, d in _run_tasks(search, tasks, n_jobs):
        n_pairs += len(i)
        yield i.astype(idx, copy=False), j.astype(idx, copy=False), d.astype(np.uint8, copy=False)
    logger.debug("multi-index search: %d blocks, radii %s, %d tasks, %d pairs", len(tables), radii,
                 len(tasks), n_pairs)


def _search_tables(query: np.ndarray, db: np.ndarray, radius: int, blocks: list[tuple[int, int]], radii,
                   self_join: bool, tables: list[_Table] | None = None, n_jobs: int = 1
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Multi-index search with a given block layout: pairs (K, 2) int64 sorted by ``i`` then ``j``, distances (K,)."""
    chunks = _search_chunks(query, db, radius, self_join, n_jobs=n_jobs, tables=tables, blocks=blocks, radii=radii)
    return _collect_sorted(chunks, len(query), len(db), self_join)


def _search_brute(query: np.ndarray, db: np.ndarray, radius: int, self_join: bool):
    """Chunked quadratic scan; yields ``(i, j, d)`` chunks, ``i < j`` within one set."""
    idx = _index_dtype(len(query), len(db))
    step = max(1, _CHUNK // max(1, len(db)))
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
    for lo in range(0, total, _MAX_CANDIDATES):
        k = key[lo:lo + _MAX_CANDIDATES].copy()  # read before the writes below reach it
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
        self.order = np.argsort(hashes, kind="stable")  # members of a value: ascending indices
        sorted_ = hashes[self.order]
        new = np.ones(len(hashes), dtype=bool)
        new[1:] = sorted_[1:] != sorted_[:-1]
        self.values = sorted_[new]
        del sorted_
        self.start = np.flatnonzero(new)
        self.count = np.diff(np.append(self.start, len(hashes)))
        self.singletons = bool(len(self.values) == len(hashes))

    def first(self, u: np.ndarray) -> np.ndarray:
        return self.order[self.start[u]]

    def equal_pairs(self):
        """Yield ``(i, j)`` chunks of all pairs of equal hashes, ``i < j``."""
        if self.singletons:
            return
        ends = np.repeat(self.start + self.count, self.count)
        pos = np.arange(len(self.order), dtype=np.intp)
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
        cu, cv = left.count[u], right.count[v]
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


class _Components:
    """Connected components fed edges chunk by chunk (memory: the labels plus a bounded edge buffer)."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.label = np.arange(n, dtype=_index_dtype(max(n, 1)))
        self._edges: list[tuple[np.ndarray, np.ndarray]] = []
        self._buffered = 0

    def add(self, i: np.ndarray, j: np.ndarray) -> None:
        a, b = self.label[i], self.label[j]
        keep = a != b
        if keep.any():
            self._edges.append((a[keep], b[keep]))
            self._buffered += int(keep.sum())
            if self._buffered >= _MAX_EDGES:
                self._merge()

    def _merge(self) -> None:
        if not self._edges:
            return
        from scipy.sparse import coo_matrix
        from scipy.sparse.csgraph import connected_components

        a = np.concatenate([e[0] for e in self._edges])
        b = np.concatenate([e[1] for e in self._edges])
        self._edges, self._buffered = [], 0
        graph = coo_matrix((np.ones(len(a), dtype=np.int8), (a, b)), shape=(self.n, self.n))
        del a, b
        _, component = connected_components(graph, directed=False)
        self.label = component.astype(self.label.dtype)[self.label]

    def labels(self) -> np.ndarray:
        """Component label of each node, shape (n,)."""
        self._merge()
        return self.label


def _check_jobs(n_jobs) -> int:
    """scikit-learn's convention: None = 1, -1 = every core, k > 0 = k threads."""
    if n_jobs is None:
        return 1
    if isinstance(n_jobs, bool) or not isinstance(n_jobs, (int, np.integer)) or n_jobs == 0 or n_jobs < -1:
        raise ValueError(f"n_jobs must be None, -1 or a positive int, got {n_jobs!r}")
    return (os.cpu_count() or 1) if n_jobs == -1 else int(n_jobs)


# ---------------------------------------------------------------------------
# public API
# ---------------------------------------------------------------------------


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
    set. When only the groups are needed, :func:`near_duplicate_groups`
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
        As in :func:`near_duplicate_pairs` (0..32).
    n_jobs : int, optional
        Threads, as in :func:`near_duplicate_pairs`.

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


def thumbnail(image: np.ndarray) -> np.ndarray:
    """Zero-mean, unit-norm 32x32 grayscale thumbnail, shape (1024,), float32.

    The dot product of two thumbnails is the Pearson correlation of the images
    at 32x32, which ignores brightness and contrast changes. A flat image (no
    structure) gives an all-zero thumbnail.
    """
    from PIL import Image

    array = np.asarray(image)
    if array.ndim == 3:
        array = array[..., :3].astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    im = Image.fromarray(np.clip(array, 0, 255).astype(np.uint8))
    if im.size != (32, 32):
        im = im.resize((32, 32), Image.BILINEAR)
    t = np.asarray(im, dtype=np.float32).ravel()
    t = t - t.mean()
    norm = float(np.linalg.norm(t))
    return t / norm if norm > 1e-3 else np.zeros_like(t)


def confirmed_duplicate_groups(hashes: np.ndarray, max_distance: int, thumbnails: Callable[[np.ndarray], np.ndarray],
                               *, min_similarity: float = 0.98, n_jobs: int | None = None) -> np.ndarray:
    """Connected components of the near-duplicate graph, each edge confirmed by pixels.

    A perceptual hash alone is a weak witness on small images: on 28x28
    digits many different handwritten "1"s share a hash. Candidate pairs come
    from :func:`near_duplicate_pairs`; a pair is an edge only when the images'
    thumbnails (see :func:`thumbnail`) correlate at ``min_similarity`` or more.
    Equal hashes are candidates like any other pair.

    Parameters
    ----------
    hashes : ndarray, shape (N,), uint64
    max_distance : int
        Hash radius of the candidate search (0..32).
    thumbnails : callable
        ``thumbnails(indices) -> ndarray (len(indices), 1024)`` of the images
        at those indices (only the images in candidate pairs are asked for,
        ``indices`` sorted and distinct). With at most ``_MAX_THUMBNAILS``
        (32,768) such images it is called once; beyond that it is called once
        per batch of whole candidate components, so each image is asked for
        once (a single component larger than a batch is checked in blocks,
        and its images are asked for once per block pair).
    min_similarity : float, default 0.98
        Smallest thumbnail correlation that confirms a pair.
    n_jobs : int, optional
        Threads for the hash search.

    Returns
    -------
    ndarray, shape (N,), int64
        Group id of each image: the smallest index in its group.

    Examples
    --------
    >>> x = np.zeros((3, 28, 28), np.uint8); x[:, 4:24, 12:16] = 255; x[2, 4:24, 4:8] = 255
    >>> h = np.array([7, 7, 7], dtype=np.uint64)   # equal hashes, but image 2 differs
    >>> confirmed_duplicate_groups(h, 0, lambda idx: np.stack([thumbnail(x[i]) for i in idx]))
    array([0, 0, 2])
    """
    hashes = _check_hashes(hashes, "hashes")
    n = len(hashes)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    radius = _check_distance(max_distance)
    jobs = _check_jobs(n_jobs)
    # 1. candidate pairs, streamed into compact int32 lists and the candidate graph's components
    candidates = _Components(n)
    left, right = [], []
    for i, j, _ in _pair_chunks(hashes, None, radius, jobs):
        left.append(i)
        right.append(j)
        candidates.add(i, j)
    confirmed = _Components(n)
    if left:
        left = np.concatenate(left)  # one at a time: the chunk lists are freed in between
        right = np.concatenate(right)
        # 2. batches of whole candidate components, at most _MAX_THUMBNAILS images each, so every image's
        #    thumbnail is computed once and at most one batch of thumbnails is held
        comp = candidates.labels()
        nodes = np.zeros(n, dtype=bool)
        nodes[left] = True
        nodes[right] = True
        size = np.bincount(comp[nodes], minlength=n)
        batch_of = np.zeros(n, dtype=np.int32)
        filled, batch = 0, 0
        if int(size.sum()) > _MAX_THUMBNAILS:
            members = np.flatnonzero(size)
            for c, k in zip(members.tolist(), size[members].tolist()):
                if filled and filled + k > _MAX_THUMBNAILS:
                    batch, filled = batch + 1, 0
                batch_of[c] = batch
                filled += k
        del size, nodes
        if batch:
            pair_batch = batch_of[comp[left]]
            # many batches: one sort; few: a scan per batch (no int64 permutation of all pairs)
            if batch >= _SORT_BATCHES:
                bounds = np.zeros(batch + 2, dtype=np.int64)
                np.cumsum(np.bincount(pair_batch, minlength=batch + 1), out=bounds[1:])
                order = np.argsort(pair_batch, kind="stable")
                del pair_batch
        for b in range(batch + 1):
            if batch:
                sel = order[bounds[b]:bounds[b + 1]] if batch >= _SORT_BATCHES else np.flatnonzero(pair_batch == b)
                a_idx, b_idx = left[sel], right[sel]
            else:
                a_idx, b_idx = left, right
            keep = _confirm(a_idx, b_idx, thumbnails, min_similarity)
            confirmed.add(a_idx[keep], b_idx[keep])
    return _group_ids(n, confirmed.labels().astype(np.int64))


def _confirm(left: np.ndarray, right: np.ndarray, thumbnails: Callable[[np.ndarray], np.ndarray],
             min_similarity: float) -> np.ndarray:
    """Which candidate pairs the thumbnails confirm (bool, shape (K,)).

    All thumbnails of the pairs' images are asked for at once when there are at
    most :data:`_MAX_THUMBNAILS` of them; a bigger set (one huge component) is
    cut into node blocks and each block pair is checked with only two blocks of
    thumbnails in memory (those are then asked for more than once).
    """
    nodes = np.unique(np.concatenate([left, right]))
    keep = np.zeros(len(left), dtype=bool)
    half = max(1, _MAX_THUMBNAILS // 2)
    n_blocks = -(-len(nodes) // half) if len(nodes) > _MAX_THUMBNAILS else 1
    if n_blocks == 1:
        blocks = [nodes]
    else:
        logger.info("one near-duplicate component holds %d images; checking its %d candidate pairs in %d blocks",
                    len(nodes), len(left), n_blocks)
        blocks = [nodes[k * half:(k + 1) * half] for k in range(n_blocks)]
    width = half if n_blocks > 1 else max(1, len(nodes))
    block_l = (np.searchsorted(nodes, left) // width).astype(np.int32)  # held for every pair: keep it small
    block_r = (np.searchsorted(nodes, right) // width).astype(np.int32)
    for p in range(n_blocks):
        thumbs_p = np.asarray(thumbnails(blocks[p]), dtype=np.float32)
        for q in range(p, n_blocks):
            sel = np.flatnonzero(((block_l == p) & (block_r == q)) | ((block_l == q) & (block_r == p)))
            if not len(sel):
                continue
            thumbs_q = thumbs_p if q == p else np.asarray(thumbnails(blocks[q]), dtype=np.float32)
            both = np.concatenate([blocks[p], blocks[q]]) if q != p else blocks[p]
            table = thumbs_p if q == p else np.concatenate([thumbs_p, thumbs_q])
            slot_order = np.argsort(both, kind="stable")
            for lo in range(0, len(sel), _PAIR_CHUNK):  # two gathered thumbnails: 8 KiB a pair
                s = sel[lo:lo + _PAIR_CHUNK]
                a = table[slot_order[np.searchsorted(both[slot_order], left[s])]]
                b = table[slot_order[np.searchsorted(both[slot_order], right[s])]]
                sim = np.einsum("ij,ij->i", a, b)
                flat = ~a.any(1) & ~b.any(1)  # two flat images: duplicates when hashes agree
                keep[s] = (sim >= min_similarity) | flat
            del thumbs_q, table
    return keep
