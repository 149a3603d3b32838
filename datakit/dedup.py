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
  pair list; neither does :func:`confirmed_duplicate_groups`, which finds the
  candidate components first, then searches each batch of components again
  and checks its pairs against that batch's thumbnails (the others wait in a
  temporary file).

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
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np

__all__ = [
    "near_duplicate_pairs",
    "near_duplicate_groups",
    "confirmed_duplicate_groups",
    "thumbnail",
    "thumbnail_pixels",
    "exact_duplicate_groups",
    "nearest_neighbors",
    "HashIndex",
    "popcount64",
    "MAX_DISTANCE",
]

logger = logging.getLogger(__name__)

#: Largest supported search radius (bits out of 64).
MAX_DISTANCE = 32

#: Widest block (bits) a direct-addressed table may have: 2**24 int32 starts and a bitmap = 80 MiB.
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
    """CSR table of one block: ``order[starts[v]:starts[v + 1]]`` hold the hashes whose block is ``v``.

    ``occupied`` (bool) answers "is anything there" with the cheapest gather
    (and hits numpy's fast ``flatnonzero`` path); a hit then costs two more
    gathers (its bucket's start and end). ``sorted_hashes`` (hashes in table
    order) lets candidates be verified before their original index is looked
    up. Keys are uint32 and positions int32 below 2**31 hashes: about 16 bytes
    a hash plus 5 bytes a bucket.
    """

    def __init__(self, hashes: np.ndarray, shift: int, width: int) -> None:
        self.shift, self.width = shift, width
        self.keys = ((hashes >> np.uint64(shift)) & np.uint64((1 << width) - 1)).astype(np.uint32)
        counts = np.bincount(self.keys, minlength=1 << width)
        self.occupied = counts > 0
        index = _index_dtype(len(hashes) + 1)
        self.starts = np.zeros((1 << width) + 1, dtype=index)
        self.starts[1:] = np.cumsum(counts)
        del counts
        self.order = np.argsort(self.keys, kind="stable").astype(index)
        self.sorted_hashes = hashes[self.order]

    def buckets(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Start and size of the buckets of ``keys``."""
        start = np.take(self.starts, keys)
        return start, np.take(self.starts, keys + 1) - start



def _block_distance(xor: np.ndarray, shift: int, width: int) -> np.ndarray:
    """Bits set in block ``(shift, width)`` of ``xor``."""
    return popcount64((xor >> np.uint64(shift)) & np.uint64((1 << width) - 1))


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
#: each in temporaries, so 2**18 candidates stay under 12 MiB however heavy a bucket is.
_MAX_CANDIDATES = 1 << 18
#: Edges buffered before they are merged into the connected components (int32 pairs: 1 MiB; a merge works
#: on these roots only, about 40 bytes an edge).
_MAX_EDGES = 1 << 17
#: Most thumbnails held at once by :func:`confirmed_duplicate_groups` (as 32x32 uint8 pixels, 1 KiB each:
#: 16 MiB; thumbnails given as float32 take 4 KiB each). The rest wait in a temporary file.
_MAX_THUMBNAILS = 1 << 14
#: Candidate pairs whose thumbnails are compared at once (2 x 4 KiB of float32 each: 16 MiB).
_PAIR_CHUNK = 1 << 11


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

    def __init__(self, query: np.ndarray, radius: int, radii: list[int], blocks: list[tuple[int, int]],
                 self_join: bool, tables: list[_Table] | None = None):
        self.query, self.radius, self.radii, self.blocks = query, radius, radii, blocks
        self.self_join = self_join
        self.tables: list[_Table | None] = [None] * len(blocks)
        self.qkeys: list[np.ndarray | None] = [None] * len(blocks)
        for b, table in enumerate(tables or ()):
            self.load(b, table)

    def load(self, b: int, table: _Table) -> None:
        """Make block ``b``'s table available to its tasks."""
        self.tables[b] = table
        self.qkeys[b] = (table.keys if self.self_join else
                         ((self.query >> np.uint64(table.shift)) & np.uint64((1 << table.width) - 1)
                          ).astype(np.uint32))

    def unload(self, b: int) -> None:
        self.tables[b] = self.qkeys[b] = None

    def tasks(self, blocks: list[int] | None = None) -> list[tuple]:
        """The tasks of ``blocks`` (default: every block), largest first."""
        out = []
        for b, ((_, width), s) in enumerate(zip(self.blocks, self.radii)):
            if s < 0 or (blocks is not None and b not in blocks):
                continue
            if self.self_join:
                out.append((b, "bucket", None))
                if s:
                    out += [(b, top, masks) for top, masks in _masks_by_top_bit(width, s)]
            else:
                masks = [np.array([0], dtype=np.intp)]
                if s:
                    masks += [m for _, m in _masks_by_top_bit(width, s)]
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
            for (shift, width), s in zip(self.blocks[:block], self.radii[:block]):
                if s >= 0:
                    first &= _block_distance(xor, shift, width) > s
            i, j, d = i[first], j[first], d[first]
        return i, j, d

    def run(self, task: tuple):
        """Yield the verified ``(i, j, d)`` chunks of one task."""
        b, top, masks = task
        table, qkeys = self.tables[b], self.qkeys[b]
        if top == "bucket":  # mask 0 within one set: pairs inside a bucket, each once
            order = table.order
            ends = np.take(table.starts, qkeys[order] + np.uint32(1))
            for lo in range(0, len(order), _LOOKUP_CHUNK):
                pos = np.arange(lo, min(lo + _LOOKUP_CHUNK, len(order)), dtype=np.intp)
                c = ends[lo:lo + _LOOKUP_CHUNK] - pos - 1
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
            start, count = table.buckets(keys[hit])
            rows = qi[hit // n_masks]
            for r0, r1, c, pos in _capped_expand(start, count):
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


def thumbnail_pixels(image: np.ndarray) -> np.ndarray:
    """The 32x32 grayscale copy of an image that :func:`thumbnail` normalizes: uint8, shape (1024,).

    A quarter of the float thumbnail's size; :func:`confirmed_duplicate_groups`
    takes either (it normalizes uint8 rows itself, as :func:`thumbnail` does).
    """
    from PIL import Image

    array = np.asarray(image)
    if array.ndim == 3:
        array = array[..., :3].astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    im = Image.fromarray(np.clip(array, 0, 255).astype(np.uint8))
    if im.size != (32, 32):
        im = im.resize((32, 32), Image.BILINEAR)
    return np.asarray(im, dtype=np.uint8).ravel()


def _unit_rows(rows: np.ndarray) -> np.ndarray:
    """Zero-mean, unit-norm float32 copies of uint8 pixel rows (a flat row: all zero); float rows as given."""
    if rows.dtype != np.uint8:
        return np.asarray(rows, dtype=np.float32)
    t = rows.astype(np.float32)
    t -= t.mean(axis=1, keepdims=True)
    norm = np.sqrt(np.einsum("ij,ij->i", t, t))
    flat = norm <= 1e-3
    t /= np.where(flat, np.float32(1), norm)[:, None]
    t[flat] = 0.0
    return t


def thumbnail(image: np.ndarray) -> np.ndarray:
    """Zero-mean, unit-norm 32x32 grayscale thumbnail, shape (1024,), float32.

    The dot product of two thumbnails is the Pearson correlation of the images
    at 32x32, which ignores brightness and contrast changes. A flat image (no
    structure) gives an all-zero thumbnail. :func:`thumbnail_pixels` gives the
    same thumbnail before normalization, as uint8.
    """
    return _unit_rows(thumbnail_pixels(image)[None])[0]


class _ThumbnailRows:
    """The thumbnails of ``nodes``, in that order, each asked for once and read back by row range.

    ``thumbnails`` is called on at most :data:`_MAX_THUMBNAILS` nodes at a
    time (sorted, distinct). When all the rows fit in that cap they stay in
    memory; otherwise they go to an unnamed temporary file in ``workdir`` as
    they come (1 KiB a row for uint8 pixels) and only the ranges being compared
    are in memory.
    """

    def __init__(self, nodes: np.ndarray, thumbnails: Callable[[np.ndarray], np.ndarray],
                 workdir: str | os.PathLike | None) -> None:
        import tempfile

        self.memory: np.ndarray | None = None
        self.file = None
        self.dtype = self.width = None
        try:
            for lo in range(0, len(nodes), _MAX_THUMBNAILS):
                chunk = nodes[lo:lo + _MAX_THUMBNAILS]
                sort = np.argsort(chunk, kind="stable")
                got = np.asarray(thumbnails(chunk[sort]))
                if got.ndim != 2 or len(got) != len(chunk):
                    raise ValueError(f"thumbnails(indices) must return an array of shape (len(indices), D); "
                                     f"got shape {got.shape} for {len(chunk)} indices")
                if self.dtype is None:
                    self.dtype = np.dtype(np.uint8) if got.dtype == np.uint8 else np.dtype(np.float32)
                    self.width = got.shape[1]
                elif got.shape[1] != self.width:
                    raise ValueError(f"thumbnails(indices) returned rows of {got.shape[1]} values, "
                                     f"then {self.width}; every row must have the same length")
                rows = np.empty((len(chunk), self.width), dtype=self.dtype)
                rows[sort] = got
                del got
                if len(nodes) <= _MAX_THUMBNAILS:
                    self.memory = rows
                    break
                if self.file is None:
                    self.file = tempfile.TemporaryFile(prefix="datakit-thumbnails-", dir=workdir)
                self.file.write(rows.tobytes())
            if self.file is not None:
                self.file.flush()
        except BaseException:
            self.close()
            raise

    def read(self, lo: int, hi: int) -> np.ndarray:
        """Rows ``lo:hi`` (positions in ``nodes``)."""
        if self.memory is not None:
            return self.memory[lo:hi]
        out = np.empty((hi - lo, self.width), dtype=self.dtype)
        self.file.seek(lo * out.itemsize * self.width)
        got = self.file.readinto(memoryview(out).cast("B"))
        if got != out.nbytes:
            raise OSError(f"short read from the thumbnail file: {got} of {out.nbytes} bytes")
        return out

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None


def _similar(table_a: np.ndarray, a: np.ndarray, table_b: np.ndarray, b: np.ndarray,
             min_similarity: float) -> np.ndarray:
    """Which pairs ``(table_a[a[k]], table_b[b[k]])`` the thumbnails confirm (bool, shape (K,))."""
    keep = np.zeros(len(a), dtype=bool)
    for lo in range(0, len(a), _PAIR_CHUNK):  # two gathered float32 thumbnails: 8 KiB a pair
        x = _unit_rows(table_a[a[lo:lo + _PAIR_CHUNK]])
        y = _unit_rows(table_b[b[lo:lo + _PAIR_CHUNK]])
        sim = np.einsum("ij,ij->i", x, y)
        flat = ~x.any(1) & ~y.any(1)  # two flat images: duplicates when their hashes agree
        keep[lo:lo + len(x)] = (sim >= min_similarity) | flat
    return keep


def _component_ranges(starts: np.ndarray, ends: np.ndarray, cap: int) -> Iterator[tuple[int, int]]:
    """Consecutive whole components packed into ranges of at most ``cap`` rows (a larger one alone)."""
    lo = None
    for s, e in zip(starts.tolist(), ends.tolist()):
        if lo is not None and e - lo > cap:
            yield lo, s
            lo = None
        if e - s > cap:
            yield s, e
        elif lo is None:
            lo = s
    if lo is not None:
        yield lo, int(ends[-1])


def _check_huge_component(idx: np.ndarray, offset: int, hashes: np.ndarray, radius: int, jobs: int,
                          rows: "_ThumbnailRows", confirmed: "_Components", min_similarity: float,
                          workdir: str | os.PathLike | None) -> None:
    """Check the candidate pairs of one component too big for one batch of thumbnails.

    The component is cut into blocks of ``_MAX_THUMBNAILS // 2`` images
    (rows ``offset + ...`` of ``rows``). One search over its hashes streams its
    pairs into one temporary file per block of the pair's first image; then
    each block's file is read back in chunks, sorted by the second image's
    block, and checked with two blocks of thumbnails in memory. The search runs
    once (not once per pair of blocks), and no pair list is held in memory.
    """
    import shutil
    import tempfile

    half = max(1, _MAX_THUMBNAILS // 2)
    size = len(idx)
    n_blocks = -(-size // half)
    logger.info("one near-duplicate component holds %d images; checking it in %d blocks of %d", size, n_blocks, half)
    folder = Path(tempfile.mkdtemp(prefix="datakit-pairs-", dir=workdir))
    try:
        counts = np.zeros(n_blocks, dtype=np.int64)
        for a, b, _ in _pair_chunks(hashes[idx], None, radius, jobs):
            a, b = np.minimum(a, b), np.maximum(a, b)  # the first image's block is the smaller
            block = a // half
            order = np.argsort(block, kind="stable")
            block, pairs = block[order], np.stack([a[order], b[order]], axis=1).astype(np.int32)
            cuts = np.flatnonzero(np.r_[True, block[1:] != block[:-1], True])
            for s, e in zip(cuts[:-1].tolist(), cuts[1:].tolist()):
                p = int(block[s])
                with open(folder / f"{p}.pairs", "ab") as fh:
                    fh.write(pairs[s:e].tobytes())
                counts[p] += e - s
            del a, b, block, order, pairs
        from datakit._memory import release_memory

        release_memory()  # the search's working set, before the thumbnails come in
        for p in np.flatnonzero(counts).tolist():
            table_p = rows.read(offset + p * half, offset + min((p + 1) * half, size))
            held, table_q = -1, None
            with open(folder / f"{p}.pairs", "rb") as fh:
                while True:
                    pairs = np.fromfile(fh, dtype=np.int32, count=2 * _MAX_CANDIDATES).reshape(-1, 2)
                    if not len(pairs):
                        break
                    q_of = pairs[:, 1] // half
                    order = np.argsort(q_of, kind="stable")
                    pairs, q_of = pairs[order], q_of[order]
                    cuts = np.flatnonzero(np.r_[True, q_of[1:] != q_of[:-1], True])
                    for s, e in zip(cuts[:-1].tolist(), cuts[1:].tolist()):
                        q = int(q_of[s])
                        if q == p:
                            table = table_p
                        else:
                            if q != held:  # sorted by block: each is read once per chunk at most
                                table_q = None
                                table_q = rows.read(offset + q * half, offset + min((q + 1) * half, size))
                                held = q
                            table = table_q
                        a, b = pairs[s:e, 0], pairs[s:e, 1]
                        keep = _similar(table_p, a - p * half, table, b - q * half, min_similarity)
                        confirmed.add(idx[a[keep]], idx[b[keep]])
            (folder / f"{p}.pairs").unlink()
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def confirmed_duplicate_groups(hashes: np.ndarray, max_distance: int, thumbnails: Callable[[np.ndarray], np.ndarray],
                               *, min_similarity: float = 0.98, n_jobs: int | None = None,
                               workdir: str | os.PathLike | None = None) -> np.ndarray:
    """Connected components of the near-duplicate graph, each edge confirmed by pixels.

    A perceptual hash alone is a weak witness on small images: on 28x28
    digits many different handwritten "1"s share a hash. Candidate pairs are
    the pairs within ``max_distance`` bits (as in :func:`near_duplicate_pairs`);
    a pair is an edge only when the images' thumbnails correlate at
    ``min_similarity`` or more. Equal hashes are candidates like any other pair.

    Memory does not grow with the number of candidate pairs: no pair list is
    kept. The candidate graph's components are found first (over distinct hash
    values); then each batch of whole components (at most ``_MAX_THUMBNAILS``
    images, 16,384) is searched again and its pairs are checked as they come,
    with only that batch's thumbnails in memory. A component larger than a
    batch is searched once, its pairs go to temporary files by block, and
    each pair of blocks is checked with two blocks of thumbnails in memory.
    The thumbnails of the images that
    have any candidate partner are asked for once each; when they do not fit
    in one batch they wait in a temporary file (1 KiB an image for uint8
    pixels) in ``workdir``.

    Parameters
    ----------
    hashes : ndarray, shape (N,), uint64
    max_distance : int
        Hash radius of the candidate search (0..32).
    thumbnails : callable
        ``thumbnails(indices) -> ndarray (len(indices), 1024)`` of the images
        at those indices: uint8 pixels from :func:`thumbnail_pixels` (preferred:
        a quarter of the size) or float rows from :func:`thumbnail`. Called
        with at most ``_MAX_THUMBNAILS`` indices at a time, sorted and
        distinct, and only for images that have a candidate partner; every
        index is asked for once.
    min_similarity : float, default 0.98
        Smallest thumbnail correlation that confirms a pair.
    n_jobs : int, optional
        Threads for the hash search.
    workdir : path, optional
        Where the temporary thumbnail file goes (default: the system's
        temporary directory).

    Returns
    -------
    ndarray, shape (N,), int64
        Group id of each image: the smallest index in its group.

    Examples
    --------
    >>> x = np.zeros((3, 28, 28), np.uint8); x[:, 4:24, 12:16] = 255; x[2, 4:24, 4:8] = 255
    >>> h = np.array([7, 7, 7], dtype=np.uint64)   # equal hashes, but image 2 differs
    >>> confirmed_duplicate_groups(h, 0, lambda idx: np.stack([thumbnail_pixels(x[i]) for i in idx]))
    array([0, 0, 2])
    """
    hashes = _check_hashes(hashes, "hashes")
    n = len(hashes)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    radius = _check_distance(max_distance)
    jobs = _check_jobs(n_jobs)
    # 1. components of the candidate graph, over distinct hash values (equal hashes: one node, no pairs)
    unique, inverse, counts = np.unique(hashes, return_inverse=True, return_counts=True)
    inverse = inverse.ravel().astype(_index_dtype(len(unique)))
    linked = counts > 1
    del counts
    candidates = _Components(len(unique))
    for i, j, _ in _search_chunks(unique, unique, radius, self_join=True, n_jobs=jobs):
        candidates.add(i, j)
        linked[i] = True
        linked[j] = True
    del unique
    nodes = np.flatnonzero(linked[inverse])  # images with a candidate partner, grouped by component below
    node_comp = candidates.labels()[inverse[nodes]]
    del candidates, inverse, linked
    order = np.argsort(node_comp, kind="stable")
    nodes, node_comp = nodes[order], node_comp[order]
    del order
    if not len(nodes):
        return np.arange(n, dtype=np.int64)
    starts = np.flatnonzero(np.r_[True, node_comp[1:] != node_comp[:-1]])
    ends = np.r_[starts[1:], len(nodes)]
    del node_comp
    from datakit._memory import release_memory

    release_memory()  # the candidate search's working set, before the thumbnails come in
    # 2. each batch of whole components searched again, its pairs checked as they come
    confirmed = _Components(n)
    rows = _ThumbnailRows(nodes, thumbnails, workdir)
    try:
        for lo, hi in _component_ranges(starts, ends, _MAX_THUMBNAILS):
            if hi - lo <= _MAX_THUMBNAILS:
                idx, table = nodes[lo:hi], rows.read(lo, hi)
                for a, b, _ in _pair_chunks(hashes[idx], None, radius, jobs):
                    keep = _similar(table, a, table, b, min_similarity)
                    confirmed.add(idx[a[keep]], idx[b[keep]])
                continue
            _check_huge_component(nodes[lo:hi], lo, hashes, radius, jobs, rows, confirmed, min_similarity, workdir)
    finally:
        rows.close()
    return _group_ids(n, confirmed.labels().astype(np.int64))
