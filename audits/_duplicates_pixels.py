"""The duplicates audit's pixel check: Pearson correlation of 32x32 grayscale thumbnails of node pairs.

A pHash candidate pair of two different images counts as a near copy only
when its thumbnails correlate at ``min_similarity`` or more (different small
images can hash alike). Two flat images count as similar when their gray
levels are within 8 of 255; an unreadable image confirms nothing.

The candidates and their thumbnails stream out of the build's pixel check
(:func:`datakit.dedup.candidate_pair_blocks`), so memory follows one batch of
thumbnails, not the number of candidate nodes or pairs; only the confirmed
pairs are kept.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from audits._duplicates_frame import _paths

__all__: list[str] = []  # private to the duplicates audit (audits/duplicates.py)

logger = logging.getLogger("audits.duplicates")


def _thumbnail(item: tuple[str, str]) -> np.ndarray:
    """32x32 grayscale copy of ``root/rel`` (``item = (root, rel)``), uint8, shape (1024,)."""
    root, rel = item
    with Image.open(Path(root) / rel) as im:
        im = im.convert("L")
        if im.size != (32, 32):
            im = im.resize((32, 32), Image.BILINEAR)
        return np.asarray(im, dtype=np.uint8).ravel()


def _block_similarity(left, a: np.ndarray, right, b: np.ndarray, unreadable: np.ndarray) -> np.ndarray:
    """The audit's similarity of pairs ``(left[a[k]], right[b[k]])`` of :class:`datakit.dedup.ThumbnailBlock` rows.

    The correlation of the thumbnails; two flat images: 1.0 when their mean
    gray levels are within 8 of 255, else 0; a pair with an unreadable image
    (``unreadable[index]``): 0.
    """
    from datakit.dedup.confirm import correlations

    x, y = left.normalized, right.normalized
    sim = correlations(x, a, y, b)
    both_flat = np.flatnonzero(x.flat[a] & y.flat[b])
    if len(both_flat):
        ma = left.rows[a[both_flat]].mean(axis=1, dtype=np.float32)
        mb = right.rows[b[both_flat]].mean(axis=1, dtype=np.float32)
        sim[both_flat] = (np.abs(ma - mb) <= 8.0).astype(np.float32)
    sim[unreadable[left.indices[a]] | unreadable[right.indices[b]]] = 0.0
    return sim


def _confirmed_pairs(f: pd.DataFrame, datasets: list, first: np.ndarray, node_hash: np.ndarray, radius: int,
                     min_similarity: float, workers: int | None, scheduler: str | None = None,
                     n_jobs: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict]:
    """Node pairs within ``radius`` bits whose thumbnails correlate at ``min_similarity`` or more.

    Parameters
    ----------
    f : DataFrame
        The audit's image frame (:func:`audits._duplicates_frame._frame`).
    datasets : list of Dataset
        The audited datasets (indexed by ``f["_ds"]``).
    first : ndarray of int
        Each node's first row in ``f``.
    node_hash : ndarray of uint64
        The pHash of each searched node (positions: the returned ``u`` and ``v``).

    Returns
    -------
    u, v : ndarray of int64
        Confirmed pairs (positions in ``node_hash``).
    d : ndarray of int64
        Their Hamming distances.
    info : dict
        ``hash_candidate_pairs``, ``confirmed_pairs``, ``rejected_pairs``, ``rejected_similarity_max``.
    """
    from datakit.dedup import candidate_pair_blocks
    from datakit.parallel import get_executor

    unreadable = np.zeros(len(node_hash), dtype=bool)
    kept: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    n_candidates, n_rejected, rejected_max = 0, 0, -np.inf
    with get_executor(workers, scheduler) as executor:
        def thumbnails(idx: np.ndarray) -> np.ndarray:
            paths = _paths(f, datasets, first[idx])
            out = np.zeros((len(idx), 1024), dtype=np.uint8)
            results = executor.map(_thumbnail, [(str(p.parent), p.name) for p in paths], batch_size=256)
            for k, res in enumerate(results):
                if res.ok:
                    out[k] = res.value
                else:  # unreadable: never confirmed
                    logger.warning("duplicates: cannot read %s (%s); its pairs are not confirmed",
                                   paths[k], res.reason)
                    unreadable[idx[k]] = True
            return out

        for left, a, right, b, d in candidate_pair_blocks(node_hash, radius, thumbnails, n_jobs=n_jobs):
            sim = _block_similarity(left, a, right, b, unreadable)
            keep = sim >= min_similarity
            n_candidates += len(sim)
            if not keep.all():
                n_rejected += int((~keep).sum())
                rejected_max = max(rejected_max, float(sim[~keep].max()))
            kept.append((left.indices[a[keep]], right.indices[b[keep]], d[keep]))
    if kept:
        u, v, d = (np.concatenate([k[i] for k in kept]).astype(np.int64) for i in range(3))
    else:
        u = v = d = np.zeros(0, dtype=np.int64)
    info = {"hash_candidate_pairs": n_candidates, "confirmed_pairs": int(len(u)), "rejected_pairs": n_rejected,
            "rejected_similarity_max": rejected_max if n_rejected else None}
    return u, v, d, info
