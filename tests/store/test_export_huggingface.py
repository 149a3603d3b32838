"""The huggingface export opens with ``datasets.load_dataset``: counts, ClassLabel names, splits, provenance."""
from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from PIL import Image

import datakit
from datakit.cli import cli
from datakit.errors import DatakitError
from datakit.store.export import export_dataset, export_formats
from datakit.store.writer import write_dataset

datasets = pytest.importorskip("datasets", reason="the datasets library (a dev dependency) reads the export")

NAMES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


@pytest.fixture(autouse=True)
def offline(monkeypatch, tmp_path):
    """No test may reach the Hub: offline flags, and a private cache."""
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(datasets.config, "HF_DATASETS_OFFLINE", True, raising=False)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True, raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    """90 real scikit-learn digits in train/val/test, class names, and one unlabeled image."""
    from sklearn.datasets import load_digits

    d = load_digits()
    rng = np.random.default_rng(0)
    idx = rng.choice(len(d.target), 90, replace=False)
    images = (d.images[idx] * 16).clip(0, 255).astype(np.uint8)
    labels = [str(t) for t in d.target[idx]]
    labels[5] = None
    splits = ["train"] * 50 + ["val"] * 15 + ["test"] * 25
    return write_dataset(tmp_path_factory.mktemp("digits"), images, labels, splits, source="sklearn-digits",
                         classes=[str(i) for i in range(10)], class_names=NAMES)


def _same(a, b) -> bool:
    return (pd.isna(a) and pd.isna(b)) if (pd.isna(a) or pd.isna(b)) else a == b


def _load(path, tmp_path, **kwargs):
    return datasets.load_dataset(str(path), cache_dir=str(tmp_path / "cache"), **kwargs)


def test_load_dataset_matches_the_manifest(digits, tmp_path):
    summary = export_dataset(digits, "huggingface", tmp_path / "hf")
    assert summary["splits"] == {"train": 50, "val": 15, "test": 25} and summary["images"] == 90
    ds = datakit.open_dataset(digits)
    m = ds.manifest.set_index("id")
    loaded = _load(tmp_path / "hf", tmp_path)
    assert set(loaded) == {"train", "val", "test"}
    for split in ("train", "val", "test"):
        part = loaded[split]
        assert len(part) == int((ds.manifest["split"] == split).sum())
        label = part.features["label"]
        assert isinstance(label, datasets.ClassLabel) and label.names == ds.classes
        assert isinstance(part.features["image"], datasets.Image)
        frame = part.remove_columns("image").to_pandas()
        assert set(frame["id"]) == set(m.index[m["split"] == split])
        for _, row in frame.iterrows():
            want = m.at[row["id"], "label"]
            assert (label.names[row["label"]] if row["label"] >= 0 else None) == (None if pd.isna(want) else want)
            for col in ("source", "source_ref", "label_name", "phash", "width"):
                assert _same(row[col], m.at[row["id"], col]), col
        # pixels round-trip: the stored PNG bytes are embedded unchanged
        first = part[0]
        stored = np.asarray(Image.open(digits / m.at[first["id"], "path"]))
        np.testing.assert_array_equal(np.asarray(first["image"]), stored)
    assert "path" not in loaded["train"].column_names and "split" not in loaded["train"].column_names
    unlabeled = loaded["train"].filter(lambda r: r["label"] == -1)
    assert len(unlabeled) == 1


def test_parquet_files_alone_keep_the_class_names(digits, tmp_path):
    export_dataset(digits, "huggingface", tmp_path / "hf")
    files = {s: sorted(str(p) for p in (tmp_path / "hf" / "data").glob(f"{s}-*.parquet")) for s in ("train", "test")}
    loaded = datasets.load_dataset("parquet", data_files=files, cache_dir=str(tmp_path / "cache"))
    assert loaded["test"].features["label"].names == [str(i) for i in range(10)]
    assert len(loaded["train"]) == 50 and len(loaded["test"]) == 25
    schema = pq.read_schema(files["train"][0])
    assert str(schema.field("image").type) == "struct<bytes: binary, path: string>"


def test_shards_reruns_and_one_split(digits, tmp_path):
    out = tmp_path / "hf"
    summary = export_dataset(digits, "huggingface", out, shard_size=2000)
    train_files = sorted(p.name for p in (out / "data").glob("train-*.parquet"))
    assert len(train_files) > 1 and train_files[0].endswith(f"-of-{len(train_files):05d}.parquet")
    assert sum(pq.ParquetFile(out / "data" / f).metadata.num_rows for f in train_files) == 50
    assert len(summary["files"]) >= 3
    export_dataset(digits, "huggingface", out)  # one shard per split now: the small ones go
    assert sorted(p.name for p in (out / "data").glob("*.parquet")) == [
        "test-00000-of-00001.parquet", "train-00000-of-00001.parquet", "val-00000-of-00001.parquet"]
    assert len(_load(out, tmp_path)["train"]) == 50
    only = tmp_path / "only"
    assert export_dataset(digits, "huggingface", only, split="val")["splits"] == {"val": 15}
    loaded = _load(only, tmp_path)
    assert list(loaded) == ["val"] and len(loaded["val"]) == 15
    readme = (only / "README.md").read_text()
    assert readme.startswith("---\n") and "class_label" in readme and '"9": "9"' in readme
    assert "# Datasheet" not in readme or "## Datasheet" in readme
    with pytest.raises(DatakitError, match="shard size"):
        export_dataset(digits, "huggingface", tmp_path / "bad", shard_size="lots")


def test_cli(digits, tmp_path):
    assert "huggingface" in export_formats()
    runner = CliRunner()
    r = runner.invoke(cli, ["export", str(digits), "--format", "huggingface", "--out", str(tmp_path / "cli"),
                            "--quiet", "--shard-size", "1KB"])
    assert r.exit_code == 0, r.output
    assert "Exported 90 images" in r.output and "train: 50, val: 15, test: 25" in r.output
    loaded = _load(tmp_path / "cli", tmp_path)
    assert {s: len(loaded[s]) for s in loaded} == {"train": 50, "val": 15, "test": 25}
    r = runner.invoke(cli, ["export", str(digits), "--format", "huggingface", "--out", str(digits / "hf")])
    assert r.exit_code == 1 and "inside the dataset" in r.output


def test_the_writer_needs_no_datasets(digits, tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "datasets", None)  # importing datasets now fails
    summary = export_dataset(digits, "huggingface", tmp_path / "nodatasets")
    assert summary["images"] == 90
    table = pq.read_table(tmp_path / "nodatasets" / "data" / "val-00000-of-00001.parquet")
    png = table.column("image")[0].as_py()["bytes"]
    assert Image.open(io.BytesIO(png)).size == (8, 8)
