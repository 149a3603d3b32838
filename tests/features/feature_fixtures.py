"""Helpers of the classic-feature and cache tests: small real photo datasets and odd image files.

A module with its own name (not ``conftest``), so test files can import these
helpers whatever other ``conftest`` module pytest loaded first.
"""
from __future__ import annotations

import shutil
import textwrap
from pathlib import Path

import numpy as np
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


def fresh_copy(src: Path, dest: Path):
    """Copy a dataset directory (without its caches) and open it."""
    shutil.copytree(src, dest, ignore=shutil.ignore_patterns(".cache"))
    return open_dataset(dest)
