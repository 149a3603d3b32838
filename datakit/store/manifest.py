"""Column schemas of ``manifest.parquet`` and ``rejected.parquet`` (DESIGN.md)."""
from __future__ import annotations

from functools import lru_cache

import pandas as pd

__all__ = ["MANIFEST_COLUMNS", "REJECTED_COLUMNS", "empty_manifest", "empty_rejected", "conform", "file_sha256", "manifest_checksum",
           "ManifestChecksum"]

#: One row per kept image. ``label`` is the dataset class id (a wnid or a class
#: name), ``label_name`` its readable name; ``source_label`` is the label as the
#: source gave it; ``phash`` is a 64-bit DCT perceptual hash (uint64).
#: ``width``/``height`` are the stored (normalized) image's size in pixels;
#: ``original_width``/``original_height`` the decoded image's size before
#: normalization (null for datasets built before they were recorded).
#: ``original_label`` is the label before a ``[relabel]`` table changed it
#: (null for images whose label was not changed).
MANIFEST_COLUMNS: dict[str, str] = {
    "id": "string",
    "path": "string",
    "label": "string",
    "label_name": "string",
    "split": "string",
    "source": "string",
    "source_ref": "string",
    "source_label": "string",
    "source_split": "string",
    "query": "string",
    "rank": "Int64",
    "width": "Int64",
    "height": "Int64",
    "original_width": "Int64",
    "original_height": "Int64",
    "phash": "uint64",
    "votes": "Int64",
    "p_correct": "float64",
    "license": "string",
    "original_label": "string",
}

#: One row per candidate that was not kept.
REJECTED_COLUMNS: dict[str, str] = {
    "id": "string",
    "source": "string",
    "source_ref": "string",
    "stage": "string",
    "reason": "string",
    "detail": "string",
}


def conform(df: pd.DataFrame, columns: dict[str, str]) -> pd.DataFrame:
    """Return ``df`` with every schema column present (missing ones null) and typed.

    Extra columns are kept after the schema columns.
    """
    out = df.copy(deep=False)  # copy-on-write: the columns set below never reach ``df``
    for name, dtype in columns.items():
        if name not in out.columns:
            out[name] = pd.Series([None] * len(out), dtype=dtype if dtype != "uint64" else "UInt64", index=out.index)
            continue
        have = out[name].dtype
        if dtype == "uint64":  # a 64-bit hash: plain uint64 unless values are missing
            if have == _dtype("uint64"):
                continue
            target = "UInt64" if out[name].isna().any() else dtype
            if have == _dtype("UInt64") and target == "UInt64":
                continue
        elif have == _dtype(dtype):
            continue  # already typed (an exact dtype match, string storage included): no copy
        else:
            target = dtype
        out[name] = out[name].astype(target)
    extra = [c for c in out.columns if c not in columns]
    return out[list(columns) + extra].reset_index(drop=True)


@lru_cache(maxsize=None)
def _dtype(name: str):
    """The pandas dtype a schema names (parsed once)."""
    return pd.api.types.pandas_dtype(name)


def empty_manifest() -> pd.DataFrame:
    return conform(pd.DataFrame(), MANIFEST_COLUMNS)


def empty_rejected() -> pd.DataFrame:
    return conform(pd.DataFrame(), REJECTED_COLUMNS)


class ManifestChecksum:
    """The manifest checksum (:func:`manifest_checksum`) of rows fed in order, one frame at a time.

    sha256 over the ``id`` column, then ``label``, then ``split``, each as its
    values joined by newlines (missing values as ``None``). The ids are hashed
    as they come; the labels and splits wait as joined bytes (a few bytes a
    row) until :meth:`hexdigest`. The build feeds it the frames it writes, so
    it need not read ``manifest.parquet`` back.
    """

    COLUMNS = ("id", "label", "split")

    def __init__(self) -> None:
        import hashlib

        self._ids = hashlib.sha256()
        self._first_id = True
        self._rest: dict[str, list[bytes]] = {"label": [], "split": []}

    def update(self, table) -> None:
        """Feed the next rows: a ``pyarrow.Table`` with (at least) the ``id``, ``label`` and ``split`` columns."""
        import pyarrow as pa

        for col in self.COLUMNS:
            column = table.column(col)
            if not len(column):
                continue
            if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
                text = _joined_strings(column)
            else:
                text = "\n".join(column.to_pandas().astype("string").fillna("None")).encode()
            if col == "id":
                self._ids.update(text if self._first_id else b"\n" + text)
                self._first_id = False
            else:
                self._rest[col].append(text)

    def hexdigest(self) -> str:
        h = self._ids.copy()
        for parts in self._rest.values():  # label, then split
            h.update(b"\n".join(parts))
        return h.hexdigest()


def _joined_strings(column) -> bytes:
    """A string column's values joined by newlines, missing ones as ``None``, as UTF-8 bytes.

    The same bytes as joining pandas' ``string`` values, made by Arrow
    without a Python object per value (the ids of a 65,536-row group would
    be about 7 MB of them).
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    parts = []
    for chunk in pc.fill_null(column, "None").chunks:
        if not len(chunk):
            continue
        large = pa.types.is_large_string(chunk.type)
        chunk = chunk.cast(pa.large_binary() if large else pa.binary())  # the same buffers
        offsets = pa.array([0, len(chunk)], pa.int64() if large else pa.int32())
        one_list = (pa.LargeListArray if large else pa.ListArray).from_arrays(offsets, chunk)
        parts.append(pc.binary_join(one_list, pa.scalar(b"\n", chunk.type))[0].as_py())
    return b"\n".join(parts)


def manifest_checksum(path) -> str:
    """sha256 over a manifest file's ids, labels and splits (:attr:`Dataset.checksum`; :class:`ManifestChecksum`).

    Read one row group at a time, so memory does not grow with the dataset
    beyond the labels and splits as joined bytes.
    """
    import pyarrow.parquet as pq

    h = ManifestChecksum()
    pf = pq.ParquetFile(path, pre_buffer=False)  # one row group at a time (iter_batches reads ahead)
    for group in range(pf.num_row_groups):
        h.update(pf.read_row_group(group, columns=list(ManifestChecksum.COLUMNS)))
    return h.hexdigest()


def file_sha256(path) -> str:
    """sha256 of a file's bytes, read 1 MiB at a time (the dataset files' checksums in ``datakit.json``)."""
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
