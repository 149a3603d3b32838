"""Fixtures of the classic-feature and cache tests: small real photo datasets and odd image files.

The datasets are built the way ``recipes/cifar10_test.toml`` and
``recipes/imagenette_subset.toml`` build them (folder source, normalize style
``none``: pixels and sizes unchanged), from a few files of ``../shared/data``.
"""
from __future__ import annotations

import pytest

from feature_fixtures import build_folder, cifar_files, copy_subset, fresh_copy, imagenette_files, write_odd_images


@pytest.fixture(scope="session")
def classic_photos(tmp_path_factory, shared_data):
    """Two real datasets: 60 CIFAR-10 test images (6 per class) and 60 Imagenette images
    (the 20 greyscale JPEGs + 4 RGB per class), as ``{"cifar10": Dataset, "imagenette": Dataset}``."""
    root = tmp_path_factory.mktemp("classic-photos")
    cifar = copy_subset(cifar_files(shared_data, 6), shared_data / "cifar10_test_jpg", root / "src" / "cifar10")
    files, n_grey = imagenette_files(shared_data, 4)
    assert n_grey == 20  # shared/data/SOURCES.md: 20 of the 1,000 are mode L
    nette = copy_subset(files, shared_data / "imagenette_val_224_subset", root / "src" / "imagenette")
    return {"cifar10": build_folder(root, "cifar10", cifar), "imagenette": build_folder(root, "imagenette", nette)}


@pytest.fixture(scope="session")
def odd_images(tmp_path_factory):
    """``(Dataset, {name: original file})``: the odd images of :func:`write_odd_images` built as a folder
    dataset (style ``none``, RGB), and the files themselves."""
    root = tmp_path_factory.mktemp("odd-images")
    paths = write_odd_images(root / "src")
    return build_folder(root, "odd", root / "src"), paths


@pytest.fixture(scope="module")
def cifar_built(tmp_path_factory, shared_data):
    """``(root, source folder)``: 40 real CIFAR-10 test images (4 per class) built into a dataset once per
    module; tests that change it work on :func:`fresh_copy`."""
    root = tmp_path_factory.mktemp("cifar-cache")
    src = copy_subset(cifar_files(shared_data, 4), shared_data / "cifar10_test_jpg", root / "src" / "cifar10")
    build_folder(root, "cifar10", src, out=root / "built")
    return root, src


@pytest.fixture
def cifar40(cifar_built, tmp_path):
    """A fresh copy (no feature cache) of the 40-image CIFAR-10 dataset."""
    return fresh_copy(cifar_built[0] / "built", tmp_path / "ds")
