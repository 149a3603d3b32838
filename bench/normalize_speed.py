"""MNIST-style normalization: throughput (images/s on one core) and fidelity, side by side.

Inputs: real MNIST test digits, each distorted as in the fidelity test
(:func:`datakit.normalize.fidelity.distort_digits`: random scale 0.5x-3x,
random position on a 96x96 canvas, half of them inverted).

Compared on the same inputs, in one process, one thread:

* ``pillow-baseline`` - a straightforward per-image implementation: invert
  if the border is light, crop the bounding box of nonzero pixels, resize it
  with Pillow (Lanczos) so the long side is 20, paste it into 28x28 shifted
  so the center of mass (rounded) is at pixel 14;
* ``datakit mnist`` - :func:`datakit.normalize.mnist.mnist`, one call per
  image (what the build does per item);
* ``datakit mnist_batch`` - :func:`datakit.normalize.mnist.mnist_batch` on
  chunks of same-size images.

Timing: CPU time of this process (``time.process_time``), so images per
CPU-second = images/s per core, which other jobs on a shared machine disturb
far less than wall time; the implementations run in interleaved rounds and
each reports its best round. Wall-clock figures are printed too. Fidelity: Pearson correlation of each output with its
original, mean over all images (and median, and the one-pixel shift-tolerant
mean).

Usage::

    .venv/bin/python bench/normalize_speed.py [--n 5000] [--rounds 7] [--batch 1000]
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from datakit.normalize.fidelity import distort_digits, pearson_rows, shift_tolerant_pearson  # noqa: E402
from datakit.normalize.mnist import mnist, mnist_batch  # noqa: E402
from datakit.sources.idx import read_idx  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def pillow_baseline(a: np.ndarray, box: int = 20, canvas: int = 28) -> np.ndarray:
    """A straightforward per-image MNIST normalization with Pillow."""
    border = np.concatenate((a[0], a[-1], a[:, 0], a[:, -1]))
    if border.mean() > 127:
        a = 255 - a
    rows = np.flatnonzero(a.any(axis=1))
    cols = np.flatnonzero(a.any(axis=0))
    if rows.size == 0:
        return np.zeros((canvas, canvas), np.uint8)
    crop = a[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
    h, w = crop.shape
    s = box / max(h, w)
    nh, nw = max(1, round(h * s)), max(1, round(w * s))
    small = np.asarray(Image.fromarray(crop).resize((nw, nh), Image.Resampling.LANCZOS), dtype=np.float32)
    total = small.sum()
    cy = float(small.sum(axis=1) @ np.arange(nh)) / total
    cx = float(small.sum(axis=0) @ np.arange(nw)) / total
    oy, ox = int(round(canvas // 2 - cy)), int(round(canvas // 2 - cx))
    out = np.zeros((canvas, canvas), np.uint8)
    y0, x0, y1, x1 = max(oy, 0), max(ox, 0), min(oy + nh, canvas), min(ox + nw, canvas)
    out[y0:y1, x0:x1] = small[y0 - oy:y1 - oy, x0 - ox:x1 - ox].astype(np.uint8)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=5000, help="number of MNIST test digits (max 10000)")
    ap.add_argument("--rounds", type=int, default=7, help="interleaved timing rounds (best one counts)")
    ap.add_argument("--batch", type=int, default=1000, help="images per mnist_batch call")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--data", default=os.environ.get("DATAKIT_SHARED_DATA", str(ROOT.parent / "shared" / "data")))
    args = ap.parse_args(argv)
    path = Path(args.data) / "mnist" / "t10k-images-idx3-ubyte.gz"
    if not path.exists():
        print(f"MNIST test images not found at {path}", file=sys.stderr)
        return 1
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:
        pass
    originals = read_idx(path)[: args.n]
    distorted = distort_digits(originals, seed=args.seed)
    images = list(distorted)
    n = len(images)

    def run_baseline():
        return np.stack([pillow_baseline(d) for d in images])

    def run_single():
        return np.stack([mnist(d) for d in images])

    def run_batch():
        return np.concatenate([mnist_batch(distorted[i:i + args.batch])[0] for i in range(0, n, args.batch)])

    impls = {"pillow-baseline (per image)": run_baseline, "datakit mnist (per image)": run_single,
             f"datakit mnist_batch ({args.batch}/call)": run_batch}
    outputs = {name: fn() for name, fn in impls.items()}  # warm-up, and the outputs for fidelity
    best = {name: float("inf") for name in impls}
    wall = {name: float("inf") for name in impls}
    for _ in range(args.rounds):
        for name, fn in impls.items():
            t, c = time.perf_counter(), time.process_time()
            fn()
            best[name] = min(best[name], time.process_time() - c)
            wall[name] = min(wall[name], time.perf_counter() - t)
    print(f"# MNIST-style normalization, {n} distorted real MNIST test digits (seed {args.seed}), "
          f"1 thread, best of {args.rounds} interleaved rounds")
    print(f"# python {platform.python_version()}, numpy {np.__version__}, pillow {Image.__version__}, "
          f"{platform.machine()}, load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    print(f"{'implementation':<34} {'img/CPU-s':>10} {'CPU us/img':>10} {'img/wall-s':>10} {'mean r':>7} "
          f"{'median r':>8} {'shift-tol r':>11}")
    for name in impls:
        r = pearson_rows(outputs[name], originals)
        tol = shift_tolerant_pearson(outputs[name], originals)
        print(f"{name:<34} {n / best[name]:>10.0f} {best[name] / n * 1e6:>10.1f} {n / wall[name]:>10.0f} "
              f"{np.nanmean(r):>7.4f} {np.nanmedian(r):>8.4f} {np.nanmean(tol):>11.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
