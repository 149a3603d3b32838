"""Near-duplicate groups confirmed by pixels, in bounded memory (:func:`confirmed_duplicate_groups`).

A perceptual hash alone is a weak witness on small images, so a candidate
pair (hashes within the radius) is an edge only when the images' normalized
thumbnails (:mod:`datakit.dedup.thumbnails`) correlate enough. No pair list
is kept: the candidate graph's components are found first (over distinct hash
values); each batch of whole components is searched again and its pairs are
checked as they stream out, with only that batch's thumbnails in memory,
normalized once per batch (:class:`~datakit.dedup.thumbnails._Normalized`) so
each pair costs one dot product. A component too large for one batch
(:func:`_check_huge_component`) is searched once, its pairs spill to
temporary files by block, and each pair of blocks is checked with two blocks
of normalized thumbnails in memory.
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
from datakit.dedup.thumbnails import _Normalized, _ThumbnailRows

__all__ = ["confirmed_duplicate_groups"]

logger = logging.getLogger(__name__)


def _similar(x: _Normalized, a: np.ndarray, y: _Normalized, b: np.ndarray, min_similarity: float) -> np.ndarray:
    """Which pairs ``(x[a[k]], y[b[k]])`` of normalized thumbnails confirm (bool, shape (K,)).

    A pair is confirmed when the rows' dot product (their correlation) is at
    least ``min_similarity``, or when both images are flat (their hashes agree
    already).
    """
    keep = np.zeros(len(a), dtype=bool)
    for lo in range(0, len(a), _limits.PAIR_CHUNK):  # two gathered float32 rows: 8 KiB a pair
        i, j = a[lo:lo + _limits.PAIR_CHUNK], b[lo:lo + _limits.PAIR_CHUNK]
        sim = np.einsum("ij,ij->i", x.unit[i], y.unit[j])
        keep[lo:lo + len(i)] = (sim >= min_similarity) | (x.flat[i] & y.flat[j])
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

    The component is cut into blocks of ``_limits.MAX_THUMBNAILS // 2`` images
    (rows ``offset + ...`` of ``rows``). One search over its hashes streams its
    pairs into one temporary file per block of the pair's first image; then
    each block's file is read back in chunks, sorted by the second image's
    block, and checked with two blocks of normalized thumbnails in memory (each
    block normalized once per read). The search runs
    once (not once per pair of blocks), and no pair list is held in memory.
    """
    import shutil
    import tempfile

    half = max(1, _limits.MAX_THUMBNAILS // 2)
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
            table_p = _Normalized(rows.read(offset + p * half, offset + min((p + 1) * half, size)))
            held, table_q = -1, None
            with open(folder / f"{p}.pairs", "rb") as fh:
                while True:
                    pairs = np.fromfile(fh, dtype=np.int32, count=2 * _limits.MAX_CANDIDATES).reshape(-1, 2)
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
                                table_q = _Normalized(rows.read(offset + q * half, offset + min((q + 1) * half, size)))
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
    the pairs within ``max_distance`` bits (as in :func:`datakit.dedup.near_duplicate_pairs`);
    a pair is an edge only when the images' thumbnails correlate at
    ``min_similarity`` or more. Equal hashes are candidates like any other pair.

    Memory does not grow with the number of candidate pairs: no pair list is
    kept. The candidate graph's components are found first (over distinct hash
    values); then each batch of whole components (at most ``_limits.MAX_THUMBNAILS``
    images, 16,384) is searched again and its pairs are checked as they come,
    with only that batch's thumbnails in memory, each normalized once (float32,
    4 KiB an image) so that a pair costs one dot product. A component larger
    than a batch is searched once, its pairs go to temporary files by block,
    and each pair of blocks is checked with two blocks of normalized
    thumbnails in memory. The thumbnails of the images that have any
    candidate partner are asked for once each; when they do not fit in one
    batch they wait in a temporary file (1 KiB an image for uint8 pixels) in
    ``workdir``.

    Parameters
    ----------
    hashes : ndarray, shape (N,), uint64
    max_distance : int
        Hash radius of the candidate search (0..32).
    thumbnails : callable
        ``thumbnails(indices) -> ndarray (len(indices), 1024)`` of the images
        at those indices: uint8 pixels from :func:`~datakit.dedup.thumbnail_pixels` (preferred:
        a quarter of the size) or float rows from :func:`~datakit.dedup.thumbnail`. Called
        with at most ``_limits.MAX_THUMBNAILS`` indices at a time, sorted and
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
        for lo, hi in _component_ranges(starts, ends, _limits.MAX_THUMBNAILS):
            if hi - lo <= _limits.MAX_THUMBNAILS:
                idx, table = nodes[lo:hi], _Normalized(rows.read(lo, hi))  # each row normalized once
                for a, b, _ in _pair_chunks(hashes[idx], None, radius, jobs):
                    keep = _similar(table, a, table, b, min_similarity)
                    confirmed.add(idx[a[keep]], idx[b[keep]])
                del table  # before the next batch is normalized
                continue
            _check_huge_component(nodes[lo:hi], lo, hashes, radius, jobs, rows, confirmed, min_similarity, workdir)
    finally:
        rows.close()
    return _group_ids(n, confirmed.labels().astype(np.int64))
