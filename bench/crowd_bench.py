"""Crowd benchmarks on the Fashion-MNIST candidate pool (bench/results/crowd.md).

1. Dawid-Skene vs majority vote when a fifth of the workers are spammers.
2. ImageNet's adaptive consensus vs a fixed number of votes per image.
3. Precision reached at the default threshold (0.95), next to ImageNet's 99.7%.

The pool: engineer E's ``demo/fashion_candidates/candidates.parquet`` with
``demo/fashion_pool/ground_truth.csv`` when both exist and join, else the
equivalent built here from Debian's Fashion-MNIST test set: per class, 300
images of the class plus 100 images of other classes (25% wrong, like noisy
search results). Votes come from the seeded simulated crowd.

Usage::

    .venv/bin/python bench/crowd_bench.py [--seeds 3] [--builtin [--per-class 300] [--noise 100]]
                                          [--candidates candidates.parquet --ground-truth ground_truth.csv]
"""
from __future__ import annotations

import argparse
import gzip
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from datakit.crowd.aggregation import DawidSkene, MajorityVote, OneCoinDawidSkene  # noqa: E402
from datakit.crowd.consensus import AdaptiveConsensus, SimulatedOracle  # noqa: E402
from datakit.crowd.simulate import SimulatedCrowd, truth_for_tasks  # noqa: E402
from datakit.crowd.tasks import make_binary_tasks  # noqa: E402

FASHION = Path("/usr/share/datasets/fashion-mnist")
CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]


def _labels() -> np.ndarray:
    with gzip.open(FASHION / "t10k-labels-idx1-ubyte.gz") as fh:
        data = fh.read()
    return np.frombuffer(data, dtype=np.uint8, offset=8).astype(int)


def e_pool(cand: Path | None = None, gt: Path | None = None) -> tuple[pd.DataFrame, pd.Series] | None:
    """E's candidate pool, when it is there and joins to its ground truth.

    Every (synset, image) row is one yes/no question, keyed ``<synset>:<id>``:
    an image found for two synsets is asked about for both (as in ImageNet).
    """
    cand = cand or ROOT / "demo" / "fashion_candidates" / "candidates.parquet"
    gt = gt or ROOT / "demo" / "fashion_pool" / "ground_truth.csv"
    if not (cand.exists() and gt.exists()):
        return None
    c = pd.read_parquet(cand, columns=["synset", "id"])
    g = pd.read_csv(gt, dtype=str)
    if not {"id", "true_label"} <= set(g.columns):
        return None
    true = c["id"].astype(str).map(dict(zip(g["id"], g["true_label"])))
    if true.isna().mean() > 0.01:
        return None
    keep = true.notna()
    c, true = c[keep], true[keep]
    key = c["synset"].astype(str) + ":" + c["id"].astype(str)
    pool = pd.DataFrame({"id": key.to_numpy(), "label": c["synset"].astype(str).to_numpy(),
                         "image": c["id"].astype(str).to_numpy()}).drop_duplicates("id")
    truth = pd.Series(true.to_numpy(), index=key.to_numpy())
    return pool, truth[~truth.index.duplicated()]


def fashion_pool(per_class: int, noise: int, seed: int = 0) -> tuple[pd.DataFrame, pd.Series]:
    """Candidates per class: ``per_class`` true members + ``noise`` images of other classes."""
    y = _labels()
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(y))
    used = np.zeros(len(y), bool)
    rows = []
    for c in range(10):
        members = [i for i in order if y[i] == c and not used[i]][:per_class]
        used[members] = True
        others = [i for i in order if y[i] != c and not used[i]][:noise]
        used[others] = True
        rows += [(f"fm{i:05d}", CLASSES[c], CLASSES[y[i]]) for i in members + others]
    frame = pd.DataFrame(rows, columns=["id", "label", "true"])
    return frame[["id", "label"]].assign(image=frame["id"]), pd.Series(frame["true"].to_numpy(), index=frame["id"])


def md(frame: pd.DataFrame) -> str:
    """A markdown table (no tabulate dependency)."""
    frame = frame.reset_index()
    cells = [[f"{v:.4f}" if isinstance(v, float) else str(v) for v in row] for row in frame.itertuples(index=False)]
    head = "| " + " | ".join(map(str, frame.columns)) + " |\n|" + "---|" * len(frame.columns)
    return head + "\n" + "\n".join("| " + " | ".join(r) + " |" for r in cells)


def precision_recall(accepted: pd.Index, truth_yes: pd.Series) -> tuple[float, float]:
    pos = set(truth_yes.index[truth_yes])
    acc = set(accepted)
    return (len(acc & pos) / len(acc) if acc else float("nan"), len(acc & pos) / len(pos))


def bench_aggregation(pool, true_class, seeds) -> pd.DataFrame:
    rows = []
    tasks = make_binary_tasks(pool, grid_size=48, gold_per_task=0, seed=0)
    truth = truth_for_tasks(tasks, true_class)
    for seed in seeds:
        crowd = SimulatedCrowd(n_workers=50, accuracy=(0.7, 0.95), spammer_share=0.2, seed=seed)
        votes = crowd.answer_tasks(tasks, truth, assignments=5)
        for name, model in (("majority_vote", MajorityVote()), ("dawid_skene", DawidSkene()),
                            ("one_coin", OneCoinDawidSkene())):
            t0 = time.perf_counter()
            labels = model.fit_predict(votes)
            secs = time.perf_counter() - t0
            acc = float((labels == truth[labels.index]).mean())
            prec, rec = precision_recall(labels.index[labels == "yes"], truth[labels.index] == "yes")
            rows.append({"seed": seed, "method": name, "accuracy": acc, "precision": prec, "recall": rec,
                         "fit_s": secs})
    # multiclass "pick the class", one question per distinct image, same crowd mix
    first = pool.drop_duplicates("image")
    items = pd.Series(true_class[first["id"]].to_numpy(), index=first["image"].to_numpy())
    choices = sorted(set(items))
    for seed in seeds:
        crowd = SimulatedCrowd(n_workers=50, accuracy=(0.7, 0.95), spammer_share=0.2, seed=seed)
        votes = crowd.annotate(items, choices, votes_per_item=5)
        for name, model in (("majority_vote", MajorityVote()), ("dawid_skene", DawidSkene()),
                            ("one_coin", OneCoinDawidSkene())):
            t0 = time.perf_counter()
            labels = model.fit_predict(votes)
            rows.append({"seed": seed, "method": f"{name} (10-class)", "accuracy":
                         float((labels == items[labels.index]).mean()), "precision": np.nan, "recall": np.nan,
                         "fit_s": time.perf_counter() - t0})
    return pd.DataFrame(rows)


def bench_consensus(pool, true_class, seeds, thresholds=(0.9, 0.95, 0.99)) -> tuple[pd.DataFrame, pd.DataFrame]:
    items = pd.DataFrame({"item": pool["id"], "question": pool["label"]})
    truth = pd.Series(np.where(true_class[pool["id"]].to_numpy() == pool["label"].to_numpy(), "yes", "no"),
                      index=pool["id"].to_numpy())
    is_pos = truth == "yes"
    adaptive, fixed = [], []
    for seed in seeds:
        for thr in thresholds:
            crowd = SimulatedCrowd(n_workers=50, accuracy=(0.7, 0.95), seed=seed)
            res = AdaptiveConsensus(threshold=thr, seed=seed).run(items, SimulatedOracle(crowd, truth))
            acc = res.loc[res["decision"] == "accepted", "item"]
            prec, rec = precision_recall(pd.Index(acc), is_pos)
            adaptive.append({"seed": seed, "threshold": thr, "precision": prec, "recall": rec,
                             "votes_per_image": res["votes"].mean(),
                             "votes_per_image_outside_subset": res.loc[res["phase"] == "adaptive", "votes"].mean(),
                             "undecided": int((res["decision"] == "undecided").sum())})
        crowd = SimulatedCrowd(n_workers=50, accuracy=(0.7, 0.95), seed=seed)
        votes = crowd.annotate(truth, ["yes", "no"], votes_per_item=11)
        for k in (1, 3, 5, 7, 9, 11):
            first = votes.groupby("task").head(k)
            yes = (first["label"] == "yes").groupby(first["task"]).sum()
            accepted = yes.index[yes > k / 2]
            prec, rec = precision_recall(accepted, is_pos)
            fixed.append({"seed": seed, "votes_per_image": k, "precision": prec, "recall": rec})
    return pd.DataFrame(adaptive), pd.DataFrame(fixed)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--per-class", type=int, default=300)
    ap.add_argument("--noise", type=int, default=100)
    ap.add_argument("--candidates", type=Path, help="candidates.parquet (default: demo/fashion_candidates/)")
    ap.add_argument("--ground-truth", type=Path, help="ground_truth.csv (default: demo/fashion_pool/)")
    ap.add_argument("--builtin", action="store_true", help="Use the pool built here even when E's is there.")
    args = ap.parse_args()
    t0 = time.perf_counter()
    found = None if args.builtin else e_pool(args.candidates, args.ground_truth)
    if found is not None:
        pool, true_class = found
        origin = "engineer E's candidate pool (truth: true_label of its ground_truth.csv)"
    else:
        pool, true_class = fashion_pool(args.per_class, args.noise)
        origin = (f"built from {FASHION} t10k: {args.per_class} members + {args.noise} other-class images per class"
                  + ("" if args.builtin else " (E's demo pool not found)"))
    seeds = list(range(args.seeds))
    n_pos = int((true_class[pool["id"]].to_numpy() == pool["label"].to_numpy()).sum())
    print(f"pool: {origin}; {len(pool)} candidate rows ({pool['image'].nunique()} distinct images), {n_pos} correct "
          f"({n_pos / len(pool):.1%}); seeds {seeds}\n")

    agg = bench_aggregation(pool, true_class, seeds)
    summary = agg.groupby("method", sort=False).agg(accuracy_mean=("accuracy", "mean"), accuracy_min=("accuracy", "min"),
                                                    accuracy_max=("accuracy", "max"), precision=("precision", "mean"),
                                                    recall=("recall", "mean"), fit_s=("fit_s", "mean"))
    print("## 1. Aggregation, 50 workers (honest accuracy U(0.7, 0.95)), 20% spammers, 5 votes per image\n")
    print(md(summary))
    print()
    adaptive, fixed = bench_consensus(pool, true_class, seeds)
    print("## 2-3. Adaptive consensus (initial 10 votes on a 10% subset per class, max 10) vs fixed votes\n")
    print(md(adaptive.groupby("threshold").mean(numeric_only=True).drop(columns="seed")))
    print()
    fx = fixed.groupby("votes_per_image").mean(numeric_only=True).drop(columns="seed")
    print(md(fx))
    print()
    ks = fx.index.to_numpy(float)
    rows = []
    for thr, a in adaptive.groupby("threshold").mean(numeric_only=True).iterrows():
        p_fixed = float(np.interp(a["votes_per_image"], ks, fx["precision"].to_numpy()))
        r_fixed = float(np.interp(a["votes_per_image"], ks, fx["recall"].to_numpy()))
        prec = fx["precision"].to_numpy()
        # votes a fixed scheme needs for the adaptive precision (linear between the measured k; precision rises with k)
        v_fixed = float(np.interp(a["precision"], prec, ks)) if prec.min() <= a["precision"] <= prec.max() else np.nan
        rows.append({"threshold": thr, "adaptive_votes": a["votes_per_image"], "adaptive_precision": a["precision"],
                     "fixed_precision_same_votes": p_fixed, "adaptive_recall": a["recall"],
                     "fixed_recall_same_votes": r_fixed, "fixed_votes_same_precision": v_fixed,
                     "votes_saved": 1 - a["votes_per_image"] / v_fixed if v_fixed == v_fixed else np.nan})
    print("Adaptive vs fixed (fixed figures interpolated linearly between the measured k = 1, 3, ..., 11):\n")
    print(md(pd.DataFrame(rows).set_index("threshold")))
    a95 = adaptive[adaptive["threshold"] == 0.95].mean(numeric_only=True)
    print(f"\nprecision at the default threshold 0.95: {a95['precision']:.4f} (ImageNet reported 0.997)")
    print(f"\ntotal {time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    main()
