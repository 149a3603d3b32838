"""Benchmark: near-duplicate search over one million 64-bit perceptual hashes.

What it measures (issue 4: "one million 64-bit hashes searched at distance up
to 8 in under a minute on this machine's two cores", issue 7: "near-duplicate
search at most n log n"):

* the hash pool: real pHashes of the 10,000 MNIST test digits and of JPEG
  (quality 75) re-encodings of them (real near duplicates, real bit
  correlations; skipped with a note when ../shared/data is absent), random
  64-bit hashes, and planted near-copy clusters at distances 0..10, shuffled;
* ``near_duplicate_pairs`` at distance 4, 6 and 8 on the full pool: wall and
  CPU seconds, peak traced memory (numpy allocations, tracemalloc), pairs found,
  the load average (the machine is shared);
* correctness: the full run's pairs restricted to a ~20k subsample (10k planted
  copies and their sources) equal a brute-force scan of that subsample;
* growth: the same search at 100k, 300k and 1M hashes and the fitted exponent
  k of time ~ n^k (k = 2 would be quadratic).

Run::

    .venv/bin/python bench/dedup_1m.py                # full (about 2-4 minutes on a busy 2-core machine)
    .venv/bin/python bench/dedup_1m.py --n 200000 --sizes 50000,100000,200000   # quick
    .venv/bin/python bench/dedup_1m.py --clustered 50000 --radii 4,8 --jobs 2 --sizes 1000000   # clustered pool
"""
from __future__ import annotations

import argparse
import gzip
import io
import json
import os
import platform
import resource
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from datakit.dedup import near_duplicate_pairs, popcount64  # noqa: E402
from datakit.hashing import phash_many  # noqa: E402

SHARED = Path(os.environ.get("DATAKIT_SHARED_DATA", ROOT.parent / "shared" / "data"))


def real_hashes(limit: int) -> tuple[np.ndarray, str]:
    """pHashes of MNIST test digits and of their JPEG q75 re-encodings."""
    path = SHARED / "mnist" / "t10k-images-idx3-ubyte.gz"
    if limit <= 0:
        return np.zeros(0, np.uint64), "no real hashes (--real 0)"
    if not path.exists():
        return np.zeros(0, np.uint64), f"no real hashes ({path} not found)"
    from PIL import Image

    with gzip.open(path) as fh:
        x = np.frombuffer(fh.read(), np.uint8, offset=16).reshape(-1, 28, 28)[:limit]

    def jpeg(a):
        buf = io.BytesIO()
        Image.fromarray(a).save(buf, "JPEG", quality=75)
        with Image.open(buf) as im:
            return np.asarray(im)

    h = phash_many(x)
    h2 = phash_many(jpeg(a) for a in x)
    d = popcount64(h ^ h2)
    note = (f"{len(x)} MNIST test pHashes + {len(x)} of their JPEG q75 re-encodings "
            f"(distance original-reencoded: median {np.median(d):.0f}, max {d.max()})")
    return np.concatenate([h, h2]), note


def pool(n: int, seed: int, n_real: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, str]:
    """``n`` hashes: real ones, random ones and planted near copies (10%) at distance 0..10.

    Returns hashes (shuffled), and for the planted copies their index and their source's index.
    """
    rng = np.random.default_rng(seed)
    real, note = real_hashes(n_real)
    real = real[:n]
    n_planted = (n - len(real)) // 10
    n_random = n - len(real) - n_planted
    random = rng.integers(0, 2**64, n_random, dtype=np.uint64)
    base = np.concatenate([real, random])
    src = rng.integers(0, len(base), n_planted)
    dist = rng.integers(0, 11, n_planted)
    flips = np.zeros(n_planted, np.uint64)
    # exactly `dist` distinct bits: draw 64 random keys per copy, flip the `dist` smallest
    for lo in range(0, n_planted, 100_000):
        keys = rng.random((min(100_000, n_planted - lo), 64))
        ranks = keys.argsort(1).argsort(1)
        bits = ranks < dist[lo:lo + len(keys), None]
        flips[lo:lo + len(keys)] = np.packbits(bits, axis=1).view(">u8").ravel().astype(np.uint64)
    hashes = np.concatenate([base, base[src] ^ flips])
    perm = rng.permutation(n)
    inv = np.empty(n, np.int64)
    inv[perm] = np.arange(n)
    planted_at = inv[len(base) + np.arange(n_planted)]
    source_at = inv[src]
    note += f"; {n_random} random 64-bit hashes; {n_planted} planted near copies at distance 0..10"
    return hashes[perm], planted_at, source_at, note


def clustered_pool(n: int, seed: int, n_real: int, distinct: int
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray, str]:
    """``n`` clustered hashes: ``distinct`` bases (real pHashes first, random ones after) and
    ``n - distinct`` copies of random bases with 1 to 3 bits flipped (many equal or near-equal hashes,
    like the pHashes of augmented images). Returns hashes (shuffled), copy positions, their bases' positions.
    """
    rng = np.random.default_rng(seed)
    real, note = real_hashes(n_real)
    real = real[:distinct]
    base = np.concatenate([real, rng.integers(0, 2**64, distinct - len(real), dtype=np.uint64)])
    n_copies = n - len(base)
    src = rng.integers(0, len(base), n_copies)
    dist = rng.integers(1, 4, n_copies)
    flips = np.zeros(n_copies, np.uint64)
    for k in range(3):  # up to 3 bit positions; equal draws or dist <= k leave fewer flips
        bit = rng.integers(0, 64, n_copies).astype(np.uint64)
        flips ^= np.where(dist > k, np.uint64(1) << bit, np.uint64(0))
    hashes = np.concatenate([base, base[src] ^ flips])
    perm = rng.permutation(n)
    inv = np.empty(n, np.int64)
    inv[perm] = np.arange(n)
    note += (f"; clustered: {len(base)} distinct bases ({len(real)} real), {n_copies} copies of random bases "
             f"with 1-3 bits flipped; {len(np.unique(hashes))} distinct hashes in all")
    return hashes[perm], inv[len(base) + np.arange(n_copies)], inv[src], note


def measure(hashes: np.ndarray, r: int, n_jobs: int) -> dict:
    tracemalloc.start()
    tracemalloc.reset_peak()
    load = os.getloadavg()[0]
    t0, c0 = time.perf_counter(), time.process_time()
    pairs, dist = near_duplicate_pairs(hashes, r, return_distances=True, n_jobs=n_jobs)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return {"n": len(hashes), "r": r, "n_jobs": n_jobs, "wall_s": round(wall, 2), "cpu_s": round(cpu, 2),
            "peak_mib": round(peak / 2**20, 1), "pairs": int(len(pairs)), "load_avg_1min": round(load, 1),
            "_pairs": pairs, "_dist": dist}


def brute(h: np.ndarray, r: int) -> np.ndarray:
    rows = []
    step = max(1, (1 << 22) // len(h))
    for lo in range(0, len(h), step):
        d = popcount64(h[lo:lo + step, None] ^ h[None, :])
        i, j = np.nonzero(d <= r)
        keep = j > i + lo
        rows.append(np.stack([i[keep] + lo, j[keep]], 1))
    out = np.concatenate(rows) if rows else np.zeros((0, 2), np.int64)
    return out[np.lexsort((out[:, 1], out[:, 0]))]


def verify(hashes: np.ndarray, pairs: np.ndarray, r: int, planted_at: np.ndarray, source_at: np.ndarray,
           rng: np.random.Generator, k: int = 10_000) -> dict:
    pick = rng.choice(len(planted_at), size=min(k, len(planted_at)), replace=False)
    sub = np.unique(np.concatenate([planted_at[pick], source_at[pick]]))
    t0 = time.perf_counter()
    want = brute(hashes[sub], r)
    brute_s = time.perf_counter() - t0
    pos = np.full(len(hashes), -1, np.int64)
    pos[sub] = np.arange(len(sub))
    a, b = pos[pairs[:, 0]], pos[pairs[:, 1]]
    inside = (a >= 0) & (b >= 0)
    got = np.stack([np.minimum(a, b)[inside], np.maximum(a, b)[inside]], 1)
    got = got[np.lexsort((got[:, 1], got[:, 0]))]
    return {"subsample": int(len(sub)), "brute_force_pairs": int(len(want)), "found_pairs": int(len(got)),
            "equal": bool(np.array_equal(got, want)), "brute_force_s": round(brute_s, 2)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--radii", default="4,6,8")
    ap.add_argument("--sizes", default="100000,300000,1000000", help="growth series at the largest radius")
    ap.add_argument("--jobs", default="1,2", help="thread counts to time at the largest radius")
    ap.add_argument("--real", type=int, default=10_000, help="MNIST test images to hash (0: synthetic only)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--clustered", type=int, default=0,
                    help="clustered pool: this many distinct bases, the rest 1-3-bit copies (0: the default pool)")
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args(argv)
    radii = [int(v) for v in args.radii.split(",")]
    sizes = [int(v) for v in args.sizes.split(",")]
    jobs = [int(v) for v in args.jobs.split(",")]
    r_max = max(radii)
    rng = np.random.default_rng(args.seed + 1)

    print(f"# near-duplicate search benchmark ({platform.node()}, {os.cpu_count()} cores, "
          f"python {platform.python_version()}, numpy {np.__version__})")
    t0 = time.perf_counter()
    make = pool if not args.clustered else (
        lambda n, seed, real: clustered_pool(n, seed, real, max(1, args.clustered * n // args.n)))
    hashes, planted_at, source_at, note = make(args.n, args.seed, args.real)
    print(f"pool of {len(hashes):,} hashes built in {time.perf_counter() - t0:.1f}s: {note}", flush=True)

    results = []
    print("\n| n | max_distance | threads | wall s | CPU s | peak MiB (numpy, traced) | pairs | load avg (1 min) |")
    print("|---|---|---|---|---|---|---|---|")

    def row(m):
        print(f"| {m['n']:,} | {m['r']} | {m['n_jobs']} | {m['wall_s']} | {m['cpu_s']} | {m['peak_mib']} | "
              f"{m['pairs']:,} | {m['load_avg_1min']} |", flush=True)

    full = {}
    for r in radii:
        for j in (jobs if r == r_max else jobs[-1:]):
            m = measure(hashes, r, j)
            row(m)
            full[(r, j)] = m
            results.append({k: v for k, v in m.items() if not k.startswith("_")})

    print("\nverification against brute force (full-run pairs restricted to the subsample):")
    checks = []
    for r in radii:
        m = full[(r, jobs[-1])]
        v = verify(hashes, m["_pairs"], r, planted_at, source_at, rng)
        v["r"] = r
        checks.append(v)
        print(f"  r={r}: {v}", flush=True)

    print(f"\ngrowth at max_distance={r_max}, threads={jobs[-1]}:")
    growth = []
    for n in sizes:
        if n == len(hashes):
            m = full[(r_max, jobs[-1])]
        else:
            h, _, _, _ = make(n, args.seed + n, args.real * n // args.n)  # same share of real hashes
            m = measure(h, r_max, jobs[-1])
        growth.append({k: v for k, v in m.items() if not k.startswith("_")})
        print(f"  n={n:,}: wall {m['wall_s']} s, CPU {m['cpu_s']} s, pairs {m['pairs']:,}, "
              f"load {m['load_avg_1min']}", flush=True)
    if len(growth) >= 2:
        n_ = np.log([g["n"] for g in growth])
        k_cpu = np.polyfit(n_, np.log([g["cpu_s"] for g in growth]), 1)[0]
        k_wall = np.polyfit(n_, np.log([g["wall_s"] for g in growth]), 1)[0]
        print(f"  fitted exponent time ~ n^k: k = {k_cpu:.2f} (CPU time), {k_wall:.2f} (wall time)")
    else:
        k_cpu = k_wall = float("nan")
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"\nprocess peak RSS: {peak_rss:.0f} MiB")
    if args.json:
        args.json.write_text(json.dumps({"note": note, "runs": results, "verification": checks, "growth": growth,
                                         "k_cpu": k_cpu, "k_wall": k_wall, "peak_rss_mib": peak_rss}, indent=2))
    return 0 if all(c["equal"] for c in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
