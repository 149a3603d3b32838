"""Fixtures for the training tests: small real-data datasets written with write_dataset."""
from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from train_fixtures import digits_arrays

from datakit.store.writer import write_dataset

# The test machine is shared: with 2 OpenMP threads spinning against other jobs,
# LeNet-5 ran at ~30 img/s versus ~1,200 img/s on one thread (measured).
torch.set_num_threads(1)


def read_idx_gz(path: Path) -> np.ndarray:
    """An IDX (gzip) file as a numpy array (magic, big-endian sizes, uint8 data)."""
    with gzip.open(path, "rb") as fh:
        data = fh.read()
    ndim = struct.unpack(">i", data[:4])[0] & 0xFF
    shape = struct.unpack(">" + "i" * ndim, data[4:4 + 4 * ndim])
    return np.frombuffer(data, np.uint8, offset=4 + 4 * ndim).reshape(shape).copy()


@pytest.fixture(scope="session")
def digits_dir(tmp_path_factory) -> Path:
    """A datakit dataset of 500 real sklearn digits: 400 train, 100 test, classes '0'..'9'."""
    images, targets = digits_arrays(500)
    splits = ["train"] * 400 + ["test"] * 100
    return write_dataset(tmp_path_factory.mktemp("digits") / "digits", images, targets.tolist(), splits,
                         source="sklearn_digits")


@pytest.fixture(scope="session")
def mnist_small_dir(tmp_path_factory, shared_data) -> Path:
    """600 real MNIST train images + 200 test images as a datakit dataset."""
    root = shared_data / "mnist"
    xtr = read_idx_gz(root / "train-images-idx3-ubyte.gz")[:600]
    ytr = read_idx_gz(root / "train-labels-idx1-ubyte.gz")[:600]
    xte = read_idx_gz(root / "t10k-images-idx3-ubyte.gz")[:200]
    yte = read_idx_gz(root / "t10k-labels-idx1-ubyte.gz")[:200]
    images = np.concatenate([xtr, xte])
    labels = np.concatenate([ytr, yte]).tolist()
    return write_dataset(tmp_path_factory.mktemp("mnist") / "mnist_small", images, labels,
                         ["train"] * 600 + ["test"] * 200, source="mnist")
