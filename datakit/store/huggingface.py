"""Hugging Face ``datasets`` layout: Parquet shards with embedded images, written with pyarrow only.

``datakit export DATASET --format huggingface --out DIR`` writes::

    DIR/README.md                          dataset card: YAML header (features, splits, configs) + the datasheet
    DIR/data/<split>-00000-of-0000N.parquet

which ``datasets.load_dataset(DIR)`` (or ``load_dataset("parquet",
data_dir=DIR + "/data")``) opens directly, with no loading script. Columns:

``image``
    ``struct<bytes: binary, path: string>``, the ``datasets.Image`` feature:
    the stored PNG bytes, unchanged, and ``<id>.png``.
``label``
    int64 index into a ``ClassLabel`` whose names are the dataset's class ids
    in ``categories.csv`` order (the order of the imagefolder and idx
    exports); -1 for an unlabeled image (``datasets``' convention).
every other manifest column
    ``id``, ``label_name``, ``source``, ``source_ref``, ``source_label``,
    ``source_split``, ``width``, ``height``, ``phash``, ``votes``,
    ``p_correct``, ``license``, ... kept as they are (provenance), except
    ``path`` (the image is embedded) and ``split`` (the shard's split).

The features are declared twice, as ``datasets`` itself does: in the
README's ``dataset_info`` and in each Parquet file's ``huggingface`` schema
metadata, so the class names survive whichever way the files are loaded.
Shards are written atomically; a rerun replaces the shards of the splits it
writes and removes stale ones of those splits.

Reading the other way (a dataset saved by ``datasets`` as a recipe source) is
:mod:`datakit.sources.huggingface`; the feature helpers it shares are here.
"""
from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path
from typing import Any, Callable, Iterator

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from datakit.store.atomic import atomic_write, atomic_write_text

__all__ = ["export_huggingface", "hf_features", "class_label_names", "image_columns", "DEFAULT_SHARD_BYTES"]

logger = logging.getLogger(__name__)

#: Largest shard before a new one starts (the Hub's own default is about 500 MB).
DEFAULT_SHARD_BYTES = 500 * 10**6
#: Rows per Parquet row group: small, as ``datasets`` does for images, so readers stream.
ROW_GROUP_ROWS = 100
_DROPPED = ("path", "split", "label")
_SHARD_RE = re.compile(r"^(?P<split>.+)-(?P<i>\d{5})-of-(?P<n>\d{5})\.parquet$")


# -- features (shared with the huggingface source) ----------------------------------------------------------

def _value_dtype(t: pa.DataType) -> str:
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return "string"
    if pa.types.is_boolean(t):
        return "bool"
    if pa.types.is_floating(t):
        return f"float{t.bit_width}"
    if pa.types.is_integer(t):
        return str(t)  # int64, uint64, ...
    if pa.types.is_binary(t) or pa.types.is_large_binary(t):
        return "binary"
    if pa.types.is_timestamp(t):
        return f"timestamp[{t.unit}]" + (f", tz={t.tz}" if t.tz else "")
    return "string"


def hf_features(schema: pa.Schema, class_names: list[str]) -> dict[str, Any]:
    """``datasets.Features.to_dict()`` for the export schema: Image, ClassLabel, Values."""
    out: dict[str, Any] = {}
    for field in schema:
        if field.name == "image":
            out["image"] = {"_type": "Image"}
        elif field.name == "label":
            out["label"] = {"names": list(class_names), "_type": "ClassLabel"}
        else:
            out[field.name] = {"dtype": _value_dtype(field.type), "_type": "Value"}
    return out


def class_label_names(features: dict[str, Any]) -> dict[str, list[str]]:
    """Column -> names of every top-level ``ClassLabel`` in a features dict (as ``datasets`` saves it)."""
    return {col: list(spec.get("names") or []) for col, spec in features.items()
            if isinstance(spec, dict) and spec.get("_type") == "ClassLabel"}


def image_columns(features: dict[str, Any]) -> list[str]:
    """Columns whose feature is ``Image``."""
    return [col for col, spec in features.items() if isinstance(spec, dict) and spec.get("_type") == "Image"]


def _yaml_str(value: str) -> str:
    return json.dumps(str(value), ensure_ascii=False)  # a JSON string is a valid YAML scalar


def _yaml_header(features: dict[str, Any], splits: dict[str, dict[str, int]], pretty_name: str) -> str:
    lines = ["---", f"pretty_name: {_yaml_str(pretty_name)}", "task_categories:", "- image-classification",
             "dataset_info:", "  features:"]
    for name, spec in features.items():
        lines.append(f"  - name: {_yaml_str(name)}")
        if spec["_type"] == "Image":
            lines.append("    dtype: image")
        elif spec["_type"] == "ClassLabel":
            lines += ["    dtype:", "      class_label:", "        names:"]
            lines += [f"          {_yaml_str(str(i))}: {_yaml_str(n)}" for i, n in enumerate(spec["names"])]
        else:
            lines.append(f"    dtype: {_yaml_str(spec['dtype'])}")
    lines.append("  splits:")
    for s, info in splits.items():
        lines += [f"  - name: {_yaml_str(s)}", f"    num_bytes: {info['bytes']}", f"    num_examples: {info['rows']}"]
    lines += ["configs:", "- config_name: default", "  data_files:"]
    for s in splits:
        lines += [f"  - split: {_yaml_str(s)}", f"    path: {_yaml_str(f'data/{s}-*')}"]
    lines.append("---")
    return "\n".join(lines) + "\n"


# -- writing ------------------------------------------------------------------------------------------------

def _arrow_table(frame: pd.DataFrame, images: list[bytes], class_to_idx: dict[str, int]) -> pa.Table:
    labels = [class_to_idx.get(v, -1) if isinstance(v, str) else -1 for v in frame["label"].astype(object)]
    cols: dict[str, pa.Array] = {
        "image": pa.StructArray.from_arrays(
            [pa.array(images, pa.binary()), pa.array([f"{i}{Path(p).suffix or '.png'}" for i, p in zip(frame["id"], frame["path"])],
                                               pa.string())],
            names=["bytes", "path"]),
        "label": pa.array(labels, pa.int64()),
    }
    for col in frame.columns:
        if col in _DROPPED:
            continue
        arr = pa.Array.from_pandas(frame[col])
        if pa.types.is_large_string(arr.type) or pa.types.is_string_view(arr.type):
            arr = arr.cast(pa.string())
        elif pa.types.is_null(arr.type):
            arr = arr.cast(pa.string())
        elif not (pa.types.is_string(arr.type) or pa.types.is_integer(arr.type) or pa.types.is_floating(arr.type)
                  or pa.types.is_boolean(arr.type) or pa.types.is_binary(arr.type)
                  or pa.types.is_timestamp(arr.type)):
            # nested or exotic values (lists, dicts): kept as their text, declared as strings
            arr = pa.array([None if v is None else str(v) for v in arr.to_pylist()], pa.string())
        cols[col] = arr
    return pa.table(cols)


def _plan_shards(sizes: list[int], max_bytes: int) -> list[tuple[int, int]]:
    """``[(start, stop), ...]`` row ranges whose image bytes stay under ``max_bytes`` (at least one row each)."""
    bounds, start, total = [], 0, 0
    for i, n in enumerate(sizes):
        if i > start and total + n > max_bytes:
            bounds.append((start, i))
            start, total = i, 0
        total += n
    bounds.append((start, len(sizes)))
    return bounds


def _batches(frame: pd.DataFrame, root: Path, batch: int) -> Iterator[tuple[pd.DataFrame, list[bytes]]]:
    for lo in range(0, len(frame), batch):
        part = frame.iloc[lo:lo + batch]
        yield part, [(root / rel).read_bytes() for rel in part["path"]]


def export_huggingface(ds, out: Path, *, split: str | None = None, progress: Callable[[int], None] | None = None,
                       shard_size: str | int = DEFAULT_SHARD_BYTES) -> dict:
    """Write ``ds`` as Parquet shards with embedded images and a dataset card ``datasets`` reads.

    Parameters
    ----------
    ds : Dataset
    out : Path
        Output directory.
    split : str, optional
        Write only this split (other splits already in ``out/data`` stay, and
        the card lists them).
    shard_size : int or str
        Image bytes per shard before a new shard starts: bytes, or a size
        like ``"500MB"`` / ``"64MiB"`` (parsed as ``--shard-size`` of the
        webdataset export).

    Returns
    -------
    dict
        ``format``, ``out``, ``images``, ``splits`` (rows per split written), ``files``, ``classes``.
    """
    if isinstance(shard_size, int) and not isinstance(shard_size, bool) and shard_size >= 1:
        max_shard_bytes = shard_size
    else:
        from datakit.store.webdataset import parse_size  # raises a clear ShardSizeError (a DatakitError)

        max_shard_bytes = parse_size(shard_size)
    m = ds.manifest
    classes = list(ds.classes)
    class_to_idx = ds.class_to_idx
    data_dir = out / "data"
    data_dir.mkdir(parents=True, exist_ok=True)
    counts: dict[str, int] = {}
    written: list[str] = []
    schema = None
    for s in ([split] if split is not None else list(ds.splits)):
        frame = m[m["split"] == s].reset_index(drop=True)
        sizes = [os.stat(ds.root / rel).st_size for rel in frame["path"]]
        bounds = _plan_shards(sizes, max_shard_bytes)
        names = [f"{s}-{i:05d}-of-{len(bounds):05d}.parquet" for i in range(len(bounds))]
        for (lo, hi), name in zip(bounds, names):
            with atomic_write(data_dir / name, "wb") as fh:
                writer = None
                for part, images in _batches(frame.iloc[lo:hi], ds.root, ROW_GROUP_ROWS):
                    table = _arrow_table(part, images, class_to_idx)
                    if writer is None:
                        meta = {b"huggingface": json.dumps({"info": {"features": hf_features(table.schema, classes)}})
                                .encode()}
                        schema = table.schema.with_metadata(meta)
                        writer = pq.ParquetWriter(fh, schema)
                    writer.write_table(table.cast(schema), row_group_size=ROW_GROUP_ROWS)
                    if progress:
                        progress(len(part))
                if writer is None:  # an empty split still gets a (valid, empty) shard
                    schema = _arrow_table(frame.iloc[:0], [], class_to_idx).schema
                    schema = schema.with_metadata({b"huggingface": json.dumps(
                        {"info": {"features": hf_features(schema, classes)}}).encode()})
                    writer = pq.ParquetWriter(fh, schema)
                writer.close()
        for stale in data_dir.glob(f"{s}-*.parquet"):
            match = _SHARD_RE.match(stale.name)
            if match and match.group("split") == s and stale.name not in names:
                stale.unlink()
                logger.info("removed stale shard %s", stale)
        counts[s] = int(len(frame))
        written += [f"data/{n}" for n in names]
    splits = _splits_on_disk(data_dir)
    features = json.loads(pq.read_schema(out / written[0]).metadata[b"huggingface"])["info"]["features"]
    card = _yaml_header(features, splits, ds.name) + _card_body(ds, splits)
    atomic_write_text(out / "README.md", card)
    return {"format": "huggingface", "out": str(out), "images": sum(counts.values()), "splits": counts,
            "files": written, "classes": len(classes)}


def _splits_on_disk(data_dir: Path) -> dict[str, dict[str, int]]:
    """Split -> rows and bytes, from the shards in ``data_dir`` (ours: ``<split>-NNNNN-of-NNNNN.parquet``)."""
    found: dict[str, dict[str, int]] = {}
    for f in sorted(data_dir.glob("*.parquet")):
        match = _SHARD_RE.match(f.name)
        if not match:
            continue
        info = found.setdefault(match.group("split"), {"rows": 0, "bytes": 0})
        info["rows"] += pq.ParquetFile(f).metadata.num_rows
        info["bytes"] += f.stat().st_size
    order = {"train": 0, "val": 1, "test": 2}
    return dict(sorted(found.items(), key=lambda kv: (order.get(kv[0], 9), kv[0])))


def _card_body(ds, splits: dict[str, dict[str, int]]) -> str:
    per_split = ", ".join(f"{s}: {v['rows']}" for s, v in splits.items())
    names = dict(zip(ds.categories["label"].astype(str), ds.categories["name"].astype(str))) \
        if "name" in ds.categories else {}
    lines = [f"# {ds.name}", "", f"Exported by `datakit export --format huggingface` ({per_split}).", "",
             "```python", "from datasets import load_dataset", "", "ds = load_dataset(\"path/to/this/folder\")",
             "ds[\"train\"].features[\"label\"].names  # class ids; readable names are in `label_name`", "```", "",
             "| label | class id | name |", "|---|---|---|"]
    lines += [f"| {i} | {c} | {names.get(c, c)} |" for i, c in enumerate(ds.classes)]
    lines.append("")
    sheet = ds.root / "DATASHEET.md"
    if sheet.exists():
        lines += ["The dataset's datasheet follows.", "", sheet.read_text().replace("# Datasheet:", "## Datasheet:", 1)]
    return "\n".join(lines) + "\n"
