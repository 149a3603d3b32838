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
from datakit.dedup.hashes import _index_dtype
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
    """All images of all datasets in one frame, with phash filled in where missing (``compute_hashes``).

    Columns: ``dataset, _ds`` (index into ``datasets``, int8), ``_row`` (row in that manifest, int32), ``id, split,
    source, label, phash, _hashed``; paths come from :func:`_paths`. The integer columns are as narrow as
    they can be (at a million images each int64 column is 8 MB held through the whole audit).
    """
    names = _unique_names([ds.name for ds in datasets])
    parts = []
    for k, (ds, name) in enumerate(zip(datasets, names)):
        m = _columns(ds)
        n = len(m)
        # compact columns (at a million images, Python strings cost about 120 MB a column): ``id`` and ``path``
        # stay Arrow strings, the few-valued columns become categories
        part = pd.DataFrame({
            "dataset": pd.Categorical.from_codes(np.zeros(n, dtype=np.int8), [name]),
            "_ds": np.full(n, k, dtype=np.int8 if len(datasets) < 128 else np.int32),
            "_row": np.arange(n, dtype=_index_dtype(n)),
            "id": _strings(m["id"]) if "id" in m else pd.array([None] * n, dtype=_STRING),
            "split": _category(m["split"], "(none)") if "split" in m else "(none)",
            "source": _category(m["source"], "(none)") if "source" in m else "(none)",
            "label": _category(m["label"]) if "label" in m else np.full(n, None, object),
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
            paths = ds.column_values("path", missing)
            results = _per_image(_load_hash, [(str(ds.root), rel) for rel in paths], workers, scheduler)
            for i, rel, res in zip(missing, paths, results):
                if res.ok:
                    hashes[i], valid[i] = res.value, True
                else:  # unreadable: recorded, not hashed
                    failed.append(f"{rel}: {res.reason}: {res.detail}")
            notes.append(f"{name}: the manifest has no phash for {len(missing)} of {n} images; "
                         f"computed it from the image files (datakit.hashing.phash)")
            if failed:
                notes.append(f"{name}: {len(failed)} images could not be read and are left out of the near-"
                             f"duplicate search (e.g. {failed[0]})")
        part["phash"] = hashes
        part["_hashed"] = valid
        parts.append(part)
    frame = (parts[0] if len(parts) == 1 else pd.concat(parts, ignore_index=True)) if parts else pd.DataFrame()
    for col in ("dataset", "split", "source", "label"):  # concat of differing categories gives objects
        if col in frame and not isinstance(frame[col].dtype, pd.CategoricalDtype):
            frame[col] = frame[col].astype(object).astype("category")
    return frame


_STRING = pd.StringDtype("pyarrow")

#: the manifest columns :func:`_frame` reads (paths are read for the images opened: :func:`_paths`)
_COLUMNS = ("id", "split", "source", "label", "phash")


def _paths(f: pd.DataFrame, datasets: Sequence[Dataset], rows, relative: bool = False) -> np.ndarray:
    """Paths of the images at rows ``rows`` of the frame (object array), read from the manifests for
    these rows only (:meth:`Dataset.column_values`): the frame holds no path (about 90 MB at a million images).
    ``relative``: as stored in the manifest, else joined to the dataset root."""
    rows = np.asarray(rows, dtype=np.int64)
    ds_of, pos = f["_ds"].to_numpy()[rows], f["_row"].to_numpy()[rows]
    out = np.empty(len(rows), dtype=object)
    for k in np.unique(ds_of).tolist():
        mine = ds_of == k
        rel = datasets[k].column_values("path", pos[mine])
        out[mine] = rel if relative else [datasets[k].root / r for r in rel]
    return out


def _columns(ds: Dataset) -> pd.DataFrame:
    """The columns :func:`_frame` needs, read from the file without caching them on ``ds`` (when it can),
    so the frame is the only copy held (at a million images the view's manifest is about 200 MB)."""
    if hasattr(ds, "read_columns") and "manifest" not in vars(ds):
        return ds.read_columns(_COLUMNS, categories=("split", "source", "label"))
    return ds.manifest


def _strings(col: pd.Series) -> np.ndarray:
    """A manifest column as Arrow-backed strings (about 70 bytes a 64-character id, not 120)."""
    return col.astype(_STRING).array


def _category(col: pd.Series, fill: str | None = None) -> pd.Categorical:
    """A few-valued manifest column as a categorical of Python strings (``fill`` for missing values)."""
    codes, uniques = pd.factorize(col)  # Arrow's dictionary encoding: no Python string per row
    cats = [str(c) for c in uniques]
    if fill is not None and (codes < 0).any():
        if fill not in cats:
            cats.append(fill)
        codes[codes < 0] = cats.index(fill)
    cat = pd.Categorical.from_codes(codes, categories=pd.Index(cats, dtype=object))
    return cat.reorder_categories(sorted(cats))
