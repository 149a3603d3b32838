"""Benchmark: the pixel check of ``confirmed_duplicate_groups``, old (per-pair normalization) vs new.

Issue 13, step 4. The old check normalized both uint8 thumbnails of every
candidate pair as it compared them (zero mean, unit norm, in float32); the new
one normalizes each row of a block of thumbnails once
(``datakit.dedup.thumbnails._Normalized``) and each pair is one dot product.
Both versions run in one process on the same data, interleaved, best of
``--repeat``:

* ``pixel check``: ``_similar`` over every candidate pair of the pool (one
  block of thumbnails in memory; the new timing includes normalizing the
  block);
* ``confirmed``: the whole ``confirmed_duplicate_groups`` (two hash searches,
  thumbnail batches, the check, the components).

The old version is ``datakit/dedup.py`` read from git (``--old-ref``, default
the last commit before the package split) and loaded as a module. The results
must be identical: the same confirmed pairs, bit-identical similarities and
the same groups (checked; the script exits 1 otherwise).

Pool: the 10,000 real MNIST test digits from ``shared/data`` and their JPEG
q75 re-encodings (near copies that must be confirmed), 20,000 images, with
the 32x32 uint8 thumbnails the build stages (``thumbnail_pixels``) and their
pHashes. Without the MNIST file it falls back to scikit-learn's 1,797 digits
upsampled to 28x28 (and their re-encodings).

Run::

    .venv/bin/python bench/pixel_check.py --radii 4,8
"""
from __future__ import annotations

import argparse
import gzip
import importlib.util
import io
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from datakit import dedup  # noqa: E402
from datakit.dedup import confirm, thumbnails  # noqa: E402
from datakit.hashing import phash_many  # noqa: E402

SHARED = Path(os.environ.get("DATAKIT_SHARED_DATA", ROOT.parent / "shared" / "data"))
#: The last commit with the single-file ``datakit/dedup.py`` (before issue 13's split).
OLD_REF = "36b124c"


def load_old(ref: str):
    """``datakit/dedup.py`` at git ``ref``, loaded as a module of its own."""
    source = subprocess.run(["git", "show", f"{ref}:datakit/dedup.py"], cwd=ROOT, check=True,
                            capture_output=True, text=True).stdout
    folder = Path(tempfile.mkdtemp(prefix="pixel-check-"))
    path = folder / "dedup_old.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("dedup_old", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    path.unlink()
    folder.rmdir()
    return mod


def images() -> tuple[np.ndarray, str]:
    """Real digits and their JPEG q75 re-encodings, uint8 (N, 28, 28)."""
    from PIL import Image

    path = SHARED / "mnist" / "t10k-images-idx3-ubyte.gz"
    if path.exists():
        with gzip.open(path) as fh:
            x = np.frombuffer(fh.read(), np.uint8, offset=16).reshape(-1, 28, 28)
        what = f"{len(x):,} MNIST test digits ({path.name})"
    else:
        from sklearn.datasets import load_digits

        small = (load_digits().images * 16).clip(0, 255).astype(np.uint8)
        x = np.stack([np.asarray(Image.fromarray(a).resize((28, 28), Image.BILINEAR)) for a in small])
        what = f"{len(x):,} scikit-learn digits upsampled to 28x28 (no MNIST file at {path})"

    def jpeg(a: np.ndarray) -> np.ndarray:
        buf = io.BytesIO()
        Image.fromarray(a).save(buf, "JPEG", quality=75)
        with Image.open(buf) as im:
            return np.asarray(im)

    return np.concatenate([x, np.stack([jpeg(a) for a in x])]), f"{what} + their JPEG q75 re-encodings"


def best(fn, repeat: int):
    times, out = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return min(times), out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--radii", default="4,8", help="pHash radii of the candidate search")
    ap.add_argument("--repeat", type=int, default=3, help="timings per version (the best is reported)")
    ap.add_argument("--min-similarity", type=float, default=0.98)
    ap.add_argument("--old-ref", default=OLD_REF, help="git ref of the old single-file datakit/dedup.py")
    args = ap.parse_args(argv)
    old = load_old(args.old_ref)
    x, what = images()
    h = phash_many(x)
    pix = np.stack([dedup.thumbnail_pixels(a) for a in x])  # what the build stages: (N, 1024) uint8
    print(f"# {what}: {len(x):,} images; old = {args.old_ref}:datakit/dedup.py; numpy {np.__version__}; "
          f"{os.cpu_count()} cores; load average (1 min) {os.getloadavg()[0]:.2f}")
    print("| step | max_distance | pairs | old s | new s | speed-up | identical | load avg (1 min) |")
    print("|---|---|---|---|---|---|---|---|")
    ok = True
    for r in [int(v) for v in args.radii.split(",")]:
        pairs = dedup.near_duplicate_pairs(h, r)
        # as in confirmed_duplicate_groups: one block holding the images that have a candidate partner
        nodes, inverse = np.unique(pairs, return_inverse=True)
        block = pix[nodes]
        a, b = inverse.reshape(pairs.shape).T
        load = os.getloadavg()[0]

        def check_new():
            rows = thumbnails._Normalized(block)  # each row normalized once, included in the time
            return confirm._similar(rows, a, rows, b, args.min_similarity)

        t_old, keep_old = best(lambda: old._similar(block, a, block, b, args.min_similarity), args.repeat)
        t_new, keep_new = best(check_new, args.repeat)
        # the similarities of every pair, bit for bit (the old ones from per-pair normalized rows)
        unit = thumbnails._Normalized(block).unit
        same = bool(np.array_equal(keep_old, keep_new))
        for lo in range(0, len(a), 20_000):
            i, j = a[lo:lo + 20_000], b[lo:lo + 20_000]
            same &= np.array_equal(np.einsum("ij,ij->i", unit[i], unit[j]),
                                   np.einsum("ij,ij->i", old._unit_rows(block[i]), old._unit_rows(block[j])))
        ok &= same
        print(f"| pixel check ({len(nodes):,} images, {int(keep_new.sum()):,} confirmed) | {r} | {len(a):,} | "
              f"{t_old:.3f} | {t_new:.3f} | {t_old / t_new:.2f}x | {same} | {load:.2f} |", flush=True)
        load = os.getloadavg()[0]

        def thumbs(idx):
            return pix[idx]

        t_old, g_old = best(lambda: old.confirmed_duplicate_groups(h, r, thumbs, min_similarity=args.min_similarity),
                            args.repeat)
        t_new, g_new = best(lambda: dedup.confirmed_duplicate_groups(h, r, thumbs, min_similarity=args.min_similarity),
                            args.repeat)
        same = bool(np.array_equal(g_old, g_new))
        ok &= same
        print(f"| confirmed ({len(np.unique(g_new)):,} groups) | {r} | {len(a):,} | {t_old:.3f} | {t_new:.3f} | "
              f"{t_old / t_new:.2f}x | {same} | {load:.2f} |", flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
