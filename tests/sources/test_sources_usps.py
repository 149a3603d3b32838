"""The ``usps`` source on the real files in shared/data/usps, and tiny fakes for the error paths."""
from __future__ import annotations

import bz2

import h5py
import numpy as np
import pytest

from datakit.errors import DatakitError
from datakit.sources import get_source
from datakit.sources.decode import item_to_image
from datakit.sources.usps import detect_usps_format, read_usps

TRAIN_HIST = [1194, 1005, 731, 658, 652, 556, 664, 645, 542, 644]
TEST_HIST = [359, 264, 198, 166, 200, 160, 170, 147, 166, 177]


@pytest.fixture(scope="module")
def usps_dir(shared_data):
    return shared_data / "usps"


@pytest.fixture(scope="module")
def h5_test(usps_dir):
    return read_usps(usps_dir / "usps.h5", "test")


def test_h5_counts_and_label_histograms(usps_dir):
    src = get_source("usps")(name="usps", path="usps/usps.h5", split="all", data_root=str(usps_dir.parent))
    src.validate()
    assert len(src) == 7291 + 2007
    items = list(src.iter_items())
    train = [int(i.label) for i in items if i.split == "train"]
    test = [int(i.label) for i in items if i.split == "test"]
    assert np.bincount(train).tolist() == TRAIN_HIST
    assert np.bincount(test).tolist() == TEST_HIST
    first = items[0]
    assert first.array.shape == (16, 16) and first.meta["value_range"] == (0.0, 1.0)
    assert first.source_ref == "usps.h5/train#0"
    assert items[7291].source_ref == "usps.h5/test#0"
    u8 = item_to_image(first)
    assert u8.dtype == np.uint8 and u8.min() == 0 and u8.max() == 255  # every USPS image spans [0, 1]
    assert src.labels() == [str(d) for d in range(10)]


def test_h5_default_split_is_train(usps_dir):
    src = get_source("usps")(path=str(usps_dir / "usps.h5"))
    assert len(src) == 7291


def test_libsvm_test_labels_equal_h5_test_labels(usps_dir, h5_test):
    images, labels, value_range = read_usps(usps_dir / "usps.t.bz2")
    assert value_range == (-1.0, 1.0)
    assert images.shape == (2007, 16, 16)
    assert np.array_equal(labels, h5_test[1])
    assert np.bincount(labels).tolist() == TEST_HIST
    assert images.min() >= -1.0 and images.max() <= 1.0
    src = get_source("usps")(path=str(usps_dir / "usps.t.bz2"))
    assert src.format == "libsvm"
    assert len(src) == 2007
    assert next(iter(src.iter_items())).split == "test"  # guessed from the name


def test_esl_zip_test_quirk_line_parses(usps_dir, h5_test, caplog):
    with caplog.at_level("WARNING"):
        images, labels, value_range = read_usps(usps_dir / "zip.test")
    assert "line 2006: 258 fields" in caplog.text
    assert images.shape == (2007, 16, 16) and value_range == (-1.0, 1.0)
    assert np.array_equal(labels, h5_test[1])
    # the first 256 values of every row are the h5 test images * 2 - 1
    assert np.abs(images - (h5_test[0] * 2 - 1)).max() < 1e-6
    # the quirk line keeps its first 256 values (the extra trailing field is dropped)
    assert np.abs(images[2005] - (h5_test[0][2005] * 2 - 1)).max() < 1e-6
    src = get_source("usps")(path=str(usps_dir / "zip.test"))
    assert src.format == "esl" and len(src) == 2007


def test_format_detection_by_content(tmp_path):
    h5 = tmp_path / "renamed.bin"
    with h5py.File(h5, "w") as f:
        for split, n in (("train", 3), ("test", 2)):
            f.create_dataset(f"{split}/data", data=np.linspace(0, 1, n * 256).reshape(n, 256).astype(np.float32))
            f.create_dataset(f"{split}/target", data=np.arange(n, dtype=np.int32))
    assert detect_usps_format(h5) == "h5"
    src = get_source("usps")(path=str(h5), split="test")
    assert [i.label for i in src.iter_items()] == ["0", "1"]
    libsvm = tmp_path / "tiny.t"
    libsvm.write_text("3 1:0.5 256:-1\n10 2:1\n")
    assert detect_usps_format(libsvm) == "libsvm"
    images, labels, _ = read_usps(libsvm)
    assert labels.tolist() == [2, 9]
    assert images[0, 0, 0] == 0.5 and images[0, 15, 15] == -1 and images[0, 0, 1] == 0  # sparse: absent = 0
    packed = tmp_path / "tiny.bz2"
    packed.write_bytes(bz2.compress(libsvm.read_bytes()))
    assert read_usps(packed)[1].tolist() == [2, 9]


def test_bad_usps_files(tmp_path):
    junk = tmp_path / "junk.txt"
    junk.write_text("hello world\n")
    with pytest.raises(DatakitError, match="is not a USPS file"):
        read_usps(junk)
    binary = tmp_path / "picture.h5"
    binary.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4)
    with pytest.raises(DatakitError, match="is not a USPS file"):
        read_usps(binary)
    bad_label = tmp_path / "bad.t"
    bad_label.write_text("11 1:0.5\n")
    with pytest.raises(DatakitError, match="labels are 1..10"):
        read_usps(bad_label)
    short = tmp_path / "zip.train"
    short.write_text("3 " + " ".join(["0"] * 256) + "\n" + "4 " + " ".join(["0"] * 100) + "\n")
    with pytest.raises(DatakitError, match="line 2: 101 fields"):
        read_usps(short)


def test_usps_source_option_errors(tmp_path):
    usps = get_source("usps")
    with pytest.raises(DatakitError, match="option 'path' is required"):
        usps()
    with pytest.raises(DatakitError, match="unknown option 'pth'.*Did you mean 'path'"):
        usps(pth="x")
    with pytest.raises(DatakitError, match="Valid values are"):
        usps(path="x", split="val")
    with pytest.raises(DatakitError, match="no such file; tried"):
        usps(path="usps.h5", data_root=str(tmp_path)).validate()
    one = tmp_path / "zip.test"
    one.write_text("3 " + " ".join(["0"] * 256) + "\n")
    with pytest.raises(DatakitError, match="split = 'all' needs usps.h5"):
        usps(path=str(one), split="all").validate()
