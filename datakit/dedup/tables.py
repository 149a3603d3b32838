"""The per-block tables of a multi-index search and the search tasks over them.

* For each block, a direct-addressed table (:class:`_Table`: an occupancy
  bitmap and packed CSR start/count over the ``2**width`` block values) lists
  the hashes holding each value. Every hash looks up the values within ``s``
  bits of its own block (``1 + w + w(w-1)/2`` values for ``s = 2``),
  vectorised and chunked.
* Every candidate pair is verified with a vectorised popcount of the XOR, and
  a pair that several blocks find is kept only from the first one (so no
  global ``unique`` over the candidates is needed).
* Within one set, an unordered pair is enumerated only from the hash whose
  block value is the smaller (a flip mask whose top bit is 0 in the query),
  which halves the lookups.
* Candidate lists are cut before they are materialised
  (:func:`_capped_expand`): the bucket sizes give each query's candidate
  count, so a piece never holds more than ``_limits.MAX_CANDIDATES``
  candidates (a heavy bucket is split over pieces).

:class:`_Search` cuts one search into independent tasks (one per block and
mask group) that :func:`datakit.dedup.search._run_tasks` runs, on threads
when asked.
"""
from __future__ import annotations

import itertools

import numpy as np

from datakit.dedup import _limits
from datakit.dedup.hashes import _index_dtype, popcount64

__all__: list[str] = []  # package-internal: the searches in datakit.dedup.search use these


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


def _capped_expand(starts: np.ndarray, counts: np.ndarray, cap: int | None = None):
    """CSR expansion of rows ``(start, count)`` cut into pieces of at most ``cap`` candidates.

    Yields ``(r0, r1, c, pos)``: the piece covers rows ``r0:r1``, ``c`` (shape
    ``(r1 - r0,)``) is each row's share of the piece and ``pos`` the expanded
    positions (shape ``(c.sum(),)``). A row holding more than ``cap`` candidates
    (a heavy bucket) is split over several pieces, so memory is bounded by
    ``cap`` (default ``_limits.MAX_CANDIDATES``), never by the largest bucket.
    """
    if cap is None:
        cap = _limits.MAX_CANDIDATES
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
    count is capped (``_limits.MAX_CANDIDATES``); a pair several blocks find is
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
            for lo in range(0, len(order), _limits.LOOKUP_CHUNK):
                pos = np.arange(lo, min(lo + _limits.LOOKUP_CHUNK, len(order)), dtype=np.intp)
                c = ends[lo:lo + _limits.LOOKUP_CHUNK] - pos - 1
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
        step = max(1, _limits.LOOKUP_CHUNK // n_masks)
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
