"""How the cost of building and auditing grows with the number of images.

Makes synthetic-plus-real pools of N images by augmenting real data (MNIST
train + test and USPS from ``../shared/data``, Fashion-MNIST from
``/usr/share/datasets/fashion-mnist``) with random affine jitter (rotation
+-10 degrees, scale 0.9-1.1, shift +-1.4 px) and pixel noise; 10% of each pool
are the real images unchanged (so exact duplicates, and their rejected rows,
occur as they do in crawled data). A pool is stored compactly as one pair of
raw IDX files (784 bytes an image) and read by the ``idx`` source, in chunks.

For every size and backend it then runs, each in a fresh subprocess:

* ``build``: ``datakit.build.build_dataset`` of a one-source recipe
  (normalize style ``none``, 80/10/10 stratified splits, near-duplicate-aware)
  with local processes (``workers=W``) or a Dask local cluster
  (``scheduler="local-cluster"``, W workers);
* ``audit``: near-duplicate search over the whole store (``datakit.dedup``
  on the manifest's 64-bit pHashes, radius 4 bits) and the ``balance`` audit.

It reports wall time, images/s, the peak RSS of the driver process and the
peak summed RSS of the driver and all its worker processes (sampled every
0.1 s), and fits the growth exponent k of time ~ n^k by least squares on
log-log. For reference, n log n over the same sizes has exponent
log(n2 log n2 / n1 log n1) / log(n2 / n1).

Usage::

    .venv/bin/python bench/scale.py --sizes 10000,100000 --backends processes,dask \\
        --workers 2 --work /tmp/datakit-scale --json /tmp/datakit-scale/results.json

The work directory gets the pools (kept between runs: ~0.8 GB for 1M) and
the built datasets (removed after each measurement unless ``--keep``).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("DATAKIT_SHARED_DATA", ROOT.parent / "shared" / "data"))
FASHION = Path("/usr/share/datasets/fashion-mnist")
FASHION_NAMES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                 "Ankle boot"]
LABEL_NAMES = [str(d) for d in range(10)] + FASHION_NAMES


# --------------------------------------------------------------------------- pools


def _read_idx_gz(path: Path) -> np.ndarray:
    from datakit.sources.idx import read_idx

    return read_idx(path)


def real_base() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every real 28x28 image at hand: (images (N, 28, 28) uint8, labels (N,) 0-19, origin (N,) str)."""
    import h5py
    import torch
    import torch.nn.functional as F

    parts, labels, origin = [], [], []
    for split, prefix in (("train", "train"), ("test", "t10k")):
        parts.append(_read_idx_gz(SHARED / "mnist" / f"{prefix}-images-idx3-ubyte.gz"))
        labels.append(_read_idx_gz(SHARED / "mnist" / f"{prefix}-labels-idx1-ubyte.gz").astype(np.int64))
        origin += [f"mnist-{split}"] * len(labels[-1])
    with h5py.File(SHARED / "usps" / "usps.h5", "r") as h5:
        for split in ("train", "test"):
            x = np.asarray(h5[split]["data"], dtype=np.float32).reshape(-1, 1, 16, 16)
            # MNIST-like framing: 16x16 -> 20x20, centred in 28x28
            x = F.interpolate(torch.from_numpy(x), size=(20, 20), mode="bilinear", align_corners=False)
            x = F.pad(x, (4, 4, 4, 4)).clamp(0, 1).mul(255).round().to(torch.uint8).numpy()[:, 0]
            parts.append(x)
            labels.append(np.asarray(h5[split]["target"], dtype=np.int64))
            origin += [f"usps-{split}"] * len(x)
    if any(FASHION.glob("*idx*")):
        for split, prefix in (("train", "train"), ("test", "t10k")):
            parts.append(_read_idx_gz(FASHION / f"{prefix}-images-idx3-ubyte.gz"))
            labels.append(_read_idx_gz(FASHION / f"{prefix}-labels-idx1-ubyte.gz").astype(np.int64) + 10)
            origin += [f"fashion-{split}"] * len(labels[-1])
    return np.concatenate(parts), np.concatenate(labels), np.array(origin)


def augment(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Random affine jitter + Gaussian pixel noise; (B, 28, 28) uint8 -> (B, 28, 28) uint8."""
    import torch
    import torch.nn.functional as F

    b = len(images)
    angle = np.deg2rad(rng.uniform(-10, 10, b))
    scale = rng.uniform(0.9, 1.1, b)
    shift = rng.uniform(-0.1, 0.1, (b, 2))
    theta = np.zeros((b, 2, 3), np.float32)
    theta[:, 0, 0] = np.cos(angle) / scale
    theta[:, 0, 1] = -np.sin(angle) / scale
    theta[:, 1, 0] = np.sin(angle) / scale
    theta[:, 1, 1] = np.cos(angle) / scale
    theta[:, :, 2] = shift
    x = torch.from_numpy(images[:, None].astype(np.float32))
    grid = F.affine_grid(torch.from_numpy(theta), list(x.shape), align_corners=False)
    y = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)[:, 0].numpy()
    y += rng.normal(0, 6.0, y.shape).astype(np.float32)
    return np.clip(np.rint(y), 0, 255).astype(np.uint8)


def make_pool(n: int, work: Path, seed: int = 0) -> tuple[Path, Path]:
    """Write (or reuse) ``work/pools/pool<n>/train-{images,labels}-idx?-ubyte`` (raw IDX)."""
    from datakit.sources.idx import write_idx

    folder = work / "pools" / f"pool{n}"
    images_path = folder / "train-images-idx3-ubyte"
    labels_path = folder / "train-labels-idx1-ubyte"
    if images_path.exists() and labels_path.exists():
        return images_path, labels_path
    folder.mkdir(parents=True, exist_ok=True)
    base_cache = work / "pools" / "real-base.npz"
    if base_cache.exists():
        with np.load(base_cache) as z:
            base, base_labels = z["images"], z["labels"]
    else:
        base, base_labels, _ = real_base()
        np.savez(base_cache, images=base, labels=base_labels)
    rng = np.random.default_rng(seed)
    pick = rng.integers(0, len(base), n)
    real = rng.random(n) < 0.10
    tmp = images_path.with_suffix(".tmp")
    step = 50_000
    with open(tmp, "wb") as fh:
        fh.write(bytes([0, 0, 0x08, 3]) + np.array([n, 28, 28], ">u4").tobytes())
        for lo in range(0, n, step):
            idx = pick[lo:lo + step]
            block = augment(base[idx], rng)
            keep = real[lo:lo + step]
            block[keep] = base[idx[keep]]
            fh.write(block.tobytes())
    os.replace(tmp, images_path)
    write_idx(labels_path, base_labels[pick].astype(np.uint8))
    return images_path, labels_path


# --------------------------------------------------------------------------- measured steps (subprocesses)

RECIPE = """\
name = "scale-{n}"
seed = 0

[[sources]]
name = "pool"
kind = "idx"
root = "{root}"
split = "train"
label_names = {label_names}

[normalize]
style = "{style}"

[splits]
strategy = "fractions"
train = 0.8
val = 0.1
test = 0.1
near_duplicate_distance = 4
"""


def _peak_self_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def step_build(args) -> dict:
    from datakit.build import build_dataset

    images, labels = make_pool(args.n, Path(args.work))
    recipe = Path(args.out).with_suffix(".toml")
    recipe.write_text(RECIPE.format(n=args.n, root=images.parent, style=args.style,
                                    label_names=json.dumps(LABEL_NAMES)))
    scheduler = "local-cluster" if args.backend == "dask" else None
    t0 = time.perf_counter()
    done = [0, 0]

    def progress(k: int) -> None:  # a line on stderr every 50,000 images, to see how far a long run got
        done[0] += k
        if done[0] - done[1] >= 50_000:
            done[1] = done[0]
            print(f"  {args.backend} {args.n}: {done[0]} images in {time.perf_counter() - t0:.0f} s",
                  file=sys.stderr, flush=True)

    result = build_dataset(recipe, args.out, workers=args.workers, scheduler=scheduler, progress=progress)
    seconds = time.perf_counter() - t0
    timings = result.info.get("timings", {})
    return {"seconds": seconds, "kept": result.kept, "rejected": result.rejected,
            "process_seconds": timings.get("process_seconds"), "finalize_seconds": timings.get("finalize_seconds"),
            "driver_peak_mb": _peak_self_mb()}


def step_audit(args) -> dict:
    import pandas as pd

    from datakit._memory import use_system_allocator

    use_system_allocator()  # as the `datakit` command does at start

    from datakit import open_dataset
    from datakit.dedup import near_duplicate_groups

    t0 = time.perf_counter()
    hashes = pd.read_parquet(Path(args.out) / "manifest.parquet", columns=["phash"])["phash"].to_numpy(np.uint64)
    t1 = time.perf_counter()
    groups = near_duplicate_groups(hashes, 4)
    t2 = time.perf_counter()
    out = {"n_hashes": int(len(hashes)), "read_seconds": t1 - t0, "dedup_seconds": t2 - t1,
           "groups_with_several": int((np.bincount(groups) > 1).sum())}
    from datakit.report import run_audits

    names = [a for a in args.audits.split(",") if a]
    t3 = time.perf_counter()
    run = run_audits([open_dataset(args.out)], names=names, options={"duplicates": {"max_listed": 100}}
                     if "duplicates" in names else None)
    out["audits_seconds"] = time.perf_counter() - t3
    out["audit_status"] = dict(run.status)
    out["audit_seconds"] = {k: round(v, 2) for k, v in run.seconds.items()}
    for r in run.results:
        if run.status.get(r.name) == "failed":
            out.setdefault("audit_errors", {})[r.name] = r.skipped
    if "balance" in run.seconds:
        out["balance_seconds"] = run.seconds["balance"]
    out["driver_peak_mb"] = _peak_self_mb()  # the audits (run_audits)
    # then the report files `datakit audit` writes by default (html and json), from the same run
    import tempfile

    from datakit.report import write_report

    t4 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="scale-report-") as folder:
        paths = write_report(run, folder, ["html", "json"])
        out["report_mb"] = round(sum(p.stat().st_size for p in paths) / 2**20, 1)
    out["report_seconds"] = round(time.perf_counter() - t4, 2)
    out["report_peak_mb"] = _peak_self_mb()
    return out


def pool_hashes(n: int, work: Path) -> np.ndarray:
    """64-bit pHashes of every image of pool ``n`` (cached next to the pool), as the build stores them."""
    from datakit.hashing import phash_many
    from datakit.sources.idx import read_idx

    images_path, _ = make_pool(n, work)
    cache = images_path.parent / "phash.npy"
    if cache.exists():
        return np.load(cache)
    hashes = phash_many(read_idx(images_path))
    np.save(cache, hashes)
    return hashes


def step_dedup(args) -> dict:
    """Near-duplicate search alone over pool ``n``'s hashes (the audit's and the build's core search)."""
    from datakit.dedup import near_duplicate_groups

    hashes = pool_hashes(args.n, Path(args.work))
    base = _peak_self_mb()
    t0 = time.perf_counter()
    groups = near_duplicate_groups(hashes, 4)
    seconds = time.perf_counter() - t0
    return {"n_hashes": int(len(hashes)), "dedup_seconds": seconds,
            "groups_with_several": int((np.bincount(groups) > 1).sum()),
            "driver_peak_mb": _peak_self_mb(), "peak_before_search_mb": base}


def step_writer(args) -> dict:
    """Stream an ``n``-row manifest through ``DatasetWriter.write_manifest`` in 16,384-row frames."""
    import pandas as pd
    import pyarrow.parquet as pq

    from datakit.store.writer import DatasetWriter

    rng = np.random.default_rng(0)
    step = 16384

    def frames():
        for lo in range(0, args.n, step):
            k = min(step, args.n - lo)
            ids = [f"{v:064x}" for v in rng.integers(0, 2**62, k)]
            yield pd.DataFrame({"id": ids, "path": [f"images/{i[:2]}/{i}.png" for i in ids],
                                "label": rng.integers(0, 20, k).astype(str), "split": "train",
                                "source": "pool", "source_ref": [f"train-images-idx3-ubyte#{lo + j}" for j in range(k)],
                                "width": 28, "height": 28, "phash": rng.integers(0, 2**63, k).astype(np.uint64)})

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    rows = DatasetWriter(out).write_manifest(frames())
    seconds = time.perf_counter() - t0
    meta = pq.ParquetFile(out / "manifest.parquet").metadata
    return {"rows": rows, "row_groups": meta.num_row_groups, "seconds": seconds, "driver_peak_mb": _peak_self_mb()}


def run_measured(cmd: list[str], timeout: float | None) -> tuple[dict, float, float]:
    """Run ``cmd``; return (its JSON result, wall seconds, peak summed RSS of its process tree in MB)."""
    import psutil

    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    peak = 0
    root = psutil.Process(proc.pid)
    while proc.poll() is None:
        total = 0
        try:
            for p in [root, *root.children(recursive=True)]:
                try:
                    total += p.memory_info().rss
                except psutil.Error:
                    pass
        except psutil.Error:
            pass
        peak = max(peak, total)
        if timeout is not None and time.perf_counter() - t0 > timeout:
            for p in [*root.children(recursive=True), root]:
                try:
                    p.kill()
                except psutil.Error:
                    pass
            raise TimeoutError(f"{' '.join(cmd)} ran longer than {timeout} s")
        time.sleep(0.1)
    wall = time.perf_counter() - t0
    out = proc.stdout.read()
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed with status {proc.returncode}")
    return json.loads(out.strip().splitlines()[-1]), wall, peak / 2**20


def fit_exponent(ns: list[int], ts: list[float]) -> float | None:
    """k of t ~ n^k, least squares on log-log (None with fewer than 2 sizes)."""
    if len(ns) < 2:
        return None
    return float(np.polyfit(np.log(ns), np.log(ts), 1)[0])


def nlogn_exponent(ns: list[int]) -> float | None:
    if len(ns) < 2:
        return None
    return fit_exponent(ns, [n * math.log(n) for n in ns])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="10000,100000", help="comma-separated pool sizes")
    parser.add_argument("--backends", default="processes,dask", help="processes and/or dask")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--work", default="/tmp/datakit-scale", help="pools and built datasets go here")
    parser.add_argument("--style", default="none", help="normalize style of the recipe")
    parser.add_argument("--json", default=None, help="also write the results here")
    parser.add_argument("--keep", action="store_true", help="keep the built datasets")
    parser.add_argument("--timeout", type=float, default=None, help="give up on one step after this many seconds")
    parser.add_argument("--combine", default=None,
                        help="comma-separated JSON files of earlier runs: merge their rows and refit (no new runs)")
    parser.add_argument("--search-only", action="store_true",
                        help="only time near-duplicate search over each pool's pHashes (no build)")
    parser.add_argument("--writer-only", action="store_true",
                        help="only stream an N-row manifest through DatasetWriter.write_manifest (no build)")
    parser.add_argument("--audits", default="balance,duplicates,low_level_stats,average_image,orientation_artifacts",
                        help="audits the audit step runs through run_audits (as `datakit audit` does)")
    parser.add_argument("--audit-only", action="store_true",
                        help="audit the datasets an earlier --keep run left in --work (no pool, no build)")
    parser.add_argument("--step", choices=["build", "audit", "pool", "dedup", "writer"], help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--backend", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    if args.step:
        if args.step == "pool":  # torch only where it is used (augmentation): it alone adds ~500 MB of RSS
            import torch

            torch.set_num_threads(1)
        if args.step == "pool":
            t0 = time.perf_counter()
            make_pool(args.n, Path(args.work))
            print(json.dumps({"seconds": time.perf_counter() - t0}))
            return 0
        steps = {"build": step_build, "audit": step_audit, "dedup": step_dedup, "writer": step_writer}
        print(json.dumps(steps[args.step](args)))
        return 0

    if args.combine:
        rows = [r for f in args.combine.split(",") for r in json.loads(Path(f).read_text())["rows"]]
        rows.sort(key=lambda r: (r["backend"], r["n"]))
        backends = sorted({r["backend"] for r in rows})
        return _report(rows, backends, sorted({r["n"] for r in rows}), args)

    sizes = [int(s) for s in args.sizes.split(",")]
    backends = [b.strip() for b in args.backends.split(",")]
    for b in backends:
        if b not in ("processes", "dask"):
            parser.error(f"unknown backend {b!r}; valid values are processes, dask")
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    me = [sys.executable, str(Path(__file__).resolve())]
    if args.search_only or args.writer_only:
        return _components(args, sizes, work, me)
    rows = []
    for n in sizes:
        if not args.audit_only:
            info, wall, _ = run_measured(me + ["--step", "pool", "--n", str(n), "--work", str(work)], args.timeout)
            print(f"pool {n}: ready ({wall:.1f} s)", file=sys.stderr, flush=True)
        for backend in backends:
            out = work / f"ds-{n}-{backend}"
            common = ["--n", str(n), "--work", str(work), "--out", str(out), "--backend", backend,
                      "--workers", str(args.workers), "--style", args.style, "--audits", args.audits]
            if args.audit_only:
                if not (out / "datakit.json").is_file():
                    parser.error(f"--audit-only: no built dataset at {out} (run once with --keep)")
                info = json.loads((out / "datakit.json").read_text())
                row = {"n": n, "backend": backend, "workers": args.workers, "kept": info["counts"]["kept"],
                       "rejected": info["counts"]["rejected"]}
            else:
                row = _build_row(me, common, n, backend, args, out)
            audit, wall, tree = run_measured(me + ["--step", "audit", *common], args.timeout)
            row.update({"audit_wall_s": round(wall, 2), "dedup_s": round(audit["dedup_seconds"], 3),
                        "near_dup_groups": audit["groups_with_several"],
                        "balance_s": round(audit["balance_seconds"], 3) if "balance_seconds" in audit else None,
                        "audit_driver_peak_mb": round(audit["driver_peak_mb"], 1),
                        "report_peak_mb": round(audit["report_peak_mb"], 1), "report_s": audit["report_seconds"],
                        "report_files_mb": audit["report_mb"],
                        "audits": audit.get("audit_status"), "audit_seconds": audit.get("audit_seconds")})
            if "audit_errors" in audit:
                row["audit_errors"] = audit["audit_errors"]
            print(f"audit {n} {backend}: {row}", file=sys.stderr, flush=True)
            rows.append(row)
            if not args.keep and not args.audit_only:  # --audit-only audits what an earlier run kept: it stays
                shutil.rmtree(out, ignore_errors=True)
    return _report(rows, backends, sizes, args)


def _build_row(me: list[str], common: list[str], n: int, backend: str, args, out: Path) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    build, wall, tree = run_measured(me + ["--step", "build", *common], args.timeout)
    row = {"n": n, "backend": backend, "workers": args.workers, "build_wall_s": round(wall, 2),
           "build_images_per_s": round(n / wall, 1), "kept": build["kept"], "rejected": build["rejected"],
           "process_s": build["process_seconds"], "finalize_s": build["finalize_seconds"],
           "build_driver_peak_mb": round(build["driver_peak_mb"], 1), "build_tree_peak_mb": round(tree, 1)}
    print(f"build {n} {backend}: {row}", file=sys.stderr, flush=True)
    return row


def _report(rows: list[dict], backends: list[str], sizes: list[int], args) -> int:
    fits = {}
    for backend in backends:
        sel = [r for r in rows if r["backend"] == backend]
        ns = [r["n"] for r in sel]
        built = [r for r in sel if "build_wall_s" in r]
        fits[backend] = {
            "audit_peak_ratio_per_10x": _ratio_per_10x(sel, "audit_driver_peak_mb"),
            "report_peak_ratio_per_10x": _ratio_per_10x(sel, "report_peak_mb"),
            "dedup_k": fit_exponent(ns, [r["dedup_s"] for r in sel]),
            "nlogn_k": nlogn_exponent(ns),
        }
        if len(built) != len(sel):
            continue
        fits[backend] |= {
            "build_k": fit_exponent(ns, [r["build_wall_s"] for r in sel]),
            "dedup_k": fit_exponent(ns, [r["dedup_s"] for r in sel]),
            "nlogn_k": nlogn_exponent(ns),
            "driver_peak_ratio_per_10x": _ratio_per_10x(sel, "build_driver_peak_mb"),
            "tree_peak_ratio_per_10x": _ratio_per_10x(sel, "build_tree_peak_mb"),
        }
    result = {"rows": rows, "fits": fits, "sizes": sizes, "workers": args.workers, "style": args.style,
              "cpu_count": os.cpu_count()}
    text = json.dumps(result, indent=2)
    if args.json:
        Path(args.json).write_text(text + "\n")
    print(text)
    return 0


def _components(args, sizes: list[int], work: Path, me: list[str]) -> int:
    """Near-duplicate search or manifest streaming alone, per size, each in a fresh subprocess."""
    rows = []
    for n in sizes:
        if args.search_only:
            run_measured(me + ["--step", "pool", "--n", str(n), "--work", str(work)], args.timeout)
            res, wall, tree = run_measured(me + ["--step", "dedup", "--n", str(n), "--work", str(work)], args.timeout)
            row = {"n": n, "what": "near-duplicate search (r=4)", "seconds": round(res["dedup_seconds"], 3),
                   "groups_with_several": res["groups_with_several"], "driver_peak_mb": round(res["driver_peak_mb"], 1),
                   "peak_before_search_mb": round(res["peak_before_search_mb"], 1)}
        else:
            out = work / f"writer-{n}"
            res, wall, tree = run_measured(me + ["--step", "writer", "--n", str(n), "--work", str(work),
                                                 "--out", str(out)], args.timeout)
            shutil.rmtree(out, ignore_errors=True)
            row = {"n": n, "what": "manifest streaming", "seconds": round(res["seconds"], 3),
                   "row_groups": res["row_groups"], "driver_peak_mb": round(res["driver_peak_mb"], 1)}
        print(f"{row}", file=sys.stderr, flush=True)
        rows.append(row)
    ns = [r["n"] for r in rows]
    result = {"rows": rows, "k": fit_exponent(ns, [r["seconds"] for r in rows]), "nlogn_k": nlogn_exponent(ns),
              "peak_ratio_per_10x": _ratio_per_10x([dict(r, backend="-") for r in rows], "driver_peak_mb")}
    text = json.dumps(result, indent=2)
    if args.json:
        Path(args.json).write_text(text + "\n")
    print(text)
    return 0


def _ratio_per_10x(rows: list[dict], key: str) -> list[float]:
    """Peak memory ratios between consecutive sizes that differ 10x."""
    by_n = {r["n"]: r[key] for r in rows}
    return [round(by_n[n * 10] / by_n[n], 3) for n in sorted(by_n) if n * 10 in by_n]


if __name__ == "__main__":
    sys.exit(main())
