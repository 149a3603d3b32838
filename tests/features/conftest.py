"""Fixtures of the classic-feature and cache tests: small real photo datasets and odd image files.

The datasets are built the way ``recipes/cifar10_test.toml`` and
``recipes/imagenette_subset.toml`` build them (folder source, normalize style
``none``: pixels and sizes unchanged), from a few files of ``../shared/data``.
"""
from __future__ import annotations

import shutil
import textwrap
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from datakit import open_dataset
from datakit.build import build_dataset

RECIPE = textwrap.dedent("""
    name = "{name}"
    seed = 0
    [[sources]]
    name = "{name}"
    kind = "folder"
    path = "{path}"
    [normalize]
    style = "none"
    mode = "{mode}"
    [splits]
    strategy = "fractions"
    train = 0.8
    val = 0.0
    test = 0.2
    seed = {split_seed}
""")


def copy_subset(files, src_root: Path, dest: Path) -> Path:
    """Copy ``files`` (paths under ``src_root``) to ``dest``, keeping their class folders."""
    for f in files:
        target = dest / f.relative_to(src_root)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(f, target)
    return dest


def build_folder(root: Path, name: str, folder: Path, *, mode: str = "RGB", split_seed: int = 0,
                 out: Path | None = None):
    """Build a dataset from a folder of class folders (a folder source, style ``none``); returns it opened."""
    recipe = root / f"{name}.toml"
    recipe.write_text(RECIPE.format(name=name, path=folder.as_posix(), mode=mode, split_seed=split_seed))
    result = build_dataset(recipe, out or root / name, workers=0)
    return open_dataset(result.out)


def cifar_files(shared: Path, per_class: int) -> list[Path]:
    """The first ``per_class`` CIFAR-10 test JPEGs of every class (32x32 RGB)."""
    base = shared / "cifar10_test_jpg"
    return [f for c in sorted(p for p in base.iterdir() if p.is_dir()) for f in sorted(c.glob("*.jpg"))[:per_class]]


def imagenette_files(shared: Path, per_class: int) -> tuple[list[Path], int]:
    """All 20 greyscale Imagenette JPEGs plus the first ``per_class`` RGB ones of every class (224x224)."""
    base = shared / "imagenette_val_224_subset"
    grey, rgb = [], []
    for c in sorted(p for p in base.iterdir() if p.is_dir()):
        colour = []
        for f in sorted(c.glob("*.JPEG")):
            with Image.open(f) as im:
                (grey if im.mode == "L" else colour).append(f)
        rgb += colour[:per_class]
    return sorted(grey + rgb), len(grey)


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


def write_odd_images(folder: Path) -> dict[str, Path]:
    """Synthetic images in awkward formats (seeded): CMYK JPEG, 16-bit PNG, 1x1, RGBA, palette, LA,
    a long thin strip, a blank one; one class folder ``odd``. Returns name -> path."""
    rng = np.random.default_rng(11)
    d = folder / "odd"
    d.mkdir(parents=True, exist_ok=True)
    rgb = rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)
    out = {
        "cmyk": (Image.fromarray(rgb).convert("CMYK"), "cmyk.jpg"),
        "16bit": (Image.fromarray((rng.integers(0, 65536, (30, 20))).astype(np.uint16)), "16bit.png"),
        "1x1": (Image.fromarray(np.array([[[200, 30, 90]]], np.uint8)), "one_pixel.png"),
        "rgba": (Image.fromarray(np.dstack([rgb, rng.integers(0, 256, (40, 50), dtype=np.uint8)]), "RGBA"),
                 "rgba.png"),
        "palette": (Image.fromarray(rgb[::-1].copy()).convert("P"), "palette.png"),
        "la": (Image.fromarray(np.dstack([rgb[..., 1], np.full((40, 50), 128, np.uint8)]), "LA"), "la.png"),
        "strip": (Image.fromarray(rng.integers(0, 256, (3, 300, 3), dtype=np.uint8)), "strip.png"),
        "blank": (Image.fromarray(np.full((20, 20, 3), 77, np.uint8)), "blank.png"),
    }
    paths = {}
    for key, (im, fname) in out.items():
        im.save(d / fname)
        paths[key] = d / fname
    return paths


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


def fresh_copy(src: Path, dest: Path):
    """Copy a dataset directory (without its caches) and open it."""
    shutil.copytree(src, dest, ignore=shutil.ignore_patterns(".cache"))
    return open_dataset(dest)
