"""Exports round-trip: ImageFolder loads with torchvision, IDX reads back equal."""
from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner

import datakit
from datakit.cli import cli
from datakit.errors import DatakitError
from datakit.store.export import EXPORTERS, export_dataset
from datakit.store.writer import write_dataset


@pytest.fixture(scope="module")
def digits_dataset(tmp_path_factory):
    from sklearn.datasets import load_digits

    d = load_digits()
    rng = np.random.default_rng(0)
    idx = rng.choice(len(d.target), 120, replace=False)
    images = (d.images[idx] * 16).clip(0, 255).astype(np.uint8)
    labels = [str(t) for t in d.target[idx]]
    splits = ["train"] * 80 + ["test"] * 40
    return write_dataset(tmp_path_factory.mktemp("ds"), images, labels, splits, source="sklearn-digits")


def test_imagefolder_round_trip(digits_dataset, tmp_path):
    from torchvision import datasets

    summary = export_dataset(digits_dataset, "imagefolder", tmp_path / "if")
    assert summary["splits"] == {"train": 80, "test": 40}
    ds = datakit.open_dataset(digits_dataset)
    for split in ("train", "test"):
        tv = datasets.ImageFolder(tmp_path / "if" / split)
        ours = ds.split(split)
        assert len(tv) == len(ours)
        assert set(tv.classes) <= set(ds.classes)
        # the same images under the same class names
        got = sorted((p.rsplit("/", 1)[-1].split(".")[0], tv.classes[t]) for p, t in tv.samples)
        want = sorted(zip(ours.frame["id"], ours.frame["label"]))
        assert got == want
        image, target = tv[0]
        assert image.size == (8, 8)


def test_idx_round_trip(digits_dataset, tmp_path):
    from datakit.sources.idx import read_idx

    export_dataset(digits_dataset, "idx", tmp_path / "idx")
    ds = datakit.open_dataset(digits_dataset)
    for split in ("train", "test"):
        images, targets = ds.load_arrays(split)
        back = read_idx(tmp_path / "idx" / f"{split}-images-idx3-ubyte.gz")
        labels = read_idx(tmp_path / "idx" / f"{split}-labels-idx1-ubyte.gz")
        np.testing.assert_array_equal(back, images)
        np.testing.assert_array_equal(labels.astype(np.int64), targets)
    assert (tmp_path / "idx" / "classes.txt").read_text().split() == ds.classes


def test_idx_export_reads_back_as_an_idx_source(digits_dataset, tmp_path):
    from datakit.sources import get_source

    export_dataset(digits_dataset, "idx", tmp_path / "idx", split="test")
    src = get_source("idx")(name="back", root=str(tmp_path / "idx"), split="test")
    src.validate()
    assert len(src) == 40


def test_unknown_format_and_split(digits_dataset, tmp_path):
    with pytest.raises(DatakitError, match=r"Unknown export format 'tiff'.*Valid values are \{.*idx.*imagefolder"):
        export_dataset(digits_dataset, "tiff", tmp_path / "x")
    with pytest.raises(DatakitError, match=r"Unknown split 'val'.*Valid values are \{train, test\}"):
        export_dataset(digits_dataset, "idx", tmp_path / "x", split="val")
    with pytest.raises(DatakitError, match="inside the dataset"):
        export_dataset(digits_dataset, "idx", digits_dataset / "exports")


def test_registry_has_builtin_formats():
    assert {"imagefolder", "idx"} <= set(EXPORTERS.names())


def test_cli_export(digits_dataset, tmp_path):
    runner = CliRunner()
    result = runner.invoke(cli, ["export", str(digits_dataset), "--format", "imagefolder", "--out",
                                 str(tmp_path / "cli"), "--split", "train", "--quiet"])
    assert result.exit_code == 0, result.output
    assert "Exported 80 images" in result.output
    assert len(list((tmp_path / "cli" / "train").rglob("*.png"))) == 80
    bad = runner.invoke(cli, ["export", str(digits_dataset), "--format", "tiff", "--out", str(tmp_path / "b")])
    assert bad.exit_code == 1 and "Traceback" not in bad.output and "Valid values are" in bad.output
