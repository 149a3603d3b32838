"""Name That Dataset: can a classifier tell which dataset an image came from?

Torralba and Efros ("An Unbiased Look at Dataset Bias", CVPR 2011) trained a
classifier on 1,000 images per dataset to predict the dataset and found it far
above chance: every dataset carries a signature. This audit repeats that with
two probes (a linear classifier on pixels and a small conv net), a learning
curve, and a class-conditional variant (the same class from different
datasets, e.g. digit 3 from MNIST vs digit 3 from USPS), where content cannot
explain the difference.
"""
from __future__ import annotations

import logging
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from audits._common import (Group, common_mode, fig_to_png, load_images, make_groups, parse_list, pyplot,
                            sample_rows, shared_labels, working_size)
from audits._probes import PROBES, ProbeUnavailable, fit_predict, pixel_basis
from audits.base import AuditResult, register_audit, skipped
from datakit.store.dataset import Dataset

__all__ = ["name_that_dataset"]

logger = logging.getLogger(__name__)

NAME = "name_that_dataset"


def _too_few_groups(datasets: Sequence[Dataset], groups: list[Group]) -> str:
    if len(datasets) == 1:
        sources = sorted(datasets[0].manifest["source"].dropna().astype(str).unique())
        return (f"needs two or more datasets, or one dataset whose `source` column has two or more values; "
                f"got one dataset ({datasets[0].name}) with source(s) {sources}")
    return f"needs two or more non-empty datasets; got {[g.name for g in groups]}"


def _confusion(y_true: np.ndarray, y_pred: np.ndarray, names: list[str]) -> pd.DataFrame:
    k = len(names)
    cm = np.zeros((k, k), dtype=np.int64)
    np.add.at(cm, (y_true, y_pred), 1)
    return pd.DataFrame(cm, index=pd.Index(names, name="true"), columns=names).reset_index()


def _split_rows(groups: list[Group], n_train: int, n_test: int, rng: np.random.Generator,
                class_map) -> tuple[list[np.ndarray], list[np.ndarray]]:
    train, test = [], []
    for g in groups:
        labels = shared_labels(g, class_map)
        rows = sample_rows(g.frame, n_train + n_test, rng, stratify=labels if labels.notna().any() else None)
        pos = rng.permutation(rows.index.to_numpy())
        train.append(np.sort(pos[:n_train]))
        test.append(np.sort(pos[n_train:n_train + n_test]))
    return train, test


@register_audit(NAME)
def name_that_dataset(
    datasets: Sequence[Dataset], *, n_per_dataset: int = 1000, n_test_per_dataset: int = 300,
    probes: Sequence[str] | str = ("linear", "conv"), learning_curve: Sequence[int] | str = (10, 30, 100, 300, 1000),
    class_conditional: bool = True, n_per_class: int = 200, max_classes: int = 20, conv_epochs: int | None = None,
    size_cap: int = 32, group_by: str = "auto", class_map: Mapping[str, Mapping[str, str]] | None = None,
    seed: int = 0,
) -> AuditResult:
    """Train probes to predict which dataset (or source) an image came from.

    Parameters
    ----------
    datasets : sequence of Dataset
        Two or more datasets, or one dataset with two or more ``source`` values.
    n_per_dataset : int
        Training images sampled per dataset (Torralba and Efros used 1,000);
        reduced to what the smallest dataset allows, with a note.
    n_test_per_dataset : int
        Held-out images per dataset (disjoint from the training images).
    probes : sequence of {"linear", "conv"}
    learning_curve : sequence of int
        Training images per dataset at which the linear probe is re-trained.
    class_conditional : bool
        Also run the probe within each class shared by all datasets.
    n_per_class : int
        Images per dataset and class for the class-conditional variant.
    max_classes : int
        At most this many shared classes (the largest) in the class-conditional variant.
    conv_epochs : int, optional
        Epochs of the conv probe (default: enough for about 12,000 image updates, 3-20).
    size_cap : int
        Images are resized to at most ``size_cap`` x ``size_cap`` for the probes.
    group_by : {"auto", "dataset", "source"}
    class_map : mapping, optional
        ``{dataset: {label: shared label}}`` for the class-conditional variant.
    seed : int

    Returns
    -------
    AuditResult
        ``summary``: ``accuracy`` (best probe), ``accuracy_linear``, ``accuracy_conv``,
        ``chance``, ``class_conditional_accuracy``, sample sizes. ``per_image``: the
        held-out images with ``score`` = the best probe's probability of the true dataset
        and ``flag`` = identified with probability >= 0.9.
    """
    probes = parse_list(probes)
    for p in probes:
        if p not in PROBES:
            raise ValueError(f"Unknown probe {p!r}. Valid values are {{{', '.join(PROBES)}}}.")
    sizes = sorted(set(parse_list(learning_curve, int)))
    groups = [g for g in make_groups(datasets, group_by) if len(g)]
    if len(groups) < 2:
        return skipped(NAME, _too_few_groups(datasets, groups))
    rng = np.random.default_rng(seed)
    notes: list[str] = []
    names = [g.name for g in groups]
    k = len(groups)
    n_min = min(len(g) for g in groups)
    n_test = int(min(n_test_per_dataset, max(1, n_min // 4)))
    n_train = int(min(n_per_dataset, n_min - n_test))
    if n_train < 5:
        return skipped(NAME, f"too few images: the smallest group has {n_min} (need at least 6)")
    if n_train < n_per_dataset or n_test < n_test_per_dataset:
        notes.append(f"the smallest dataset has {n_min} images: sampled {n_train} training + {n_test} held-out "
                     f"images per dataset (asked for {n_per_dataset} + {n_test_per_dataset})")
    size, size_note = working_size(groups, size_cap)
    if size_note:
        notes.append(size_note)
    mode = common_mode(groups)
    train_pos, test_pos = _split_rows(groups, n_train, n_test, rng, class_map)
    x_train = np.concatenate([load_images(g, p, size, mode) for g, p in zip(groups, train_pos)])
    x_test = np.concatenate([load_images(g, p, size, mode) for g, p in zip(groups, test_pos)])
    y_train = np.repeat(np.arange(k), [len(p) for p in train_pos])
    y_test = np.repeat(np.arange(k), [len(p) for p in test_pos])
    chance = 1.0 / k

    summary: dict = {}
    tables: dict[str, pd.DataFrame] = {}
    info: dict = {"groups": names, "image_size": list(size), "mode": mode, "probes": {},
                  "method": "Torralba & Efros 2011: equal samples per dataset, held-out accuracy vs chance"}
    results = {}
    basis = pixel_basis(x_train, seed=seed)
    for probe in probes:
        try:
            res = fit_predict(probe, x_train, y_train, x_test, k, seed=seed, epochs=conv_epochs, basis=basis)
        except ProbeUnavailable as exc:
            notes.append(f"{probe} probe skipped: {exc}")
            continue
        results[probe] = res
        acc = float((res.pred == y_test).mean())
        summary[f"accuracy_{probe}"] = acc
        info["probes"][probe] = res.info
        tables[f"confusion_{probe}"] = _confusion(y_test, res.pred, names)
    if not results:
        return AuditResult(NAME, skipped="no probe could run: " + "; ".join(notes), notes=notes)
    best = max(results, key=lambda p: summary[f"accuracy_{p}"])
    summary = {"accuracy": summary[f"accuracy_{best}"], "best_probe": best, "chance": chance, **summary,
               "n_datasets": k, "n_train_per_dataset": n_train, "n_test_per_dataset": n_test}
    per_dataset = pd.DataFrame({"dataset": names})
    for probe, res in results.items():
        per_dataset[f"recall_{probe}"] = [float((res.pred[y_test == i] == i).mean()) for i in range(k)]
    tables["per_dataset"] = per_dataset

    # learning curve (linear probe, on the pixel basis fitted once on all training images)
    curve_rows = []
    curve_sizes = [s for s in sizes if s <= n_train]
    if not curve_sizes or (max(sizes) > n_train and n_train not in curve_sizes):
        curve_sizes.append(n_train)  # the largest size the data allows
    for n in curve_sizes:
        repeats = 3 if n < 100 else 1
        accs = []
        for r in range(repeats):
            sub_rng = np.random.default_rng(seed + 1000 * n + r)
            idx = np.concatenate([sub_rng.choice(np.flatnonzero(y_train == i), size=n, replace=False)
                                  for i in range(k)])
            res = fit_predict("linear", x_train[idx], y_train[idx], x_test, k, seed=seed, basis=basis)
            accs.append(float((res.pred == y_test).mean()))
        curve_rows.append({"n_per_dataset": n, "accuracy": float(np.mean(accs)),
                           "std": float(np.std(accs)), "repeats": repeats})
    tables["learning_curve"] = pd.DataFrame(curve_rows)

    # class-conditional variant
    cc_rows = []
    if class_conditional:
        label_sets = [shared_labels(g, class_map) for g in groups]
        if all(l.notna().any() for l in label_sets):
            counts = pd.concat([l.value_counts().rename(n) for l, n in zip(label_sets, names)], axis=1).dropna()
            counts = counts[(counts >= 8).all(axis=1)]
            order = counts.min(axis=1).sort_values(ascending=False).index[:max_classes]
            if len(counts) > max_classes:
                notes.append(f"class-conditional variant limited to the {max_classes} largest of "
                             f"{len(counts)} shared classes")
            for cls in order:
                m = int(min(n_per_class, counts.loc[cls].min()))
                m_test = max(2, m // 4)
                m_train = m - m_test
                xs_tr, xs_te, ys_tr, ys_te = [], [], [], []
                for i, (g, labels) in enumerate(zip(groups, label_sets)):
                    rows = sample_rows(g.frame[labels == cls], m, rng)
                    pos = rng.permutation(rows.index.to_numpy())
                    xs_tr.append(load_images(g, np.sort(pos[:m_train]), size, mode))
                    xs_te.append(load_images(g, np.sort(pos[m_train:]), size, mode))
                    ys_tr.append(np.full(m_train, i))
                    ys_te.append(np.full(m - m_train, i))
                yte = np.concatenate(ys_te)
                res = fit_predict("linear", np.concatenate(xs_tr), np.concatenate(ys_tr), np.concatenate(xs_te), k,
                                  seed=seed, basis=basis)
                cc_rows.append({"class": cls, "n_train_per_dataset": m_train, "n_test_per_dataset": m - m_train,
                                "accuracy": float((res.pred == yte).mean()), "chance": chance})
        else:
            notes.append("class-conditional variant skipped: a dataset has no labels")
        if cc_rows:
            cc = pd.DataFrame(cc_rows)
            tables["class_conditional"] = cc
            summary["class_conditional_accuracy"] = float(cc["accuracy"].mean())
            summary["class_conditional_min_accuracy"] = float(cc["accuracy"].min())
        elif all(l.notna().any() for l in label_sets):
            notes.append("class-conditional variant skipped: no class with at least 8 images in every dataset "
                         "(state correspondences with --map DATASET:LABEL=SHARED)")

    # per-image table: how recognisable each held-out image is
    best_res = results[best]
    frames = [g.dataset.manifest.loc[p, ["id", "label"]] for g, p in zip(groups, test_pos)]
    per_image = pd.concat(frames, ignore_index=True)
    per_image.insert(0, "dataset", np.repeat(names, [len(p) for p in test_pos]))
    per_image["predicted"] = [names[i] for i in best_res.pred]
    per_image["score"] = best_res.proba[np.arange(len(y_test)), y_test]
    per_image["flag"] = (best_res.pred == y_test) & (per_image["score"] >= 0.9)

    figures = _figures(tables, results, names, chance)
    info["notes"] = notes
    return AuditResult(NAME, summary=summary, per_image=per_image, tables=tables, figures=figures, info=info,
                       notes=notes)


def _figures(tables: dict, results: dict, names: list[str], chance: float) -> dict[str, bytes]:
    plt = pyplot()
    figures = {}
    fig, axes = plt.subplots(1, len(results), figsize=(3.2 * len(results) + 0.8, 3.0), squeeze=False)
    for ax, probe in zip(axes[0], results):
        cm = tables[f"confusion_{probe}"].set_index("true").to_numpy(dtype=float)
        norm = cm / np.maximum(cm.sum(1, keepdims=True), 1)
        ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
        for (i, j), v in np.ndenumerate(norm):
            ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=7, color="white" if v > 0.5 else "black")
        ax.set_xticks(range(len(names)), [n[:12] for n in names], rotation=45, ha="right", fontsize=7)
        ax.set_yticks(range(len(names)), [n[:12] for n in names], fontsize=7)
        ax.set_title(f"{probe} probe", fontsize=8)
        ax.set_xlabel("predicted", fontsize=7)
    fig.suptitle("Name That Dataset: confusion (row-normalized)", fontsize=9)
    figures["confusion"] = fig_to_png(fig)

    lc = tables["learning_curve"]
    fig, ax = plt.subplots(figsize=(4.2, 3.0))
    ax.errorbar(lc["n_per_dataset"], lc["accuracy"], yerr=lc["std"], marker="o", label="linear probe")
    ax.axhline(chance, color="gray", ls="--", label="chance")
    ax.set_xscale("log")
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("training images per dataset")
    ax.set_ylabel("held-out accuracy")
    ax.legend(fontsize=7)
    ax.set_title("Learning curve", fontsize=9)
    figures["learning_curve"] = fig_to_png(fig)

    if "class_conditional" in tables:
        cc = tables["class_conditional"]
        fig, ax = plt.subplots(figsize=(max(3.5, 0.35 * len(cc) + 1.5), 3.0))
        ax.bar([str(c)[:10] for c in cc["class"]], cc["accuracy"], color="tab:orange")
        ax.axhline(chance, color="gray", ls="--", label="chance")
        ax.set_ylim(0, 1.02)
        ax.tick_params(axis="x", rotation=45, labelsize=7)
        ax.set_ylabel("held-out accuracy")
        ax.set_title("Same class, different datasets (linear probe)", fontsize=9)
        ax.legend(fontsize=7)
        figures["class_conditional"] = fig_to_png(fig)
    return figures
