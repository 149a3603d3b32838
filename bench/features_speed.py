"""Classic feature extractors (hog, color_hist, gist, tiny): throughput on real CIFAR-10 test JPEGs.

Three measurements, on the same ``--n`` images (spread evenly over the 10 classes
of ``shared/data/cifar10_test_jpg``, 32x32 JPEGs):

* **decode** - :func:`datakit.features.decode_for_features` of each file, as the
  extractors need it (64x64 L for hog and gist, 64x64 RGB for color_hist,
  16x16 RGB for tiny);
* **transform** - ``extractor.transform`` alone on the decoded arrays, in
  batches of 128 (the default ``chunk_size`` of ``extract_features``), in this
  process; best of ``--rounds``;
* **end to end** - :func:`datakit.features.extract_features` on a dataset built
  from the same files (folder source, style ``none``) in a temporary directory,
  with ``--workers`` worker processes and an empty cache (decode, transform,
  cache writes, process start-up), then once more from the cache.

Images per CPU-second come from ``time.process_time`` (this process) plus, end
to end, the CPU time of the worker processes (``resource.getrusage(RUSAGE_CHILDREN)``,
counted when the pool is shut down); on a shared machine they are far steadier
than wall time, and they are images/s per core. Wall-clock rates are printed too.
Each extractor runs single-threaded (``OMP_NUM_THREADS=1``; the FFTs of
``gist`` use one thread).

Usage (the run recorded in ``bench/results/features.md``)::

    .venv/bin/python bench/features_speed.py --n 2000 --rounds 3 --workers 2
"""
from __future__ import annotations

import argparse
import os
import platform
import resource
import shutil
import sys
import tempfile
import textwrap
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
NAMES = ("hog", "color_hist", "gist", "tiny")
RECIPE = textwrap.dedent("""
    name = "cifar10_bench"
    seed = 0
    [[sources]]
    name = "cifar10"
    kind = "folder"
    path = "{path}"
    [normalize]
    style = "none"
    mode = "RGB"
""")


def cpu_seconds() -> float:
    """CPU time of this process and of its reaped children."""
    child = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + child.ru_utime + child.ru_stime


def pick_files(data: Path, n: int) -> list[Path]:
    """``n`` CIFAR-10 test JPEGs, the same number from each class folder (first ones by name)."""
    classes = sorted(p for p in (data / "cifar10_test_jpg").iterdir() if p.is_dir())
    per = -(-n // len(classes))
    files = [f for c in classes for f in sorted(c.glob("*.jpg"))[:per]]
    return files[:n]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=2000, help="images (default 2000)")
    ap.add_argument("--rounds", type=int, default=3, help="transform rounds; the best is reported (default 3)")
    ap.add_argument("--workers", type=int, default=2, help="worker processes end to end (default 2)")
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data", help="shared/data folder")
    args = ap.parse_args(argv)
    if not (args.data / "cifar10_test_jpg").is_dir():
        sys.exit(f"CIFAR-10 JPEGs not found under {args.data} (see shared/data/SOURCES.md)")

    from datakit import open_dataset
    from datakit.build import build_dataset
    from datakit.features import decode_for_features, extract_features, get_extractor

    files = pick_files(args.data, args.n)
    n = len(files)
    extractors = {name: get_extractor(name) for name in NAMES}
    print(f"# {n} CIFAR-10 test JPEGs (32x32), {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} CPUs, Python {platform.python_version()}, numpy {np.__version__}")
    print(f"# load: {os.getloadavg()}")

    # decode, once per (size, mode) the extractors need
    decoded: dict[tuple, np.ndarray] = {}
    decode_rows = []
    for key in sorted({(e.size, e.mode) for e in extractors.values()}):
        t_cpu, t_wall = time.process_time(), time.perf_counter()
        decoded[key] = np.stack([decode_for_features(f, *key) for f in files])
        cpu, wall = time.process_time() - t_cpu, time.perf_counter() - t_wall
        decode_rows.append((f"{key[0]}x{key[0]} {key[1]}", n / cpu, n / wall))

    # transform only
    transform = {}
    for name, ext in extractors.items():
        x = decoded[(ext.size, ext.mode)]
        ext.transform(x[:8])  # warm-up (imports, filter bank)
        best_cpu = best_wall = float("inf")
        for _ in range(args.rounds):
            t_cpu, t_wall = time.process_time(), time.perf_counter()
            for i in range(0, n, 128):
                out = ext.transform(x[i:i + 128])
            best_cpu = min(best_cpu, time.process_time() - t_cpu)
            best_wall = min(best_wall, time.perf_counter() - t_wall)
        transform[name] = (out.shape[1], n / best_cpu, n / best_wall)

    # end to end, through a dataset built from the same files
    tmp = Path(tempfile.mkdtemp(prefix="features-bench-"))
    try:
        src = tmp / "src"
        for f in files:
            (src / f.parent.name).mkdir(parents=True, exist_ok=True)
            shutil.copyfile(f, src / f.parent.name / f.name)
        (tmp / "recipe.toml").write_text(RECIPE.format(path=src.as_posix()))
        t_wall = time.perf_counter()
        build = build_dataset(tmp / "recipe.toml", tmp / "ds", workers=args.workers)
        build_wall = time.perf_counter() - t_wall
        ds = open_dataset(build.out)
        end = {}
        for name in NAMES:
            t_cpu, t_wall = cpu_seconds(), time.perf_counter()
            fm = extract_features(ds, name, workers=args.workers)
            cpu, wall = cpu_seconds() - t_cpu, time.perf_counter() - t_wall
            assert fm.info["computed"] == len(ds.manifest) and np.isfinite(fm.values).all(), fm.info
            t_wall = time.perf_counter()
            again = extract_features(ds, name, workers=args.workers)
            cached = time.perf_counter() - t_wall
            assert again.info["computed"] == 0
            end[name] = (len(ds.manifest) / cpu, len(ds.manifest) / wall, len(ds.manifest) / cached)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    print()
    print("| decode + resize | images / CPU-s | images / s (wall) |")
    print("|---|---:|---:|")
    for label, cpu, wall in decode_rows:
        print(f"| {label} | {cpu:,.0f} | {wall:,.0f} |")
    print()
    print(f"| extractor | dim | transform: images / CPU-s | transform: images / s (wall) | "
          f"end to end ({args.workers} workers): images / CPU-s | end to end: images / s (wall) | "
          f"from cache: images / s (wall) |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name in NAMES:
        dim, t_cpu, t_wall = transform[name]
        e_cpu, e_wall, e_cache = end[name]
        print(f"| {name} | {dim} | {t_cpu:,.0f} | {t_wall:,.0f} | {e_cpu:,.0f} | {e_wall:,.0f} | {e_cache:,.0f} |")
    print()
    print(f"# dataset build ({len(ds.manifest)} images, {args.workers} workers, not part of the table): "
          f"{build_wall:.1f} s wall")
    print(f"# load: {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
