"""The duplicates audit's image frame: every image of every dataset in one table, with its pHash.

:func:`_frame` reads the manifest columns the audit needs and fills in the
pHash of images whose manifest has none (reading the files through
datakit's executor, :func:`_per_image`); an unreadable image is recorded in
the notes and left out of the near-duplicate search.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
from PIL import Image

from audits._common import _unique_names
from datakit.hashing import phash
from datakit.store.dataset import Dataset

__all__: list[str] = []  # private to the duplicates audit (audits/duplicates.py)


def _load_hash(item: tuple[str, str]) -> int:
    """pHash of the image file ``root/rel`` (``item = (root, rel)``); runs in an executor worker."""
    root, rel = item
    with Image.open(Path(root) / rel) as im:
        if im.mode not in ("L", "RGB", "RGBA"):
            im = im.convert("RGB")
        return phash(np.asarray(im))


def _per_image(fn, items: list, workers: int | None, scheduler: str | None = None):
    """Map ``fn`` over ``items`` through datakit's executor (ordered; per-item errors captured)."""
    from datakit.parallel import get_executor

    with get_executor(workers, scheduler) as executor:
        return list(executor.map(fn, items, batch_size=256))


def _frame(datasets: Sequence[Dataset], notes: list[str], workers: int | None,
           scheduler: str | None = None, compute_hashes: bool = True) -> pd.DataFrame:
    """All images of all datasets in one frame, with phash filled in where missing (``compute_hashes``)."""
    names = _unique_names([ds.name for ds in datasets])
    parts = []
    for k, (ds, name) in enumerate(zip(datasets, names)):
        m = ds.manifest
        n = len(m)
        part = pd.DataFrame({
            "dataset": name, "_ds": k, "_row": np.arange(n),
            "id": m["id"].astype("object").to_numpy() if "id" in m else np.full(n, None, object),
            "path": m["path"].astype("object").to_numpy(),
            "split": m["split"].astype("object").fillna("(none)").to_numpy() if "split" in m else "(none)",
            "source": m["source"].astype("object").fillna("(none)").to_numpy() if "source" in m else "(none)",
            "label": m["label"].astype("object").to_numpy() if "label" in m else np.full(n, None, object),
        })
        hashes = np.zeros(n, dtype=np.uint64)
        valid = np.zeros(n, dtype=bool)
        if "phash" in m.columns:
            col = m["phash"]
            valid = np.array(col.notna(), dtype=bool)  # a writable copy
            hashes[valid] = col[valid].to_numpy().astype(np.uint64)
        missing = np.flatnonzero(~valid)
        if len(missing) and compute_hashes:
            failed = []
            paths = part["path"].to_numpy()
            results = _per_image(_load_hash, [(str(ds.root), paths[i]) for i in missing], workers, scheduler)
            for i, res in zip(missing, results):
                if res.ok:
                    hashes[i], valid[i] = res.value, True
                else:  # unreadable: recorded, not hashed
                    failed.append(f"{paths[i]}: {res.reason}: {res.detail}")
            notes.append(f"{name}: the manifest has no phash for {len(missing)} of {n} images; "
                         f"computed it from the image files (datakit.hashing.phash)")
            if failed:
                notes.append(f"{name}: {len(failed)} images could not be read and are left out of the near-"
                             f"duplicate search (e.g. {failed[0]})")
        part["phash"] = hashes
        part["_hashed"] = valid
        parts.append(part)
    frame = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
    return frame
