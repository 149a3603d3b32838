"""IDX reader/writer and the ``idx`` source, on real MNIST / Fashion-MNIST files and tiny fakes."""
from __future__ import annotations

import gzip
import hashlib

import numpy as np
import pytest

from datakit.errors import DatakitError
from datakit.sources import get_source
from datakit.sources.idx import find_idx_files, read_idx, read_idx_header, write_idx

MNIST_T10K_HIST = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
MNIST_TRAIN_HIST = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
FASHION_NAMES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                 "Ankle boot"]


def test_mnist_t10k_matches_sources_md(shared_data):
    images = read_idx(shared_data / "mnist" / "t10k-images-idx3-ubyte.gz")
    labels = read_idx(shared_data / "mnist" / "t10k-labels-idx1-ubyte.gz")
    assert images.shape == (10000, 28, 28) and images.dtype == np.uint8
    assert hashlib.md5(images.tobytes()).hexdigest() == hashlib.md5(
        gzip.open(shared_data / "mnist" / "t10k-images-idx3-ubyte.gz").read()[16:]).hexdigest()
    assert round(images.mean() / 255, 4) == 0.1325
    assert labels.shape == (10000,)
    assert np.bincount(labels).tolist() == MNIST_T10K_HIST
    assert labels[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]


def test_idx_source_streams_the_test_split(shared_data):
    src = get_source("idx")(name="mnist", root="mnist", split="test", data_root=str(shared_data))
    src.validate()
    assert len(src) == 10000
    items = list(src.iter_items(chunk=999))  # a chunk size that does not divide 10000
    assert len(items) == 10000
    assert [i.label for i in items[:10]] == list("7210414959")
    assert items[0].source_ref == "t10k-images-idx3-ubyte.gz#0"
    assert items[-1].source_ref == "t10k-images-idx3-ubyte.gz#9999"
    assert {i.split for i in items} == {"test"}
    assert items[0].array.shape == (28, 28) and items[0].array.dtype == np.uint8
    ref = read_idx(shared_data / "mnist" / "t10k-images-idx3-ubyte.gz")
    assert np.array_equal(items[1234].array, ref[1234])
    assert np.bincount([int(i.label) for i in items]).tolist() == MNIST_T10K_HIST
    assert src.labels() == [str(d) for d in range(10)]


def test_idx_source_all_splits_by_header_only(shared_data):
    src = get_source("idx")(root=str(shared_data / "mnist"), split="all")
    assert len(src) == 70000  # from the headers; no image data read
    assert [s for s, _, _ in src.parts()] == ["train", "test"]
    train_labels = read_idx(shared_data / "mnist" / "train-labels-idx1-ubyte.gz")
    assert np.bincount(train_labels).tolist() == MNIST_TRAIN_HIST


def test_fashion_mnist_with_label_names(fashion_mnist):
    src = get_source("idx")(name="fashion", root=str(fashion_mnist), split="test", label_names=FASHION_NAMES)
    src.validate()
    assert len(src) == 10000
    first = next(iter(src.iter_items()))
    assert first.label == "Ankle boot"  # Fashion-MNIST's first test image is class 9
    assert sorted(src.labels()) == sorted(FASHION_NAMES)


def test_write_read_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    for name, arr in [("imgs-idx3-ubyte", rng.integers(0, 256, (7, 5, 3), dtype=np.uint8)),
                      ("imgs-idx3-ubyte.gz", rng.integers(0, 256, (7, 5, 3), dtype=np.uint8)),
                      ("f.idx", rng.standard_normal((4, 2)).astype(np.float32)),
                      ("i.idx", rng.integers(-1000, 1000, 9).astype(np.int32)),
                      ("h.idx", rng.integers(-1000, 1000, (3, 3)).astype(np.int16)),
                      ("d.idx", rng.standard_normal(3))]:
        write_idx(tmp_path / name, arr)
        back = read_idx(tmp_path / name)
        assert back.dtype == arr.dtype.newbyteorder("=") and np.array_equal(back, arr), name
    assert (tmp_path / "imgs-idx3-ubyte.gz").read_bytes()[:2] == b"\x1f\x8b"
    assert (tmp_path / "imgs-idx3-ubyte").read_bytes()[:4] == b"\x00\x00\x08\x03"
    # int64 labels that fit in a byte are stored as uint8 (what MNIST readers expect)
    write_idx(tmp_path / "labels-idx1-ubyte", np.array([0, 9, 3], np.int64))
    assert read_idx(tmp_path / "labels-idx1-ubyte").dtype == np.uint8
    assert read_idx_header(tmp_path / "labels-idx1-ubyte") == (np.dtype("u1"), (3,))
    # gzip output is byte-for-byte reproducible
    write_idx(tmp_path / "again.gz", np.arange(10, dtype=np.uint8))
    first = (tmp_path / "again.gz").read_bytes()
    write_idx(tmp_path / "again.gz", np.arange(10, dtype=np.uint8))
    assert (tmp_path / "again.gz").read_bytes() == first
    assert not list(tmp_path.glob(".*.tmp"))  # atomic: no temporary left behind


def test_write_idx_rejects_unstorable_dtypes(tmp_path):
    with pytest.raises(TypeError, match="IDX cannot store dtype"):
        write_idx(tmp_path / "x.idx", np.array(["a"]))
    with pytest.raises(TypeError, match="IDX cannot store dtype"):
        write_idx(tmp_path / "x.idx", np.array([1 + 2j]))


def test_bad_idx_files_fail_clearly(tmp_path):
    html = tmp_path / "t10k-images-idx3-ubyte.gz"
    with gzip.open(html, "wb") as fh:
        fh.write(b"<!DOCTYPE html><html>Baidu pan</html>")
    with pytest.raises(DatakitError, match="is not an IDX file"):
        read_idx(html)
    short = tmp_path / "short-idx1-ubyte"
    short.write_bytes(b"\x00\x00\x08\x01" + (100).to_bytes(4, "big") + bytes(50))
    with pytest.raises(DatakitError, match="truncated or corrupt"):
        read_idx(short)
    lfs = tmp_path / "lfs-idx3-ubyte"
    lfs.write_text("version https://git-lfs.github.com/spec/v1\noid sha256:abc\n")
    with pytest.raises(DatakitError, match="Git-LFS pointer"):
        read_idx(lfs)


def test_idx_source_option_errors(tmp_path):
    idx = get_source("idx")
    with pytest.raises(DatakitError, match="unknown option 'imagse'.*Did you mean 'images'"):
        idx(imagse="x")
    with pytest.raises(DatakitError, match="either 'root'"):
        idx()
    with pytest.raises(DatakitError, match="Valid values are"):
        idx(root=str(tmp_path), split="validation")
    with pytest.raises(DatakitError, match="label_names must be a list"):
        idx(root=str(tmp_path), label_names="abc")
    missing = idx(name="m", images="nope-idx3-ubyte.gz", data_root=str(tmp_path))
    with pytest.raises(DatakitError, match=r"option images = 'nope-idx3-ubyte.gz': no such file; tried .*nope"):
        missing.validate()
    empty = idx(name="e", root=str(tmp_path), split="test")
    with pytest.raises(DatakitError, match="expected t10k-images-idx3-ubyte.gz"):
        empty.validate()


def test_idx_source_on_fake_files(tmp_path, monkeypatch):
    images = np.arange(3 * 4 * 5, dtype=np.uint8).reshape(3, 4, 5)
    write_idx(tmp_path / "train-images.idx3-ubyte", images)  # dotted spelling
    write_idx(tmp_path / "train-labels.idx1-ubyte", np.array([2, 0, 1], np.uint8))
    assert find_idx_files(tmp_path, "train")[0].name == "train-images.idx3-ubyte"
    monkeypatch.setenv("DATAKIT_DATA", str(tmp_path))
    src = get_source("idx")(root=".", label_names=["a", "b", "c"])  # resolved via DATAKIT_DATA
    items = list(src.iter_items())
    assert [i.label for i in items] == ["c", "a", "b"]
    assert items[2].array.tolist() == images[2].tolist()
    transposed = get_source("idx")(root=".", transpose=True)
    assert next(iter(transposed.iter_items())).array.shape == (5, 4)
    write_idx(tmp_path / "train-labels.idx1-ubyte", np.array([2, 0], np.uint8))
    with pytest.raises(DatakitError, match="3 images but .* 2 labels"):
        get_source("idx")(root=str(tmp_path)).validate()
    unlabeled = get_source("idx")(images=str(tmp_path / "train-images.idx3-ubyte"))
    assert [i.label for i in unlabeled.iter_items()] == [None, None, None]
    write_idx(tmp_path / "train-labels.idx1-ubyte", np.array([2, 0, 1], np.uint8))
    with pytest.raises(DatakitError, match="label value 2 has no entry in label_names"):
        list(get_source("idx")(images=str(tmp_path / "train-images.idx3-ubyte"),
                               labels=str(tmp_path / "train-labels.idx1-ubyte"), label_names=["a"]).iter_items())
