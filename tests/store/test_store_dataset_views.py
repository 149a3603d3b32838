"""open_dataset: manifest DataFrame, torch views per split returning tensors and int targets."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import datakit
from datakit.cli import cli
from datakit.errors import DatakitError
from datakit.store.writer import write_dataset


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (12, 10, 10), dtype=np.uint8)
    labels = ["cat", "dog", "emu"] * 4
    splits = ["train"] * 8 + ["test"] * 4
    return write_dataset(tmp_path_factory.mktemp("v"), images, labels, splits, source="arrays"), images


def test_views_return_tensors_and_int_targets(small):
    root, images = small
    ds = datakit.open_dataset(root)
    assert ds.classes == ["cat", "dog", "emu"] and ds.class_to_idx == {"cat": 0, "dog": 1, "emu": 2}
    train = ds.split("train")
    assert len(train) == 8 and train.classes == ds.classes
    x, y = train[1]
    assert isinstance(x, torch.Tensor) and x.shape == (1, 10, 10) and x.dtype == torch.float32
    assert isinstance(y, int) and y == 1
    np.testing.assert_allclose(x.numpy()[0], images[1] / 255.0, atol=1e-6)
    loader = torch.utils.data.DataLoader(train, batch_size=4)
    xb, yb = next(iter(loader))
    assert xb.shape == (4, 1, 10, 10) and yb.dtype == torch.int64
    with pytest.raises(DatakitError, match=r"Unknown split 'val'.*Valid values are \{train, test\}"):
        ds.split("val")


def test_not_a_dataset(tmp_path):
    with pytest.raises(DatakitError, match="not a datakit dataset"):
        datakit.open_dataset(tmp_path)


def test_info_cli_formats(small):
    root, _ = small
    runner = CliRunner()
    table = runner.invoke(cli, ["info", str(root)])
    assert table.exit_code == 0, table.output
    assert "12 images, 3 classes" in table.output and "By class:" in table.output
    js = runner.invoke(cli, ["info", str(root), "--format", "json"])
    import json

    data = json.loads(js.output)
    assert data["images"] == 12
    assert {r["label"]: r["total"] for r in data["by_class"]} == {"cat": 4, "dog": 4, "emu": 4}
    assert data["by_split"] == [{"train": 8, "test": 4, "total": 12}]
    csv = runner.invoke(cli, ["info", str(root), "--format", "csv"])
    lines = csv.output.strip().splitlines()
    assert lines[0] == "group,value,train,test,total"
    assert "class,cat,3,1,4" in lines
    missing = runner.invoke(cli, ["info", str(root / "nope")])
    assert missing.exit_code == 1 and "not a datakit dataset" in missing.output


def test_load_arrays_mapped_cache_and_row_reads(tmp_path):
    """load_arrays(mmap=True) streams the images into its cache and maps it; the audits' row reader reads
    just the rows asked for; the column reader takes only the row groups it needs; all equal the arrays."""
    import shutil

    from audits._common import _Rows

    rng = np.random.default_rng(2)
    images = rng.integers(0, 256, (30, 6, 7), dtype=np.uint8)
    labels = ["a", "b", "c"] * 10
    root = write_dataset(tmp_path / "d", images, labels, ["train"] * 20 + ["test"] * 10, source="arrays")
    ds = datakit.open_dataset(root)
    in_memory, targets = ds.load_arrays(None)
    shutil.rmtree(root / ".cache")
    mapped, targets2 = datakit.open_dataset(root).load_arrays(None, mmap=True)
    assert isinstance(mapped, np.memmap) and not mapped.flags.writeable
    np.testing.assert_array_equal(mapped, in_memory)
    np.testing.assert_array_equal(targets2, targets)
    again, _ = datakit.open_dataset(root).load_arrays(None)  # the streamed cache reads back as a plain array
    assert not isinstance(again, np.memmap)
    np.testing.assert_array_equal(again, in_memory)
    rows = _Rows(mapped)
    for pos in ([], [5], [0, 1, 2, 9, 3, 29, 28], list(range(30))[::-1]):
        np.testing.assert_array_equal(rows[np.array(pos, dtype=np.int64)], in_memory[pos])
    with pytest.raises(IndexError):
        rows[np.array([30])]
    view = ds.select_columns(["label"])
    pos = np.array([7, 0, 29, 7])
    np.testing.assert_array_equal(view.column_values("path", pos), ds.manifest["path"].to_numpy(dtype=object)[pos])
    with pytest.raises(KeyError, match="no column 'nope'"):
        view.column_values("nope", pos)


def test_load_arrays_mapped_rejects_mixed_shapes(tmp_path):
    from PIL import Image

    images = np.arange(4 * 25, dtype=np.uint8).reshape(4, 5, 5)  # four distinct files
    root = write_dataset(tmp_path / "d", images, ["a", "b"] * 2, ["train"] * 4, source="arrays")
    first = datakit.open_dataset(root).manifest["path"].iloc[0]
    Image.fromarray(np.zeros((6, 5), np.uint8)).save(root / first)
    with pytest.raises(DatakitError, match="different shapes"):
        datakit.open_dataset(root).load_arrays(None, mmap=True)
    assert not list((root / ".cache").glob("*-images.npy"))  # nothing half-written is left as a cache
