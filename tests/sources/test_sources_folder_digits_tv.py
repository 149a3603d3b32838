"""The ``folder``, ``sklearn-digits`` and ``torchvision`` sources (no network, ever)."""
from __future__ import annotations

import pickle

import numpy as np
import pytest
from PIL import Image

from datakit.errors import DatakitError
from datakit.registry import UnknownNameError
from datakit.sources import SOURCES, get_source
from datakit.sources.decode import item_to_image, load_image
from datakit.sources.idx import write_idx


def test_registry_lists_the_built_in_sources():
    assert {"folder", "idx", "sklearn-digits", "torchvision", "usps"} <= set(SOURCES.names())
    with pytest.raises(UnknownNameError, match=r"Unknown source 'fodler'. Did you mean 'folder'\? Valid values"):
        get_source("fodler")


# --------------------------------------------------------------------------- folder

def _make_tree(root):
    for cls, n in (("cat", 2), ("dog", 3)):
        (root / cls).mkdir(parents=True)
        for i in range(n):
            Image.new("RGB", (8, 6), (i * 40, 0, 0)).save(root / cls / f"{i}.PNG")
    (root / "dog" / "nested").mkdir()
    Image.new("L", (4, 4)).save(root / "dog" / "nested" / "deep.jpg")
    (root / "dog" / "notes.txt").write_text("not an image")
    (root / "dog" / ".hidden.png").write_bytes(b"")
    (root / "README.md").write_text("root-level files are not a class")
    (root / "empty").mkdir()


def test_folder_labeled_like_imagefolder(tmp_path):
    _make_tree(tmp_path / "data")
    src = get_source("folder")(name="pets", path="data", data_root=str(tmp_path))
    src.validate()
    items = list(src.iter_items())
    refs = [i.source_ref for i in items]
    assert refs == ["cat/0.PNG", "cat/1.PNG", "dog/0.PNG", "dog/1.PNG", "dog/2.PNG", "dog/nested/deep.jpg"]
    assert [i.label for i in items] == ["cat"] * 2 + ["dog"] * 4
    assert len(src) == 6 and src.labels() == ["cat", "dog"]
    assert all(i.array is None and i.path for i in items)  # decoding happens later, in the workers
    assert item_to_image(items[0]).size == (8, 6)
    pickle.dumps(items[0])
    # the same files and order as torchvision's ImageFolder, except that hidden files
    # (".DS_Store", macOS "._x.png" companions) are skipped
    from torchvision.datasets import ImageFolder

    tv = ImageFolder(str(tmp_path / "data"), allow_empty=True)
    assert [p for p, _ in tv.samples if "/." not in p] == [i.path for i in items]


def test_folder_unlabeled_and_all_extensions(tmp_path):
    _make_tree(tmp_path)
    flat = get_source("folder")(path=str(tmp_path), labeled=False)
    assert [i.label for i in flat.iter_items()] == [None] * 6
    everything = get_source("folder")(path=str(tmp_path), labeled=False, extensions=["*"])
    refs = [i.source_ref for i in everything.iter_items()]
    assert "README.md" in refs and "dog/notes.txt" in refs and ".hidden.png" not in " ".join(refs)
    only_jpg = get_source("folder")(path=str(tmp_path), extensions=["JPG"])
    assert [i.source_ref for i in only_jpg.iter_items()] == ["dog/nested/deep.jpg"]


def test_folder_errors(tmp_path):
    folder = get_source("folder")
    with pytest.raises(DatakitError, match="option 'path'"):
        folder()
    with pytest.raises(DatakitError, match="unknown option 'label'.*Did you mean 'labeled'"):
        folder(path=".", label=False)
    with pytest.raises(DatakitError, match="labeled must be true or false"):
        folder(path=".", labeled="no")
    with pytest.raises(DatakitError, match=r"no such folder; tried"):
        folder(path="missing", data_root=str(tmp_path)).validate()
    Image.new("L", (2, 2)).save(tmp_path / "flat.png")
    with pytest.raises(DatakitError, match="no class sub-folders.*labeled = false"):
        folder(path=str(tmp_path)).validate()
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.txt").write_text("x")
    with pytest.raises(DatakitError, match="no image files"):
        folder(path=str(tmp_path)).validate()


def test_folder_on_real_caltech_sample(shared_data):
    src = get_source("folder")(path="caltech101_sample", data_root=str(shared_data))
    assert len(src) == 25
    assert src.labels() == ["airplanes", "butterfly", "chair", "dolphin", "grand_piano"]
    sizes = {load_image(i.path).size for i in src.iter_items()}
    assert len(sizes) > 3  # odd sizes and aspect ratios all load


# --------------------------------------------------------------------------- sklearn digits

def test_sklearn_digits():
    src = get_source("sklearn-digits")(name="digits")
    src.validate()
    items = list(src.iter_items())
    assert len(items) == len(src) == 1797
    assert items[0].array.shape == (8, 8) and items[0].meta["value_range"] == (0.0, 16.0)
    assert np.bincount([int(i.label) for i in items]).tolist() == [178, 182, 177, 183, 181, 182, 181, 179, 174, 180]
    u8 = np.stack([item_to_image(i) for i in items[:50]])
    assert u8.dtype == np.uint8 and u8.max() == 255 and u8.min() == 0  # 16 -> 255
    assert items[5].source_ref == "sklearn-digits#5" and items[5].split is None
    with pytest.raises(DatakitError, match=r"unknown option 'n_class'. Valid options are \{\(none\)\}"):
        get_source("sklearn-digits")(n_class=5)


def test_sklearn_digits_read_without_sklearn_equal_load_digits(monkeypatch):
    """The bundled CSV is read directly (no scikit-learn import at start-up); the arrays are load_digits' own."""
    from sklearn.datasets import load_digits

    from datakit.sources import sklearn_digits

    assert sklearn_digits._bundled_file() is not None
    src = get_source("sklearn-digits")(name="digits")
    images, target = src._load()
    bunch = load_digits()
    np.testing.assert_array_equal(images, bunch.images)
    np.testing.assert_array_equal(target, bunch.target)
    # where the file is not found, load_digits itself is called
    monkeypatch.setattr(sklearn_digits, "_bundled_file", lambda: None)
    images2, target2 = src._load()
    np.testing.assert_array_equal(images2, bunch.images)
    np.testing.assert_array_equal(target2, bunch.target)


# --------------------------------------------------------------------------- torchvision

def test_torchvision_offline_missing_files_say_where_to_put_them(tmp_path):
    src = get_source("torchvision")(name="mnist", dataset="MNIST", root="tv", data_root=str(tmp_path))
    with pytest.raises(DatakitError, match=r"put train-images-idx3-ubyte, .* under .*tv/MNIST/raw, or set download = true"):
        src.validate()
    usps = get_source("torchvision")(dataset="USPS", root=str(tmp_path), args={"train": False})
    with pytest.raises(DatakitError, match=r"put usps\.t\.bz2 \(from https://.*\) in "):
        usps.validate()
    cifar = get_source("torchvision")(dataset="CIFAR10", root=str(tmp_path))
    with pytest.raises(DatakitError, match=r"extract cifar-10-python.tar.gz so that .*cifar-10-batches-py exists"):
        cifar.validate()


def test_torchvision_reads_fake_mnist_files(tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, (5, 28, 28), dtype=np.uint8)
    for prefix, n in (("train", 5), ("t10k", 3)):
        write_idx(raw / f"{prefix}-images-idx3-ubyte", imgs[:n])
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", np.arange(n, dtype=np.uint8))
    src = get_source("torchvision")(name="mnist", dataset="MNIST", root=str(tmp_path), args={"train": False})
    src.validate()
    items = list(src.iter_items())
    assert len(src) == 3 and [i.label for i in items] == ["0", "1", "2"]
    assert items[0].source_ref == "MNIST/test#0" and items[0].split == "test"
    assert np.array_equal(items[2].array, imgs[2])
    named = get_source("torchvision")(dataset="MNIST", root=str(tmp_path), label_names="classes")
    assert [i.label for i in named.iter_items()][:2] == ["0 - zero", "1 - one"]
    assert named.split == "train"


def test_torchvision_option_errors(tmp_path):
    tv = get_source("torchvision")
    with pytest.raises(DatakitError, match="unknown dataset 'MNSIT'. Did you mean 'MNIST'"):
        tv(dataset="MNSIT", root=str(tmp_path)).validate()
    with pytest.raises(DatakitError, match="option 'dataset'"):
        tv(root=str(tmp_path))
    with pytest.raises(DatakitError, match="'download' cannot go in 'args'"):
        tv(dataset="MNIST", args={"download": True})
    with pytest.raises(DatakitError, match="download must be true or false"):
        tv(dataset="MNIST", download="yes")
    with pytest.raises(DatakitError, match="bad arguments for torchvision.datasets.MNIST"):
        tv(dataset="MNIST", root=str(tmp_path), args={"colour": True}).validate()
    with pytest.raises(DatakitError, match="no data root"):
        tv(dataset="MNIST").root
