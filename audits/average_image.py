"""Average images: mean and standard-deviation image per class and per dataset.

Torralba and Efros showed Caltech101's per-class averages still look like the
objects: the objects always sat in the same place, at the same scale. The bias
score here makes that a number: the held-out accuracy of a nearest-class-mean
classifier on pixels (classify an image as the class whose average image it is
closest to). Chance is 1 / number of classes; the further above chance, the
more the class is explained by where and how it sits in the frame.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from audits._common import (PIXEL_COLUMNS, common_mode, image_grid, load_images, make_groups, sample_rows, shared_labels,
                            working_size)
from audits.base import AuditResult, register_audit, skipped
from datakit.store.dataset import Dataset

__all__ = ["average_image", "nearest_class_mean"]

NAME = "average_image"


def nearest_class_mean(means: np.ndarray, images: np.ndarray) -> np.ndarray:
    """Index of the nearest mean image (Euclidean) for each image.

    Parameters
    ----------
    means : ndarray, shape (K, D), float
    images : ndarray, shape (N, D), float

    Returns
    -------
    ndarray, shape (N,), int64
    """
    d = (images ** 2).sum(1)[:, None] - 2 * images @ means.T + (means ** 2).sum(1)[None, :]
    return d.argmin(1).astype(np.int64)


@register_audit(NAME, columns=PIXEL_COLUMNS)
def average_image(
    datasets: Sequence[Dataset], *, max_per_class: int = 500, max_test: int = 2000, max_classes_shown: int = 20,
    size_cap: int = 64, group_by: str = "auto", class_map: Mapping[str, Mapping[str, str]] | None = None,
    seed: int = 0,
) -> AuditResult:
    """Per-class mean and std images, and a nearest-class-mean bias score.

    Parameters
    ----------
    datasets : sequence of Dataset
    max_per_class : int
        At most this many training images per class enter each mean (a mean
        of 500 images has a per-pixel standard error under 5% of the pixel
        standard deviation).
    max_test : int
        At most this many held-out images per dataset are classified.
    max_classes_shown : int
        Columns of the image grids (the largest classes).
    size_cap : int
        Images larger than this are resized to ``size_cap`` x ``size_cap``.
    group_by : {"auto", "dataset", "source"}
    class_map : mapping, optional
        ``{dataset: {label: shared label}}`` so shared classes line up in the grids.
    seed : int

    Returns
    -------
    AuditResult
        ``summary``: ``accuracy`` (nearest-class-mean, mean over datasets),
        ``chance``, and ``accuracy[<dataset>]`` / ``chance[<dataset>]``.
        Figures ``mean_images`` and ``std_images`` (rows: datasets, columns: classes).
    """
    groups = [g for g in make_groups(datasets, group_by) if len(g)]
    labeled = [g for g in groups if g.frame["label"].notna().any()]
    if not labeled:
        return skipped(NAME, "needs labels: no dataset has a labeled image")
    notes = [f"{g.name}: no labels, not averaged" for g in groups if g not in labeled]
    rng = np.random.default_rng(seed)
    rows, means, stds, labels_by_group = [], {}, {}, {}
    for g in labeled:
        labels = shared_labels(g, class_map)
        frame = g.frame[labels.notna()]
        labels = labels[labels.notna()].astype(str)
        size, note = working_size([g], size_cap)
        if note:
            notes.append(f"{g.name}: {note}")
        mode = common_mode([g])
        splits = frame["split"].astype(str)
        test_mask = splits.isin(["test"]).to_numpy()
        if test_mask.sum() == 0 or (~test_mask).sum() == 0:
            test_mask = rng.random(len(frame)) < 0.3
            notes.append(f"{g.name}: no train/test split; held out a random 30% for the bias score")
        train_f, test_f = frame[~test_mask], frame[test_mask]
        train_f = pd.concat([sample_rows(train_f[labels.loc[train_f.index] == c], max_per_class, rng)
                             for c in sorted(labels.loc[train_f.index].unique())])
        test_f = sample_rows(test_f, max_test, rng)
        classes = sorted(labels.loc[train_f.index].unique(), key=lambda c: -int((labels == c).sum()))
        y_train = labels.loc[train_f.index].to_numpy()
        group_means, group_stds = {}, {}
        for c in classes:  # one class at a time: memory stays bounded with many classes
            xc = load_images(g, train_f.index.to_numpy()[y_train == c], size, mode).astype(np.float32) / 255.0
            group_means[c] = xc.mean(0)
            group_stds[c] = xc.std(0)
        means[g.name], stds[g.name], labels_by_group[g.name] = group_means, group_stds, classes
        acc = float("nan")
        test_f = test_f[labels.loc[test_f.index].isin(classes)]
        if len(classes) >= 2 and len(test_f):
            x_test = load_images(g, test_f.index.to_numpy(), size, mode).astype(np.float32) / 255.0
            m = np.stack([group_means[c].ravel() for c in classes])
            pred = nearest_class_mean(m, x_test.reshape(len(x_test), -1))
            truth = labels.loc[test_f.index].map({c: i for i, c in enumerate(classes)}).to_numpy()
            acc = float((pred == truth).mean())
        rows.append({"dataset": g.name, "n_classes": len(classes), "n_train_images": int(len(train_f)),
                     "n_test_images": int(len(test_f)), "accuracy": acc, "chance": 1.0 / max(len(classes), 1),
                     "image_size": f"{size[0]}x{size[1]}"})
    table = pd.DataFrame(rows)
    scored = table.dropna(subset=["accuracy"])
    if scored.empty:
        notes.append("bias score not computed: every dataset has fewer than two classes or no held-out images")
    summary = {"accuracy": float(scored["accuracy"].mean()) if len(scored) else float("nan"),
               "chance": float(scored["chance"].mean()) if len(scored) else float("nan")}
    if len(table) > 1:
        for r in table.itertuples():
            summary[f"accuracy[{r.dataset}]"] = float(r.accuracy)
            summary[f"chance[{r.dataset}]"] = float(r.chance)

    # grids: union of classes ordered by how many datasets share them, then by name
    all_classes = pd.Series([c for cs in labels_by_group.values() for c in cs]).value_counts()
    ordered = sorted(all_classes.index, key=lambda c: (-all_classes[c], c))
    shown = ordered[:max_classes_shown]
    if len(ordered) > len(shown):
        notes.append(f"grids show {len(shown)} of {len(ordered)} classes")
    names_in: dict[str, set] = {}
    for g in labeled:
        for c, n in zip(shared_labels(g, class_map).astype(object), g.frame["label_name"].astype(object)):
            if isinstance(c, str) and isinstance(n, str):
                names_in.setdefault(c, set()).add(n)
    # a readable name when every dataset agrees on it, else the (shared) class id itself
    col_labels = [next(iter(names_in[c])) if len(names_in.get(c, ())) == 1 else c for c in shown]
    row_labels = list(means)
    figures = {
        "mean_images": image_grid([[means[g].get(c) for c in shown] for g in row_labels], row_labels, col_labels,
                                  "Mean image per class"),
        "std_images": image_grid([[stds[g].get(c) for c in shown] for g in row_labels], row_labels, col_labels,
                                 "Standard deviation per class (each stretched to its range)", normalize=True),
    }
    info = {"method": "nearest-class-mean classifier on pixels, means from training images, scored on held-out "
                      "images", "max_per_class": max_per_class, "notes": notes}
    return AuditResult(NAME, summary=summary, tables={"per_dataset": table}, figures=figures, info=info, notes=notes)
