"""Data helpers for the training tests (a module of their own: ``from conftest import`` would pick up
whichever conftest pytest loaded first)."""
from __future__ import annotations

import numpy as np


def digits_arrays(n: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 1,797 real 8x8 digits, scaled 0-16 -> 0-255 uint8."""
    from sklearn.datasets import load_digits

    d = load_digits()
    images = np.round(d.images * (255.0 / 16.0)).astype(np.uint8)
    targets = d.target.astype(np.int64)
    return (images[:n], targets[:n]) if n else (images, targets)
