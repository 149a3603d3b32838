"""Write the real MNIST and USPS files of ../shared/data as datakit datasets.

Used by the training benchmarks until ``datakit build`` recipes are wired up:

    .venv/bin/python bench/train_data.py mnist out/mnist
    .venv/bin/python bench/train_data.py usps out/usps

MNIST: the IDX files (train images are re-gzipped; read with gzip + numpy),
60,000 train + 10,000 test, 28x28 uint8. USPS: ``usps.h5`` (7,291 train +
2,007 test, 16x16 floats in [0, 1], scaled to uint8 with round(255 x)).
"""
from __future__ import annotations

import argparse
import gzip
import os
import struct
import sys
import time
from pathlib import Path

import numpy as np

SHARED = Path(os.environ.get("DATAKIT_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


def read_idx_gz(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as fh:
        data = fh.read()
    ndim = struct.unpack(">i", data[:4])[0] & 0xFF
    shape = struct.unpack(">" + "i" * ndim, data[4:4 + 4 * ndim])
    return np.frombuffer(data, np.uint8, offset=4 + 4 * ndim).reshape(shape).copy()


def mnist_arrays(root: Path = SHARED / "mnist"):
    """((x_train, y_train), (x_test, y_test)), uint8 (N, 28, 28) and int64 (N,)."""
    xtr = read_idx_gz(root / "train-images-idx3-ubyte.gz")
    ytr = read_idx_gz(root / "train-labels-idx1-ubyte.gz").astype(np.int64)
    xte = read_idx_gz(root / "t10k-images-idx3-ubyte.gz")
    yte = read_idx_gz(root / "t10k-labels-idx1-ubyte.gz").astype(np.int64)
    return (xtr, ytr), (xte, yte)


def usps_arrays(path: Path = SHARED / "usps" / "usps.h5"):
    """((x_train, y_train), (x_test, y_test)), uint8 (N, 16, 16) and int64 (N,)."""
    import h5py

    out = []
    with h5py.File(path, "r") as f:
        for split in ("train", "test"):
            x = np.asarray(f[split]["data"], dtype=np.float64).reshape(-1, 16, 16)
            y = np.asarray(f[split]["target"], dtype=np.int64)
            out.append((np.clip(np.round(x * 255.0), 0, 255).astype(np.uint8), y))
    return tuple(out)


def write(name: str, out: Path) -> Path:
    from datakit.store.writer import write_dataset

    (xtr, ytr), (xte, yte) = mnist_arrays() if name == "mnist" else usps_arrays()
    images = np.concatenate([xtr, xte])
    labels = np.concatenate([ytr, yte]).tolist()
    splits = ["train"] * len(xtr) + ["test"] * len(xte)
    return write_dataset(out, images, labels, splits, source=name, name=name)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("name", choices=["mnist", "usps"])
    p.add_argument("out", type=Path)
    args = p.parse_args()
    t0 = time.perf_counter()
    root = write(args.name, args.out)
    print(f"wrote {root} in {time.perf_counter() - t0:.1f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
