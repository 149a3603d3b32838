"""Stored images no manifest row refers to, removed at the end of a build."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd


__all__ = ["_id_digest", "_remove_orphans"]


def _id_digest(ids: pd.Series) -> np.ndarray:
    """64-bit digest of each id (equal ids, equal digests; verify candidates against full ids)."""
    return pd.util.hash_array(ids.astype(object).to_numpy(), categorize=False).astype(np.uint64)



def _remove_orphans(out: Path, keep: np.ndarray) -> int:
    """Delete stored images no manifest row refers to (left by an earlier recipe), and temporary files.

    ``keep`` holds the kept ids as sorted 64-bit digests (:func:`_id_digest`):
    a file is deleted only when its digest is not among them, so a kept image
    is never deleted.
    """
    removed = 0
    images = out / "images"
    if not images.is_dir():
        return 0
    for sub in images.iterdir():
        if not sub.is_dir():
            continue
        names = os.listdir(sub)  # names, not Path objects (a Path an image cost 0.3 s on the digits build)
        stems = [os.path.splitext(name)[0] for name in names]  # (names starting with "." go whatever their stem)
        digests = _id_digest(pd.Series(stems, dtype=object)) if stems else np.zeros(0, np.uint64)
        pos = np.minimum(np.searchsorted(keep, digests), max(len(keep) - 1, 0))
        known = (keep[pos] == digests) if len(keep) else np.zeros(len(names), bool)
        for name, k in zip(names, known):
            if name.startswith(".") or not k:
                (sub / name).unlink(missing_ok=True)
                removed += 1
    return removed
