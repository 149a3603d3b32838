"""The duplicates audit's pixel check: Pearson correlation of 32x32 grayscale thumbnails of node pairs.

A pHash candidate pair of two different images counts as a near copy only
when its thumbnails correlate at ``min_similarity`` or more (different small
images can hash alike). Two flat images count as similar when their gray
levels are within 8 of 255; an unreadable image confirms nothing.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from audits._duplicates_frame import _per_image

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


def _similarity(f: pd.DataFrame, roots: list, first: np.ndarray, u: np.ndarray, v: np.ndarray,
                workers: int | None, chunk: int = 8192, scheduler: str | None = None) -> np.ndarray:
    """Pearson correlation of the 32x32 grayscale thumbnails of node pairs ``(u, v)``, shape (K,).

    Correlation ignores brightness and contrast changes; two flat images count
    as similar (1.0) when their gray levels are within 8 of 255, else 0.
    """
    nodes = np.unique(np.concatenate([u, v]))
    slot = np.full(int(nodes.max()) + 1 if len(nodes) else 0, -1, dtype=np.int64)
    slot[nodes] = np.arange(len(nodes))
    # uint8 pixels (1 KiB a node) with each row's mean and norm; rows are normalized per pair chunk, with the
    # same float32 operations as normalizing them all up front (4 KiB a node), so the correlations are the same
    pixels = np.zeros((len(nodes), 1024), dtype=np.uint8)
    means = np.zeros(len(nodes), dtype=np.float32)
    norms = np.ones(len(nodes), dtype=np.float32)
    flat = np.zeros(len(nodes), dtype=bool)
    ok = np.ones(len(nodes), dtype=bool)
    ds, paths = f["_ds"].to_numpy(), f["path"].to_numpy()
    rows = first[nodes]
    results = _per_image(_thumbnail, [(str(roots[ds[r]]), paths[r]) for r in rows], workers, scheduler)
    for k in range(len(results)):
        res, results[k] = results[k], None  # freed as it is read
        if not res.ok:  # unreadable: never confirmed
            logger.warning("duplicates: cannot read %s (%s); its pairs are not confirmed", paths[rows[k]], res.reason)
            ok[k] = False
            flat[k] = True
            continue
        pixels[k] = res.value
        t = res.value.astype(np.float32)
        means[k] = t.mean()
        norm = float(np.linalg.norm(t - means[k]))
        if norm > 1e-3:
            norms[k] = norm
        else:
            flat[k] = True
    del results

    def unit(idx: np.ndarray) -> np.ndarray:
        t = pixels[idx].astype(np.float32) - means[idx, None]
        t /= norms[idx, None]
        t[flat[idx]] = 0.0
        return t

    out = np.zeros(len(u), dtype=np.float32)
    for lo in range(0, len(u), chunk):
        a, b = slot[u[lo:lo + chunk]], slot[v[lo:lo + chunk]]
        c = np.einsum("ij,ij->i", unit(a), unit(b))
        both_flat = flat[a] & flat[b]
        c[both_flat] = (np.abs(means[a] - means[b]) <= 8.0)[both_flat].astype(np.float32)
        c[~(ok[a] & ok[b])] = 0.0
        out[lo:lo + chunk] = c
    return out
