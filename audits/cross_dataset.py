"""Cross-dataset generalization (Torralba and Efros 2011, Table 1).

Train one model per dataset on the classes the datasets share, test every
model on every dataset's test split. A model that learned the class, not the
dataset, does as well on the others as on its own; the percentage drop from
self accuracy to the mean over the other datasets measures the difference.
Reference point, shown next to ours: source-only transfer in the ADDA paper
(Tzeng et al., CVPR 2017, Table 2): MNIST -> USPS 75.2%, USPS -> MNIST 57.1%
(LeNet, 2,000 MNIST / 1,800 USPS training images).
"""
from __future__ import annotations

import logging
import re
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from audits._common import (IMAGE_COLUMNS, Group, common_mode, fig_to_png, load_images, make_groups, pyplot, sample_rows,
                            shared_labels, working_size)
from audits._features import feature_spaces, group_features, impute_failed, linear_on_features, natural_images
from audits._probes import ProbeResult, ProbeUnavailable, fit_predict
from audits.base import AuditResult, register_audit, skipped
from datakit.store.dataset import Dataset

__all__ = ["cross_dataset", "ADDA_SOURCE_ONLY"]

logger = logging.getLogger(__name__)

NAME = "cross_dataset"

#: ADDA (Tzeng et al. 2017) Table 2, "Source only": (source, target) -> accuracy on the target
ADDA_SOURCE_ONLY = {("mnist", "usps"): 0.752, ("usps", "mnist"): 0.571}


def _natural_size(groups: Sequence[Group], cap: int) -> tuple[tuple[int, int], str | None]:
    """One square side for photos: the largest side present, at most ``cap`` (smaller images are upsampled).

    Unlike :func:`working_size`, which shrinks everything to the smallest side
    (right for digits), this keeps the larger images' detail up to ``cap``:
    each dataset is seen at its own resolution as far as one input size allows.
    """
    sides = set()
    for g in groups:
        for col in ("width", "height"):
            sides.update(int(v) for v in g.frame[col].dropna().unique())
    sizes = {(int(h), int(w)) for g in groups for h, w in zip(g.frame["height"].dropna(), g.frame["width"].dropna())}
    side = int(min(cap, max(sides))) if sides else cap
    if sizes == {(side, side)}:
        return (side, side), None
    shown = ", ".join(f"{h}x{w}" for h, w in sorted(sizes)[:4]) + ("" if len(sizes) <= 4 else f" and {len(sizes) - 4} more")
    return (side, side), (f"images have size(s) {shown} (HxW); each resized to {side}x{side} (bilinear; smaller "
                          f"ones upsampled) so every dataset keeps as much of its own resolution as one input allows")


def _key(name: str) -> str | None:
    tokens = set(re.split(r"[^a-z0-9]+", name.lower()))
    for key in ("mnist", "usps"):
        if key in tokens:
            return key
    return None


def _splits(g: Group, labels: pd.Series, shared: list[str], rng: np.random.Generator,
            notes: list[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    frame = g.frame[labels.isin(shared)]
    split = frame["split"].astype(str)
    test = frame[split == "test"]
    train = frame[(split != "test") & (split != "val")]
    if len(train) == 0:
        train = frame[split != "test"]
    if len(test) == 0 or len(train) == 0:
        mask = rng.random(len(frame)) < 0.25
        train, test = frame[~mask], frame[mask]
        notes.append(f"{g.name}: no train/test split on the shared classes; held out a random 25%")
    return train, test


@register_audit(NAME, columns=IMAGE_COLUMNS)
def cross_dataset(
    datasets: Sequence[Dataset], *, model: str = "auto", epochs: int | None = None, max_train: int = 2000,
    max_test: int = 1000, size_cap: int | None = None, group_by: str = "auto",
    class_map: Mapping[str, Mapping[str, str]] | None = None, weights: str | None = None,
    workers: int | None = None, scheduler: str | None = None, seed: int = 0,
) -> AuditResult:
    """Train on each dataset, test on every dataset; report the generalization matrix.

    Parameters
    ----------
    datasets : sequence of Dataset
        Two or more datasets (or one with two or more sources) sharing at least two classes.
    model : str
        ``"auto"`` (LeNet-5 on digits, as in ADDA; on natural images, colour or
        larger than 32 px, a four-block conv net, ``convnet4``, at 64x64 colour), ``"linear"`` (logistic
        regression on pixels), a model name of :func:`datakit.train.list_models`,
        or a feature space of :mod:`datakit.features` (``"hog"``, ``"gist"``,
        ``"pretrained"`` with ``weights``, ...) for a linear classifier on it.
    epochs : int, optional
        Training epochs of the conv net (default: enough for about 12,000
        image updates, 3-20).
    max_train : int
        At most this many training images per dataset (class-stratified sample;
        keeps the audit affordable on a CPU; 2,000 is ADDA's MNIST budget).
    max_test : int
        At most this many test images per dataset.
    size_cap : int, optional
        Images are resized to one common size, at most ``size_cap`` x ``size_cap``
        (default: 64 on natural images, where the data's own resolution matters, 32 on digits).
    group_by : {"auto", "dataset", "source"}
    class_map : mapping, optional
        ``{dataset: {label: shared label}}``: which classes correspond, e.g.
        ``{"imagenette": {"n02102040": "dog", "n03417042": "truck"}}``.
    weights : str, optional
        Weights file for ``model="pretrained"``.
    workers, scheduler : optional
        For feature extraction.
    seed : int

    Returns
    -------
    AuditResult
        ``summary``: ``self_accuracy`` and ``others_accuracy`` (means over
        datasets), ``drop_pct`` (mean percentage drop), ``accuracy[a->b]`` for
        every pair, ``chance``. ``tables``: ``matrix`` (rows: trained on, columns:
        tested on), ``per_dataset``, ``adda_reference`` (when MNIST and USPS are
        among the datasets).
    """
    groups = [g for g in make_groups(datasets, group_by) if len(g)]
    if len(groups) < 2:
        if len(datasets) == 1:
            return skipped(NAME, "needs two or more datasets, or one dataset whose `source` column has two or "
                                 f"more values; got one dataset ({datasets[0].name})")
        return skipped(NAME, "needs two or more non-empty datasets")
    label_sets = {g.name: shared_labels(g, class_map) for g in groups}
    unlabeled = [n for n, l in label_sets.items() if not l.notna().any()]
    if unlabeled:
        return skipped(NAME, f"needs labels: {', '.join(unlabeled)} has no labeled image")
    shared = sorted(set.intersection(*(set(l.dropna().astype(str)) for l in label_sets.values())))
    if len(shared) < 2:
        desc = "; ".join(f"{n}: {sorted(set(l.dropna().astype(str)))[:8]}" for n, l in label_sets.items())
        return skipped(NAME, f"no shared classes (found {len(shared)}: {shared}); need at least two classes present "
                             f"in every dataset. Classes: {desc}. State correspondences with "
                             "--map DATASET:LABEL=SHARED (e.g. --map imagenette:n02102040=dog)")
    rng = np.random.default_rng(seed)
    notes: list[str] = []
    mode = common_mode(groups)
    natural = natural_images(groups, mode)
    if size_cap is None:
        size_cap = 64 if natural else 32
    from datakit.features import FEATURES, list_features

    list_features()
    if model == "auto":
        model = "convnet4" if natural else "lenet5"
    if model in FEATURES:
        size = (0, 0)  # each feature space decodes at its own size
    elif natural:
        size, size_note = _natural_size(groups, size_cap)
        if size_note:
            notes.append(size_note)
    else:
        size, size_note = working_size(groups, size_cap)
        if size_note:
            notes.append(size_note)
    space = None
    if model in FEATURES:
        spaces = feature_spaces([model], datasets, weights=weights, seed=seed, notes=notes)
        if not spaces:
            return skipped(NAME, "; ".join(notes))
        space = spaces[0]
    index = {c: i for i, c in enumerate(shared)}
    data = []
    for g in groups:
        labels = label_sets[g.name].astype(object)
        train, test = _splits(g, labels, shared, rng, notes)
        n_train, n_test = len(train), len(test)
        train = sample_rows(train, max_train, rng, stratify=labels)
        test = sample_rows(test, max_test, rng, stratify=labels)
        if len(train) < n_train or len(test) < n_test:
            notes.append(f"{g.name}: trained on {len(train)} of {n_train} training images, tested on {len(test)} "
                         f"of {n_test} test images (class-stratified samples)")
        if space is None:
            x_tr = load_images(g, train.index.to_numpy(), size, mode)
            x_te = load_images(g, test.index.to_numpy(), size, mode)
        else:
            x_tr, _, bad_tr = group_features(g, train.index.to_numpy(), space, workers=workers, scheduler=scheduler)
            x_te, _, bad_te = group_features(g, test.index.to_numpy(), space, workers=workers, scheduler=scheduler)
            if bad_tr or bad_te:
                notes.append(f"{g.name}: {len(bad_tr) + len(bad_te)} image(s) could not be described by {model} "
                             f"(set to the training mean): " + "; ".join((bad_tr + bad_te)[:3]))
                x_tr, x_te, _ = impute_failed(x_tr, x_te)
        y_tr = labels.loc[train.index].map(index).to_numpy(np.int64)
        y_te = labels.loc[test.index].map(index).to_numpy(np.int64)
        data.append((g.name, x_tr, y_tr, x_te, y_te))

    names = [d[0] for d in data]
    k = len(names)
    acc = np.zeros((k, k))
    probe, used = ("linear", "linear") if model == "linear" else ("conv", model)
    if space is not None:
        probe, used = "features", f"linear on {space.info['description']}"
    for i, (name, x_tr, y_tr, _, _) in enumerate(data):
        x_all = np.concatenate([d[3] for d in data])
        if space is not None:
            pred, proba, _ = linear_on_features(x_tr, y_tr, x_all, len(shared), seed=seed)
            res = ProbeResult(pred=pred, proba=proba, seconds=0.0, info={})
        else:
            try:
                res = fit_predict(probe, x_tr, y_tr, x_all, len(shared), seed=seed, epochs=epochs, conv_model=used)
            except ProbeUnavailable as exc:
                notes.append(f"{exc}; fell back to the linear probe")
                probe, used = "linear", "linear"
                res = fit_predict(probe, x_tr, y_tr, x_all, len(shared), seed=seed)
        start = 0
        for j, d in enumerate(data):
            n = len(d[4])
            acc[i, j] = float((res.pred[start:start + n] == d[4]).mean()) if n else np.nan
            start += n
        logger.info("cross_dataset: trained on %s (%d images) in %.1fs", name, len(x_tr), res.seconds)

    matrix = pd.DataFrame(acc, columns=names)
    matrix.insert(0, "trained_on", names)
    rows = []
    for i, name in enumerate(names):
        others = np.delete(acc[i], i)
        self_acc, other_acc = acc[i, i], float(np.nanmean(others))
        rows.append({"dataset": name, "self_accuracy": self_acc, "others_accuracy": other_acc,
                     "drop_pct": 100.0 * (self_acc - other_acc) / self_acc if self_acc > 0 else np.nan,
                     "n_train": int(len(data[i][2])), "n_test": int(len(data[i][4]))})
    per_dataset = pd.DataFrame(rows)
    summary = {"self_accuracy": float(per_dataset["self_accuracy"].mean()),
               "others_accuracy": float(per_dataset["others_accuracy"].mean()),
               "drop_pct": float(per_dataset["drop_pct"].mean()), "chance": 1.0 / len(shared),
               "n_shared_classes": len(shared)}
    for i, a in enumerate(names):
        for j, b in enumerate(names):
            summary[f"accuracy[{a}->{b}]"] = float(acc[i, j])
    tables = {"matrix": matrix, "per_dataset": per_dataset}
    ref_rows = []
    keys = {_key(n): i for i, n in enumerate(names) if _key(n)}
    for (src, dst), value in ADDA_SOURCE_ONLY.items():
        if src in keys and dst in keys:
            ref_rows.append({"transfer": f"{names[keys[src]]} -> {names[keys[dst]]}",
                             "ours": float(acc[keys[src], keys[dst]]), "adda_source_only": value,
                             "ours_self": float(acc[keys[src], keys[src]])})
    if ref_rows:
        tables["adda_reference"] = pd.DataFrame(ref_rows)
    info = {"shared_classes": shared, "model": used, "epochs": res.info.get("epochs"),
            "image_size": list(size) if space is None else None, "mode": mode, "max_train": max_train,
            "max_test": max_test,
            "reference": "ADDA (Tzeng et al. 2017), source only: MNIST->USPS 75.2%, USPS->MNIST 57.1%",
            "method": "Torralba & Efros 2011 Table 1: self accuracy vs mean of others, percentage drop",
            "notes": notes}
    figures = {"matrix": _matrix_figure(acc, names)}
    return AuditResult(NAME, summary=summary, tables=tables, figures=figures, info=info, notes=notes)


def _matrix_figure(acc: np.ndarray, names: list[str]) -> bytes:
    plt = pyplot()
    k = len(names)
    fig, ax = plt.subplots(figsize=(1.0 * k + 2.2, 0.9 * k + 1.4))
    ax.imshow(acc, cmap="viridis", vmin=0, vmax=1)
    for (i, j), v in np.ndenumerate(acc):
        ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=8, color="white" if v < 0.6 else "black")
    ax.set_xticks(range(k), [n[:12] for n in names], rotation=45, ha="right", fontsize=7)
    ax.set_yticks(range(k), [n[:12] for n in names], fontsize=7)
    ax.set_xlabel("tested on")
    ax.set_ylabel("trained on")
    ax.set_title("Cross-dataset accuracy", fontsize=9)
    return fig_to_png(fig)
