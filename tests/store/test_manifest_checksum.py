"""The manifest checksum: the same value from string columns (with nulls), other types, and row groups."""
from __future__ import annotations

import hashlib

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from datakit.store.manifest import ManifestChecksum, manifest_checksum


def _expected(ids, labels, splits) -> str:
    """sha256 over each column's values joined by newlines (missing: ``None``), the columns one after another."""
    h = hashlib.sha256()
    for values in (ids, labels, splits):
        h.update("\n".join("None" if v is None else str(v) for v in values).encode())
    return h.hexdigest()


def test_checksum_of_string_columns_with_nulls_matches_the_definition():
    ids, labels, splits = ["a1", "b2", "c3"], ["7", None, "cat"], ["train", "test", None]
    table = pa.table({"id": pa.array(ids, pa.string()), "label": pa.array(labels, pa.large_string()),
                      "split": pa.array(splits, pa.string())})
    h = ManifestChecksum()
    h.update(table)
    assert h.hexdigest() == _expected(ids, labels, splits)


def test_checksum_fed_in_parts_equals_one_part():
    ids, labels, splits = [f"id{i}" for i in range(5)], ["3", None, "1", "0", "2"], ["train"] * 4 + [None]
    frame = pd.DataFrame({"id": ids, "label": pd.array(labels, dtype="string"),
                          "split": pd.array(splits, dtype="string")})
    whole = ManifestChecksum()
    whole.update(pa.Table.from_pandas(frame, preserve_index=False))
    parts = ManifestChecksum()
    for lo, hi in ((0, 2), (2, 2), (2, 5)):  # an empty part changes nothing
        parts.update(pa.Table.from_pandas(frame.iloc[lo:hi], preserve_index=False))
    assert parts.hexdigest() == whole.hexdigest() == _expected(ids, labels, splits)


def test_file_checksum_reads_row_groups(tmp_path):
    ids = [f"{i:064x}" for i in range(10)]
    labels = [None if i % 4 == 0 else str(i % 3) for i in range(10)]
    splits = ["train" if i % 2 else "val" for i in range(10)]
    path = tmp_path / "manifest.parquet"
    pq.write_table(pa.table({"id": ids, "label": labels, "split": splits}), path, row_group_size=3)
    assert pq.ParquetFile(path).num_row_groups == 4
    assert manifest_checksum(path) == _expected(ids, labels, splits)


def test_checksum_of_a_column_in_several_chunks():
    """Arrow columns can come in chunks (an empty one among them): the bytes hashed are the same."""
    ids = pa.chunked_array([pa.array(["a", "b"]), pa.array([], pa.string()), pa.array(["c"])])
    labels = pa.chunked_array([pa.array([None, "1"], pa.string()), pa.array([], pa.string()), pa.array(["2"])])
    splits = pa.chunked_array([pa.array(["train", "test", "train"])])
    h = ManifestChecksum()
    h.update(pa.table({"id": ids, "label": labels, "split": splits}))
    assert h.hexdigest() == _expected(["a", "b", "c"], [None, "1", "2"], ["train", "test", "train"])
