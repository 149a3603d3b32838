"""Benchmark: peak memory of near-duplicate grouping on clustered hashes (issue 7's flat-memory rule).

The build's finalize calls ``near_duplicate_groups`` (hash-only) or
``confirmed_duplicate_groups`` (hash candidates confirmed by 32x32
thumbnails). This script times both on the clustered pool of
``bench/dedup_1m.py --clustered`` (distinct bases: real MNIST pHashes and
random ones, the rest copies with 1 to 3 bits flipped; ``n // 20`` bases) at
several sizes and reports wall/CPU seconds and the peak traced numpy memory
(tracemalloc), so the growth of memory with n can be read off.

``confirmed_duplicate_groups`` gets a synthetic thumbnail function (fixed
random 32x32 uint8 pixels per hash family, ``hash % 64``, as the build's
staged thumbnails; no image decoding), so its figure is the search and the
thumbnail batches, not image I/O. Thumbnails that do not fit in one batch go
to a temporary file (``$TMPDIR``), which tracemalloc does not count.

Run::

    .venv/bin/python bench/dedup_memory.py --sizes 100000,1000000 --radii 4,8
    .venv/bin/python bench/dedup_memory.py --ref 36b124c   # the single-file datakit/dedup.py at a git ref
    .venv/bin/python bench/dedup_memory.py --module /tmp/old/dedup.py   # another single-file dedup.py

``datakit.dedup`` is a package since issue 13; its modules import each other
as ``datakit.dedup.*``, so another copy of the package cannot be loaded by
path next to this one: to measure another checkout's package, run this script
from that checkout. ``--module`` and ``--ref`` load a single-file ``dedup.py``
(the layout before the split, e.g. to compare with the new package).
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from dedup_1m import clustered_pool  # noqa: E402


def load(module: Path | None, ref: str | None = None):
    """``datakit.dedup``, or a single-file dedup.py: the file ``module``, or ``datakit/dedup.py`` at git ``ref``."""
    if ref is not None:
        source = subprocess.run(["git", "show", f"{ref}:datakit/dedup.py"], cwd=ROOT, check=True,
                                capture_output=True, text=True).stdout
        module = Path(tempfile.mkdtemp(prefix="dedup-memory-")) / "dedup.py"
        module.write_text(source)
    if module is None:
        import datakit.dedup as mod

        return mod
    if module.is_dir():
        raise SystemExit(f"--module {module}: give a single-file dedup.py; to measure another checkout's "
                         "datakit/dedup/ package, run bench/dedup_memory.py from that checkout")
    spec = importlib.util.spec_from_file_location("dedup_under_test", module)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def traced(fn):
    tracemalloc.start()
    tracemalloc.reset_peak()
    t0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    peak = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    return out, wall, cpu, peak


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="100000,1000000")
    ap.add_argument("--radii", default="4,8")
    ap.add_argument("--functions", default="groups,confirmed")
    ap.add_argument("--jobs", type=int, default=2)
    source = ap.add_mutually_exclusive_group()
    source.add_argument("--module", type=Path,
                        help="path of a single-file dedup.py to measure instead of datakit.dedup")
    source.add_argument("--ref", help="git ref whose single-file datakit/dedup.py to measure (e.g. 36b124c)")
    args = ap.parse_args(argv)
    mod = load(args.module, args.ref)
    rng = np.random.default_rng(0)
    family = rng.integers(0, 256, size=(64, 1024)).astype(np.uint8)  # 32x32 pixels, as the build stages them
    what = args.module or (f"{args.ref}:datakit/dedup.py" if args.ref else "datakit.dedup")
    print(f"# {what}; {os.cpu_count()} cores; numpy {np.__version__}")
    print("| function | n | max_distance | threads | wall s | CPU s | peak MiB (numpy, traced) | groups | "
          "load avg (1 min) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for n in [int(v) for v in args.sizes.split(",")]:
        h, _, _, _ = clustered_pool(n, 0, 10_000 * n // 1_000_000, max(1, n // 20))
        for r in [int(v) for v in args.radii.split(",")]:
            for name in args.functions.split(","):
                if name == "groups":
                    def run():
                        return mod.near_duplicate_groups(h, r, n_jobs=args.jobs)
                else:
                    def run():
                        return mod.confirmed_duplicate_groups(
                            h, r, lambda idx: family[(h[idx] % np.uint64(64)).astype(np.int64)], n_jobs=args.jobs)
                load_avg = os.getloadavg()[0]
                g, wall, cpu, peak = traced(run)
                print(f"| {name} | {n:,} | {r} | {args.jobs} | {wall:.2f} | {cpu:.2f} | {peak:.1f} | "
                      f"{len(np.unique(g)):,} | {load_avg:.1f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
