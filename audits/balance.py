"""Class balance: images per class, imbalance ratio, long-tail plot."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from audits._common import fig_to_png, make_groups, pyplot
from audits.base import AuditResult, register_audit, skipped
from datakit.store.dataset import Dataset

__all__ = ["balance"]

NAME = "balance"


def _stats(counts: pd.Series) -> dict:
    counts = counts[counts > 0]
    p = counts / counts.sum()
    entropy = float(-(p * np.log(p)).sum())
    k = len(counts)
    return {
        "n_images": int(counts.sum()), "n_classes": k, "min_class_count": int(counts.min()),
        "max_class_count": int(counts.max()), "median_class_count": float(counts.median()),
        "imbalance_ratio": float(counts.max() / counts.min()),
        # 1 = perfectly balanced; 0 = every image in one class
        "normalized_entropy": float(entropy / np.log(k)) if k > 1 else 1.0,
    }


@register_audit(NAME, columns=("label", "label_name", "source", "split"))
def balance(datasets: Sequence[Dataset], *, group_by: str = "dataset", by_split: bool = True) -> AuditResult:
    """Images per class for each dataset (or source), with imbalance measures.

    Parameters
    ----------
    datasets : sequence of Dataset
    group_by : {"dataset", "source", "auto"}
    by_split : bool
        Also count per split (a test split missing a class is worth knowing).

    Returns
    -------
    AuditResult
        ``summary``: ``imbalance_ratio`` (largest / smallest class count; the
        worst over datasets), ``normalized_entropy`` (1 = balanced; the worst),
        ``n_classes``, ``n_images``, plus ``imbalance_ratio[<dataset>]`` each.
        ``tables["counts"]``: one row per dataset, split and class.
    """
    groups = [g for g in make_groups(datasets, group_by) if len(g)]
    labeled = [g for g in groups if g.frame["label"].notna().any()]
    if not labeled:
        return skipped(NAME, "needs labels: no dataset has a labeled image")
    notes = [f"{g.name}: no labels, not counted" for g in groups if g not in labeled]
    rows, per_group, empty_classes = [], {}, {}
    for g in labeled:
        frame = g.frame[g.frame["label"].notna()]
        unlabeled = len(g.frame) - len(frame)
        if unlabeled:
            notes.append(f"{g.name}: {unlabeled} unlabeled image(s) not counted")
        counts = frame["label"].astype(str).value_counts()
        missing = [c for c in g.dataset.categories["label"].astype(str) if c not in counts.index]
        if missing and len(missing) < len(g.dataset.categories):
            empty_classes[g.name] = missing
            notes.append(f"{g.name}: {len(missing)} class(es) listed in categories.csv have no images: "
                         f"{missing[:10]}")
        per_group[g.name] = (counts, _stats(counts))
        names = dict(zip(frame["label"].astype(str), frame["label_name"].astype(str)))
        splits = frame["split"].fillna("(none)").astype(str)
        for cls, n in counts.items():
            row = {"dataset": g.name, "label": cls, "label_name": names.get(cls, cls), "count": int(n),
                   "fraction": float(n / counts.sum())}
            if by_split:
                for split in sorted(splits.unique()):
                    row[f"count_{split}"] = int(((frame["label"].astype(str) == cls) & (splits == split)).sum())
            rows.append(row)
    table = pd.DataFrame(rows)
    stats = pd.DataFrame([{"dataset": name, **s} for name, (_, s) in per_group.items()])
    worst = stats.loc[stats["imbalance_ratio"].idxmax()]
    summary = {"imbalance_ratio": float(worst["imbalance_ratio"]),
               "normalized_entropy": float(stats["normalized_entropy"].min()),
               "n_classes": int(stats["n_classes"].max()), "n_images": int(stats["n_images"].sum()),
               "min_class_count": int(stats["min_class_count"].min()),
               "max_class_count": int(stats["max_class_count"].max())}
    if len(stats) > 1:
        summary.update({f"imbalance_ratio[{r.dataset}]": float(r.imbalance_ratio) for r in stats.itertuples()})
    if by_split and "count_test" in table.columns:
        summary["classes_missing_from_test"] = int((table["count_test"] == 0).sum())

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5.0, 3.2))
    for name, (counts, _) in per_group.items():
        ranked = np.sort(counts.to_numpy())[::-1]
        ax.plot(np.arange(1, len(ranked) + 1), ranked, marker="o" if len(ranked) <= 30 else None, ms=3,
                label=name)
    ax.set_xlabel("class rank")
    ax.set_ylabel("images")
    ax.set_yscale("log")
    ax.set_title("Images per class, largest first (long tail)", fontsize=9)
    ax.legend(fontsize=7)
    return AuditResult(NAME, summary=summary, tables={"counts": table, "per_dataset": stats},
                       figures={"long_tail": fig_to_png(fig)},
                       info={"empty_classes": empty_classes, "notes": notes}, notes=notes)
