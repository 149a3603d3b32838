"""Image helpers for the tests (a module of their own: ``from conftest import`` would pick up
whichever conftest pytest loaded first)."""
from __future__ import annotations

from pathlib import Path


def save_png(path: Path, array) -> None:
    """Write ``array`` as a PNG at ``path`` (parent folders made)."""
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def blocky_glyph(seed: int):
    """A random blocky glyph, shape (40, 40) uint8; distinct seeds give distinct images."""
    import numpy as np

    rng = np.random.default_rng(seed)
    pattern = rng.random((5, 5)) < 0.5
    pattern[2, 2] = True
    a = np.zeros((40, 40), np.uint8)
    a[5:35, 5:35] = np.kron(pattern, np.ones((6, 6), bool)) * 255
    return a
