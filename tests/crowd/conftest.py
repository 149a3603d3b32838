"""Fixtures of the crowd tests: a small candidate dataset with known truth."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from datakit.store.writer import write_dataset

CLASSES = ["bag", "shirt", "shoe"]


@pytest.fixture
def crowd_dataset(tmp_path):
    """A 36-image candidate pool (12 per class, 8x8 random pixels) in tmp_path.

    Returns (root, truth) where ``truth`` is the true class per manifest id:
    every fourth candidate was collected for the wrong class, like a noisy
    image search.
    """
    rng = np.random.default_rng(0)
    n = 36
    images = rng.integers(0, 255, (n, 8, 8), dtype=np.uint8)
    labels = [CLASSES[i % 3] for i in range(n)]
    root = write_dataset(tmp_path / "pool", images, labels, "train")
    from datakit import open_dataset

    ids = open_dataset(root).manifest["id"].astype(str).tolist()
    true = [CLASSES[(i + 1) % 3] if i % 4 == 0 else labels[i] for i in range(n)]
    return root, pd.Series(true, index=ids, name="label")
