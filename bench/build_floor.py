"""Benchmark: the digits build against its floor (the per-image work alone), side by side in one run.

The *floor* does what the build's per-image pass must do and nothing else:
read the recipe's sources, decode, normalize with the batch normalizer (one
call per same-size group of a 256-image batch), make the 32x32 thumbnail and
the pHash, encode the PNG and write it under its sha256 (with the build's own
write, :func:`datakit.build.process._put_image`), on the same number of
worker processes, with at most ``2 * workers`` batches in flight, as the build
does, and ends with ``os.sync()`` (the images on disk, as the build's are
when it marks itself complete). It skips everything that is bookkeeping:
staging chunks, resumability, exact and near-duplicate search, splits, the
manifest, checksums, the datasheet.

Each timed run starts after an ``os.sync()``, so that what the previous run
left in the page cache is not written back during the next one's clock.
Then ``datakit build`` runs on the same recipe (a fresh output directory, a
subprocess, as a user would run it), and the report gives both wall times and
their ratio. It also measures the normalization *as the build calls it*
(:class:`datakit.build.process.BatchWork` on 256-image batches, the batch
normalizer's CPU time only) in images per CPU-second.

Usage::

    .venv/bin/python bench/build_floor.py --data-root ../shared/data --workers 2 [--rounds 2]
"""
from __future__ import annotations

import argparse
import functools
import itertools
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import deque
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _floor_batch(items: list, batch_normalizer, store: str) -> int:
    """Decode, normalize (grouped by size), thumbnail, hash, encode and write one batch; returns images written."""
    from datakit.dedup import thumbnail_pixels
    from datakit.hashing import _hash_gray32
    from datakit.sources.decode import item_to_image, to_array
    from datakit.build.process import _put_image
    from datakit.store.images import encode_png

    groups: dict[tuple, list] = {}
    for item in items:
        a = to_array(item_to_image(item), "L")
        groups.setdefault(a.shape, []).append(a)
    written = 0
    for arrays in groups.values():
        out, blank = batch_normalizer(np.stack(arrays))
        out = out[~blank]
        thumbs = np.stack([thumbnail_pixels(a) for a in out])
        _hash_gray32(thumbs.reshape(-1, 32, 32).astype(np.float64))
        for a in out:
            _put_image(store, encode_png(a))  # the build's own write: O_EXCL in place, folders made once
            written += 1
    return written


def floor(recipe: str, data_root: str, workers: int, batch_size: int = 256, sync_every: int | None = 4096,
          durable: bool = True) -> dict:
    """The per-image work alone; ``sync_every``: images between background ``os.sync()`` calls.

    ``sync_every=None``: one flush only, at the end.

    ``durable=False``: no flush at all; the images are still in the page cache
    when the clock stops (the floor as this benchmark first measured it).

    The build flushes before it commits each staged chunk of 4,096 items, on a
    thread of its own, so its writes reach the disk while the workers go on.
    The floor does the same (one flush at a time, never waiting for one), and
    waits for a last flush at the end; without them all the write-back would
    come at the end.
    """
    import threading

    from datakit.build import plan_build

    plan = plan_build(recipe, data_root=data_root)
    store = tempfile.mkdtemp(prefix="bench-floor-")
    os.sync()  # what earlier runs left in the page cache is written back before the clock starts, not during
    t0 = time.perf_counter()
    n_items = written = 0
    flusher: threading.Thread | None = None
    flushed_at = 0
    fn = functools.partial(_floor_batch, batch_normalizer=plan.batch_normalizer, store=store)
    with ProcessPoolExecutor(max_workers=workers) as pool:
        pending: deque = deque()
        for _, source in plan.sources:
            it = iter(source.iter_items())
            while batch := list(itertools.islice(it, batch_size)):
                n_items += len(batch)
                pending.append(pool.submit(fn, batch))
                while len(pending) >= 2 * workers:
                    written += pending.popleft().result()
                flush_due = durable and sync_every and written - flushed_at >= sync_every
                if flush_due and (flusher is None or not flusher.is_alive()):
                    flusher = threading.Thread(target=os.sync)
                    flusher.start()
                    flushed_at = written
        while pending:
            written += pending.popleft().result()
    if flusher is not None:
        flusher.join()
    if durable:
        os.sync()  # the images on disk, as the build's are when it finishes (it syncs before it marks itself complete)
    wall = time.perf_counter() - t0
    shutil.rmtree(store, ignore_errors=True)
    return {"wall_s": wall, "items": n_items, "written": written}


def build(recipe: str, data_root: str, workers: int) -> dict:
    out = Path(tempfile.mkdtemp(prefix="bench-build-")) / "digits"
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    cmd = [str(Path(sys.executable).with_name("datakit")), "build", recipe, "--out", str(out),
           "--data-root", data_root, "--workers", str(workers), "--quiet"]
    os.sync()  # as for the floor: no write-back of earlier runs during the clock
    t0 = time.perf_counter()
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - t0
    info = json.loads((out / "datakit.json").read_text())
    shutil.rmtree(out.parent, ignore_errors=True)
    return {"wall_s": wall, "timings": info["timings"], "kept": info["counts"]["kept"],
            "data_sha256": info["checksums"]["data_sha256"]}


def normalization_rate(recipe: str, data_root: str, n: int = 20000, batch_size: int = 256) -> float:
    """Images per CPU-second of the batch normalizer as BatchWork calls it (one process)."""
    from datakit.build import plan_build
    from datakit.build.process import BatchWork

    plan = plan_build(recipe, data_root=data_root)
    spent = [0.0, 0]

    def timed(images):
        t = time.process_time()
        result = plan.batch_normalizer(images)
        spent[0] += time.process_time() - t
        spent[1] += len(images)
        return result

    items = list(itertools.islice(plan.sources[0][1].iter_items(), n))
    store = tempfile.mkdtemp(prefix="bench-norm-")
    work = BatchWork(normalizer=plan.normalizer, batch_normalizer=timed, label_map=None, store_root=store)
    for i in range(0, len(items), batch_size):
        work.run_batch(items[i:i + batch_size])
    shutil.rmtree(store, ignore_errors=True)
    return spent[1] / spent[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--recipe", default=str(ROOT / "recipes" / "digits.toml"))
    ap.add_argument("--data-root", default=os.environ.get("DATAKIT_DATA", str(ROOT.parent / "shared" / "data")))
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=2, help="floor and build alternate this many times")
    args = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    print(f"# {args.recipe}; {os.cpu_count()} cores, {args.workers} workers; load average before: "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    floors, cached, builds = [], [], []
    for r in range(args.rounds):
        f = floor(args.recipe, args.data_root, args.workers)
        c = floor(args.recipe, args.data_root, args.workers, durable=False)
        b = build(args.recipe, args.data_root, args.workers)
        floors.append(f["wall_s"])
        cached.append(c["wall_s"])
        builds.append(b["wall_s"])
        t = b["timings"]
        print(f"round {r + 1}: floor {f['wall_s']:.2f} s ({f['items']} items, {f['written']} written, on disk); "
              f"floor left in the page cache {c['wall_s']:.2f} s; "
              f"build {b['wall_s']:.2f} s (per-image pass {t['process_seconds']:.2f} s, finalize "
              f"{t['finalize_seconds']:.2f} s, {b['kept']} kept); ratio {b['wall_s'] / f['wall_s']:.2f} "
              f"({b['wall_s'] / c['wall_s']:.2f} to the page-cache floor); data_sha256 {b['data_sha256'][:16]}")
    print(f"best of {args.rounds}: floor {min(floors):.2f} s (page cache: {min(cached):.2f} s), build "
          f"{min(builds):.2f} s, ratio {min(builds) / min(floors):.2f} ({min(builds) / min(cached):.2f} to the "
          f"page-cache floor)")
    rate = normalization_rate(args.recipe, args.data_root)
    print(f"normalization inside the build (BatchWork, 20,000 MNIST images, batches of 256): "
          f"{rate:,.0f} images per CPU-second")
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
