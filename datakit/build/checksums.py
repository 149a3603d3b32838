"""Checksums of the files a build writes."""
from __future__ import annotations

import hashlib
from pathlib import Path


__all__ = ["_manifest_checksum", "_file_sha256"]


def _manifest_checksum(path: Path) -> str:
    """:attr:`Dataset.checksum` of a manifest file, read one column and row group at a time."""
    import pyarrow.parquet as pq

    h = hashlib.sha256()
    pf = pq.ParquetFile(path, pre_buffer=False)  # one row group at a time (iter_batches reads ahead)
    for col in ("id", "label", "split"):
        first = True
        for group in range(pf.num_row_groups):
            values = pf.read_row_group(group, columns=[col]).column(0).to_pandas().astype("string").fillna("None")
            if not len(values):
                continue
            h.update((("" if first else "\n") + "\n".join(values)).encode())
            first = False
            del values
    return h.hexdigest()


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
