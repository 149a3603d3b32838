"""Write a small Fashion-MNIST candidate pool as a dataset directory, for the crowd docs and demos.

Per class: ``--per-class`` images of the class plus ``--noise`` images of other
classes filed under it (like noisy image-search results). Writes ``OUT/`` (a
dataset directory), ``OUT.truth.csv`` (id, label: each image's true class) and
``OUT.gold.csv`` (id, answer: a few known answers per class for gold items).

Usage::

    .venv/bin/python bench/crowd_make_pool.py OUT [--classes 3] [--per-class 30] [--noise 10]
"""
from __future__ import annotations

import argparse
import gzip
import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from datakit import open_dataset  # noqa: E402
from datakit.store.writer import write_dataset  # noqa: E402

FASHION = Path("/usr/share/datasets/fashion-mnist")
CLASSES = ["tshirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle_boot"]


def _idx(name: str) -> np.ndarray:
    with gzip.open(FASHION / name) as fh:
        data = fh.read()
    ndim = data[3]
    shape = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out")
    ap.add_argument("--classes", type=int, default=3)
    ap.add_argument("--per-class", type=int, default=30)
    ap.add_argument("--noise", type=int, default=10)
    ap.add_argument("--gold-per-class", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    x, y = _idx("t10k-images-idx3-ubyte.gz"), _idx("t10k-labels-idx1-ubyte.gz").astype(int)
    rng = np.random.default_rng(args.seed)
    order = rng.permutation(len(y))
    used = np.zeros(len(y), bool)
    picks, filed = [], []
    for c in range(args.classes):
        members = [i for i in order if y[i] == c and not used[i]][: args.per_class]
        used[members] = True
        others = [i for i in order if y[i] != c and y[i] < args.classes and not used[i]][: args.noise]
        used[others] = True
        picks += members + others
        filed += [CLASSES[c]] * (len(members) + len(others))
    root = write_dataset(args.out, x[picks], filed, "train", source="fashion-mnist-t10k",
                         classes=CLASSES[: args.classes])
    ids = open_dataset(root).manifest["id"].astype(str).to_numpy()
    truth = pd.DataFrame({"id": ids, "label": [CLASSES[y[i]] for i in picks]})
    truth.to_csv(f"{args.out}.truth.csv", index=False)
    t = truth.assign(filed=filed, right=lambda f: f["label"] == f["filed"])
    half = max(1, args.gold_per_class // 2)
    gold = t.groupby(["filed", "right"]).head(half)  # known positives and known negatives
    pd.DataFrame({"id": gold["id"], "answer": np.where(gold["right"], "yes", "no")}).to_csv(
        f"{args.out}.gold.csv", index=False)
    print(f"wrote {root}: {len(picks)} candidates in {args.classes} classes; {args.out}.truth.csv; {args.out}.gold.csv")


if __name__ == "__main__":
    main()
