"""Benchmark: the ``label_issues`` audit (confident learning) on real digits and photos.

1. Real MNIST test digits (10,000, from ../shared/data/mnist) with 3% of the
   labels flipped by a fixed seed: precision and recall of the flagged set,
   side by side with cleanlab's ``find_label_issues`` (its defaults) on the same
   out-of-fold probabilities. cleanlab is AGPL-3.0 and is never installed in
   datakit's environment: it runs in its own venv as a subprocess
   (``python3 -m venv /tmp/cl-venv && /tmp/cl-venv/bin/pip install cleanlab numpy scikit-learn``);
   without it that column is skipped with a note.
2. Unmodified MNIST test and CIFAR-10 test (demo/cifar10_test): counts flagged,
   contact sheets of the top 25 (docs/img/label_issues_mnist.png,
   docs/img/label_issues_cifar10.png), next to the counts of Northcutt, Athalye &
   Mueller (NeurIPS 2021 datasets track).
3. Wall time of the audit on the 81,095-image digits benchmark (demo/digits).

    .venv/bin/python bench/label_issues.py [--data-root ../shared/data] [--cleanlab /tmp/cl-venv/bin/python]
                                           [--skip-digits] [--out out/bench_label_issues]
"""
from __future__ import annotations

import argparse
import gzip
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]

#: confirmed label errors reported by Northcutt, Athalye & Mueller (2021)
PAPER = {"mnist_test": "15 confirmed errors (of 10,000)", "cifar10_test": "54 confirmed errors (of 10,000)"}

_CLEANLAB = """
import json, sys, numpy as np
from cleanlab.filter import find_label_issues
import cleanlab
p = np.load(sys.argv[1]); y = np.load(sys.argv[2])
mask = find_label_issues(labels=y, pred_probs=p)
np.save(sys.argv[3], mask)
print(json.dumps({"version": cleanlab.__version__}))
"""


def _idx(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as fh:
        data = fh.read()
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, np.uint8, offset=4 + 4 * ndim).reshape(dims)


def _mnist_dataset(root: Path, labels: np.ndarray, images: np.ndarray, name: str):
    from datakit import open_dataset
    from datakit.store.writer import write_dataset

    if root.exists():
        shutil.rmtree(root)
    write_dataset(root, images, labels.tolist(), "test", source="mnist", name=name)
    return open_dataset(root)


def _row_index(ds) -> np.ndarray:
    return ds.manifest["source_ref"].astype(str).str.rsplit("#", n=1).str[1].astype(int).to_numpy()


def _cleanlab(python: str, probs: np.ndarray, labels: np.ndarray, work: Path) -> tuple[np.ndarray | None, str]:
    if not python or not Path(python).exists():
        return None, f"cleanlab venv not found at {python!r}: column skipped"
    np.save(work / "pred_probs.npy", probs)
    np.save(work / "labels.npy", labels)
    try:
        out = subprocess.run([python, "-c", _CLEANLAB, str(work / "pred_probs.npy"), str(work / "labels.npy"),
                              str(work / "cleanlab_mask.npy")], capture_output=True, text=True, check=True, timeout=600)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
        return None, f"cleanlab failed: {getattr(exc, 'stderr', exc)!s}"[:300]
    return np.load(work / "cleanlab_mask.npy"), "cleanlab " + json.loads(out.stdout.strip().splitlines()[-1])["version"]


def _pr(flags: np.ndarray, wrong: np.ndarray) -> tuple[float, float]:
    tp = int((flags & wrong).sum())
    return tp / max(int(flags.sum()), 1), tp / max(int(wrong.sum()), 1)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-root", default=str(ROOT.parent / "shared" / "data"))
    ap.add_argument("--cleanlab", default="/tmp/cl-venv/bin/python")
    ap.add_argument("--out", default=str(ROOT / "out" / "bench_label_issues"))
    ap.add_argument("--cifar", default=str(ROOT / "demo" / "cifar10_test"))
    ap.add_argument("--digits", default=str(ROOT / "demo" / "digits"))
    ap.add_argument("--skip-digits", action="store_true")
    ap.add_argument("--noise", type=float, default=0.03)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "2")
    import torch

    torch.set_num_threads(2)
    from audits import get_audit
    from datakit import open_dataset

    audit = get_audit("label_issues")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    img = ROOT / "docs" / "img"
    img.mkdir(parents=True, exist_ok=True)
    mnist = Path(args.data_root) / "mnist"
    x = _idx(mnist / "t10k-images-idx3-ubyte.gz")
    y = _idx(mnist / "t10k-labels-idx1-ubyte.gz").astype(np.int64)
    results: dict = {}

    # 1. flipped labels
    rng = np.random.default_rng(args.seed)
    flip = rng.choice(len(y), int(round(args.noise * len(y))), replace=False)
    noisy = y.copy()
    noisy[flip] = (y[flip] + rng.integers(1, 10, len(flip))) % 10
    ds = _mnist_dataset(out / "mnist_test_flipped", noisy, x, "mnist_test_flipped")
    t0 = time.perf_counter()
    r = audit([ds], seed=args.seed, save_pred_probs=str(out / "mnist_flipped_oof.npy"))
    seconds = time.perf_counter() - t0
    src = _row_index(ds)
    pi = r.per_image
    wrong = noisy[src] != y[src]
    ours = pi["flag"].to_numpy()
    probs = r.info["datasets"][ds.name]
    oof = np.load(out / "mnist_flipped_oof.npy")  # manifest order = per_image order here (all labelled)
    row = {"method": "datakit label_issues (prune_by_noise_rate)", "flagged": int(ours.sum()),
           "precision": _pr(ours, wrong)[0], "recall": _pr(ours, wrong)[1], "seconds": round(seconds, 1)}
    table = [row]
    for method in ("confident_joint", "both"):
        from audits import _confident as cl

        f = cl.find_label_issues(noisy[src], oof, method=method) if oof is not None else None
        if f is not None:
            table.append({"method": f"datakit {method} (same probs)", "flagged": int(f.sum()),
                          "precision": _pr(f, wrong)[0], "recall": _pr(f, wrong)[1], "seconds": None})
    mask, note = _cleanlab(args.cleanlab, oof, noisy[src], out) if oof is not None else (None, "no probs")
    if mask is not None:
        table.append({"method": f"{note} find_label_issues (defaults, same probs)", "flagged": int(mask.sum()),
                      "precision": _pr(mask, wrong)[0], "recall": _pr(mask, wrong)[1], "seconds": None,
                      "agreement_with_datakit": float((mask == ours).mean())})
    results["flipped"] = {"n": int(len(y)), "flipped": int(len(flip)), "probe": probs, "table": table,
                          "summary": r.summary, "note": note}

    # 2. unmodified test sets
    clean = _mnist_dataset(out / "mnist_test", y, x, "mnist_test")
    runs = [("mnist_test", clean, img / "label_issues_mnist.png")]
    if Path(args.cifar).exists():
        runs.append(("cifar10_test", open_dataset(args.cifar), img / "label_issues_cifar10.png"))
    results["unmodified"] = []
    for name, d, png in runs:
        t0 = time.perf_counter()
        rr = audit([d], seed=args.seed, n_worst=25)
        (png).write_bytes(rr.figures["worst"])
        (out / f"{name}_noise_matrix.png").write_bytes(rr.figures["noise_matrix"])
        rr.tables["worst"].to_csv(out / f"{name}_worst.csv", index=False)
        results["unmodified"].append({"dataset": name, "images": rr.summary["n_images"],
                                      "flagged": rr.summary["n_issues"], "rate": rr.summary["rate"],
                                      "estimated_noise_rate": rr.summary["estimated_noise_rate"],
                                      "oof_accuracy": rr.summary["oof_accuracy"],
                                      "probe": rr.info["datasets"][d.name], "paper": PAPER[name],
                                      "seconds": round(time.perf_counter() - t0, 1), "figure": str(png)})

    # 3. the 81,095-image digits benchmark
    if not args.skip_digits and Path(args.digits).exists():
        d = open_dataset(args.digits)
        t0, c0 = time.perf_counter(), time.process_time()
        rr = audit([d], seed=args.seed)
        results["digits"] = {"images": rr.summary["n_images"], "flagged": rr.summary["n_issues"],
                             "oof_accuracy": rr.summary["oof_accuracy"], "seconds": round(time.perf_counter() - t0, 1),
                             "cpu_seconds": round(time.process_time() - c0, 1),
                             "probe": rr.info["datasets"][d.name]}
    (out / "results.json").write_text(json.dumps(results, indent=1, default=str))
    print(json.dumps(results, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
