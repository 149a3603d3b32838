"""Near-duplicate candidates checked by pixels, in bounded memory.

A perceptual hash alone is a weak witness on small images, so a candidate
pair (hashes within the radius) is an edge only when the images' normalized
thumbnails (:mod:`datakit.dedup.thumbnails`) correlate enough.
:func:`candidate_pair_blocks` streams every candidate pair once together with
the thumbnails of both images, and keeps no pair list: the candidate graph's
components are found first (over distinct hash values); each batch of whole
components is searched again and its pairs come out as they are found, with
only that batch's thumbnails in memory (:class:`ThumbnailBlock`, normalized
once per block so each pair costs one dot product). A component too large for
one batch (:func:`_huge_component_blocks`) is searched once, its pairs spill
to temporary files by block, and each pair of blocks comes out with two blocks
of thumbnails in memory.

Two callers share it: the build's :func:`confirmed_duplicate_groups` (groups of
confirmed copies) and the ``duplicates`` audit (the confirmed pairs with their
similarities, under its own rules for flat and unreadable images).
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from datakit.dedup import _limits
from datakit.dedup.groups import _Components, _group_ids
from datakit.dedup.hashes import _check_distance, _check_hashes, _check_jobs, _index_dtype
from datakit.dedup.search import _pair_chunks, _search_chunks
from datakit.dedup.thumbnails import _Normalized, _on_threads, _ThumbnailRows

__all__ = ["confirmed_duplicate_groups", "candidate_pair_blocks", "ThumbnailBlock"]

logger = logging.getLogger(__name__)


class ThumbnailBlock:
    """The thumbnails of a block of images, normalized once when first asked for.

    Attributes
    ----------
    indices : ndarray of int, shape (B,)
        The images' indices (positions in the ``hashes`` given to :func:`candidate_pair_blocks`).
    rows : ndarray, shape (B, D)
        Their thumbnails as ``thumbnails(indices)`` returned them (uint8 pixels or float rows).
    normalized : _Normalized
        ``unit`` (float32 zero-mean unit-norm rows: a pair's dot product is its
        correlation) and ``flat`` (bool: flat images, all-zero ``unit`` rows),
        computed on first use (4 KiB an image) and kept while the block is in use.

    A block is valid only inside the loop step that received it: once its pairs
    are all out, :func:`candidate_pair_blocks` drops its rows, so that no more
    than two blocks are held at once.
    """

    def __init__(self, indices: np.ndarray, rows: np.ndarray, n_jobs: int = 1) -> None:
        self.indices = indices
        self.rows = rows
        self.n_jobs = n_jobs
        self._normalized: _Normalized | None = None

    @property
    def normalized(self) -> _Normalized:
        if self._normalized is None:
            self._normalized = _Normalized(self.rows, self.n_jobs)
        return self._normalized

    def _release(self) -> None:
        self.rows = self._normalized = None

    def __len__(self) -> int:
        return len(self.indices)


def _similar(x: _Normalized, a: np.ndarray, y: _Normalized, b: np.ndarray, min_similarity: float,
             n_jobs: int = 1) -> np.ndarray:
    """Which pairs ``(x[a[k]], y[b[k]])`` of normalized thumbnails confirm (bool, shape (K,)).

    A pair is confirmed when the rows' dot product (their correlation) is at
    least ``min_similarity``, or when both images are flat (their hashes agree
    already).
    """
    sim = correlations(x, a, y, b, n_jobs)
    return (sim >= min_similarity) | (x.flat[a] & y.flat[b])


def correlations(x: _Normalized, a: np.ndarray, y: _Normalized, b: np.ndarray, n_jobs: int = 1) -> np.ndarray:
    """Dot products of normalized rows ``x.unit[a[k]]`` and ``y.unit[b[k]]`` (float32, shape (K,)).

    Gathered ``_limits.PAIR_CHUNK`` pairs at a time (8 KiB of float32 a pair),
    so the rows stay in cache; with ``n_jobs > 1``, in as many contiguous
    parts on threads (each pair's product is the same either way).
    """
    out = np.empty(len(a), dtype=np.float32)

    def part(start: int, stop: int) -> None:
        for lo in range(start, stop, _limits.PAIR_CHUNK):
            hi = min(lo + _limits.PAIR_CHUNK, stop)
            out[lo:hi] = np.einsum("ij,ij->i", x.unit[a[lo:hi]], y.unit[b[lo:hi]])

    if n_jobs > 1 and len(a) >= 8 * _limits.PAIR_CHUNK:
        _on_threads(len(a), n_jobs, part, align=_limits.PAIR_CHUNK)
    else:
        part(0, len(a))
    return out


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


def _huge_component_blocks(idx: np.ndarray, offset: int, hashes: np.ndarray, radius: int, jobs: int,
                           rows: "_ThumbnailRows", workdir: str | os.PathLike | None):
    """The candidate pairs of one component too big for one batch of thumbnails, by pairs of blocks.

    The component is cut into blocks of ``_limits.MAX_THUMBNAILS // 2`` images
    (rows ``offset + ...`` of ``rows``). One search over its hashes streams its
    pairs (with their distances) into one temporary file per pair of blocks
    ``(p, q)``, ``p <= q``; then, for each ``p``, each of its files is read
    back in chunks and yielded with blocks ``p`` and ``q`` in memory. Each
    block is read and normalized once per ``p`` at most (block ``p`` once), so
    that two blocks of thumbnails are held at a time. The search runs once
    (not once per pair of blocks), and no pair list is held in memory.
    """
    import shutil
    import tempfile

    half = max(1, _limits.MAX_THUMBNAILS // 2)
    size = len(idx)
    n_blocks = -(-size // half)
    logger.info("one near-duplicate component holds %d images; checking it in %d blocks of %d", size, n_blocks, half)
    folder = Path(tempfile.mkdtemp(prefix="datakit-pairs-", dir=workdir))

    def block(k: int) -> ThumbnailBlock:
        lo, hi = k * half, min((k + 1) * half, size)
        return ThumbnailBlock(idx[lo:hi], rows.read(offset + lo, offset + hi), jobs)

    try:
        files: dict[int, set[int]] = {}  # p -> the q of its files
        for a, b, d in _pair_chunks(hashes[idx], None, radius, jobs):
            a, b = np.minimum(a, b), np.maximum(a, b)  # the first image's block is the smaller
            key = (a // half).astype(np.int64) * n_blocks + b // half
            order = np.argsort(key, kind="stable")
            key = key[order]
            records = np.stack([a[order], b[order], d[order]], axis=1).astype(np.int32)
            cuts = np.flatnonzero(np.r_[True, key[1:] != key[:-1], True])
            for lo, hi in zip(cuts[:-1].tolist(), cuts[1:].tolist()):
                p, q = divmod(int(key[lo]), n_blocks)
                with open(folder / f"{p}-{q}.pairs", "ab") as fh:
                    fh.write(records[lo:hi].tobytes())
                files.setdefault(p, set()).add(q)
            del a, b, d, key, order, records
        from datakit._memory import release_memory

        release_memory()  # the search's working set, before the thumbnails come in
        for p in sorted(files):
            block_p = block(p)
            for q in sorted(files[p]):
                right = block_p if q == p else block(q)
                path = folder / f"{p}-{q}.pairs"
                with open(path, "rb") as fh:
                    while True:
                        records = np.fromfile(fh, dtype=np.int32, count=3 * _limits.MAX_CANDIDATES).reshape(-1, 3)
                        if not len(records):
                            break
                        yield (block_p, records[:, 0] - p * half, right, records[:, 1] - q * half,
                               records[:, 2].astype(np.uint8))
                if right is not block_p:
                    right._release()
                path.unlink()
            block_p._release()
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def candidate_pair_blocks(hashes: np.ndarray, max_distance: int, thumbnails: Callable[[np.ndarray], np.ndarray],
                          *, n_jobs: int | None = None, workdir: str | os.PathLike | None = None
                          ) -> Iterator[tuple[ThumbnailBlock, np.ndarray, ThumbnailBlock, np.ndarray, np.ndarray]]:
    """Every candidate pair (hashes within ``max_distance`` bits), once, with both images' thumbnails.

    The pairs are those of :func:`datakit.dedup.near_duplicate_pairs` (equal
    hashes included), in another order and orientation. Memory does not grow
    with the number of candidate pairs: no pair list is kept. The candidate
    graph's components are found first (over distinct hash values); then each
    batch of whole components (at most ``_limits.MAX_THUMBNAILS`` images,
    16,384) is searched again and its pairs come out as they are found, with
    only that batch's thumbnails in memory. A component larger than a batch is
    searched once, its pairs go to temporary files by block, and they come out
    by pairs of blocks. The thumbnails of the images that have any candidate
    partner are asked for once each; when they do not fit in one batch they
    wait in a temporary file in ``workdir`` (1 KiB an image for uint8 pixels).

    Parameters
    ----------
    hashes : ndarray, shape (N,), uint64
    max_distance : int
        Hash radius of the candidate search (0..32).
    thumbnails : callable
        ``thumbnails(indices) -> ndarray (len(indices), D)`` of the images at
        those indices: uint8 pixels from :func:`~datakit.dedup.thumbnail_pixels`
        (preferred: a quarter of the size) or float rows from
        :func:`~datakit.dedup.thumbnail`. Called with at most
        ``_limits.MAX_THUMBNAILS`` indices at a time, sorted and distinct, and
        only for images that have a candidate partner; every index is asked for once.
    n_jobs : int, optional
        Threads for the hash search.
    workdir : path, optional
        Where the temporary files go (default: the system's temporary directory).

    Yields
    ------
    left : ThumbnailBlock
    a : ndarray of int
        Rows of ``left``: the pairs' first images are ``left.indices[a]``.
    right : ThumbnailBlock
        (``left`` itself for pairs within one block)
    b : ndarray of int
        Rows of ``right``: the second images are ``right.indices[b]``.
    distance : ndarray of uint8
        The pairs' Hamming distances.

    The blocks are valid until the next step of the loop.

    Examples
    --------
    >>> from datakit.dedup import thumbnail_pixels
    >>> x = np.zeros((3, 28, 28), np.uint8); x[:, 4:24, 12:16] = 255; x[2, 4:24, 4:8] = 255
    >>> h = np.array([7, 7, 7], dtype=np.uint64)
    >>> pairs = []
    >>> for left, a, right, b, d in candidate_pair_blocks(h, 0, lambda idx: np.stack([thumbnail_pixels(x[i]) for i in idx])):
    ...     sim = correlations(left.normalized, a, right.normalized, b)
    ...     pairs += zip(left.indices[a].tolist(), right.indices[b].tolist(), [round(float(s), 2) for s in sim])
    >>> sorted(pairs)
    [(0, 1, 1.0), (0, 2, 0.66), (1, 2, 0.66)]
    """
    hashes = _check_hashes(hashes, "hashes")
    n = len(hashes)
    if n == 0:
        return
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
        return
    starts = np.flatnonzero(np.r_[True, node_comp[1:] != node_comp[:-1]])
    ends = np.r_[starts[1:], len(nodes)]
    del node_comp
    from datakit._memory import release_memory

    release_memory()  # the candidate search's working set, before the thumbnails come in
    # 2. each batch of whole components searched again, its pairs yielded as they come
    rows = _ThumbnailRows(nodes, thumbnails, workdir)
    try:
        for lo, hi in _component_ranges(starts, ends, _limits.MAX_THUMBNAILS):
            if hi - lo <= _limits.MAX_THUMBNAILS:
                block = ThumbnailBlock(nodes[lo:hi], rows.read(lo, hi), jobs)  # normalized once, when first used
                for a, b, d in _pair_chunks(hashes[block.indices], None, radius, jobs):
                    yield block, a, block, b, d
                block._release()  # before the next batch is normalized
                continue
            yield from _huge_component_blocks(nodes[lo:hi], lo, hashes, radius, jobs, rows, workdir)
    finally:
        rows.close()


def confirmed_duplicate_groups(hashes: np.ndarray, max_distance: int, thumbnails: Callable[[np.ndarray], np.ndarray],
                               *, min_similarity: float = 0.98, n_jobs: int | None = None,
                               workdir: str | os.PathLike | None = None) -> np.ndarray:
    """Connected components of the near-duplicate graph, each edge confirmed by pixels.

    A perceptual hash alone is a weak witness on small images: on 28x28
    digits many different handwritten "1"s share a hash. Candidate pairs are
    the pairs within ``max_distance`` bits (as in :func:`datakit.dedup.near_duplicate_pairs`);
    a pair is an edge only when the images' thumbnails correlate at
    ``min_similarity`` or more, or both images are flat. Equal hashes are
    candidates like any other pair. The pairs and thumbnails come from
    :func:`candidate_pair_blocks`, so memory does not grow with the number of
    candidate pairs (see there).

    Parameters
    ----------
    hashes : ndarray, shape (N,), uint64
    max_distance : int
        Hash radius of the candidate search (0..32).
    thumbnails : callable
        ``thumbnails(indices) -> ndarray (len(indices), 1024)``, as for :func:`candidate_pair_blocks`.
    min_similarity : float, default 0.98
        Smallest thumbnail correlation that confirms a pair.
    n_jobs : int, optional
        Threads for the hash search.
    workdir : path, optional
        Where the temporary files go (default: the system's temporary directory).

    Returns
    -------
    ndarray, shape (N,), int64
        Group id of each image: the smallest index in its group.

    Examples
    --------
    >>> from datakit.dedup import thumbnail_pixels
    >>> x = np.zeros((3, 28, 28), np.uint8); x[:, 4:24, 12:16] = 255; x[2, 4:24, 4:8] = 255
    >>> h = np.array([7, 7, 7], dtype=np.uint64)   # equal hashes, but image 2 differs
    >>> confirmed_duplicate_groups(h, 0, lambda idx: np.stack([thumbnail_pixels(x[i]) for i in idx]))
    array([0, 0, 2])
    """
    hashes = _check_hashes(hashes, "hashes")
    n = len(hashes)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    jobs = _check_jobs(n_jobs)
    confirmed = _Components(n)
    for left, a, right, b, _ in candidate_pair_blocks(hashes, max_distance, thumbnails, n_jobs=n_jobs,
                                                      workdir=workdir):
        keep = _similar(left.normalized, a, right.normalized, b, min_similarity, jobs)
        confirmed.add(left.indices[a[keep]], right.indices[b[keep]])
    return _group_ids(n, confirmed.labels().astype(np.int64))
