"""Name That Dataset: can a classifier tell which dataset an image came from?

Torralba and Efros ("An Unbiased Look at Dataset Bias", CVPR 2011) trained a
classifier on 1,000 images per dataset to predict the dataset and found it far
above chance: every dataset carries a signature. This audit repeats that with
probes side by side (a linear classifier on pixels, a small conv net, and
linear classifiers on feature spaces: HOG, GIST and colour histograms as
Torralba and Efros used, a pretrained backbone from the user's weights file,
or a conv net datakit trains), a learning curve, a class-conditional variant
(the same class from different datasets, e.g. digit 3 from MNIST vs digit 3
from USPS, or CIFAR-10 "dog" vs Imagenette's English springer), where content
cannot explain the difference, and the held-out images the best probe finds
most and least typical of each dataset.
"""
from __future__ import annotations

import logging
import time
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from audits._common import (IMAGE_COLUMNS, Group, common_mode, fig_to_png, image_grid, load_images, make_groups, parse_list,
                            pyplot, sample_rows, shared_labels, working_size)
from audits._features import (feature_spaces, group_features, impute_failed, linear_on_features, natural_images,
                              resolve_features, trained_on)
from audits._probes import PROBES, ProbeResult, ProbeUnavailable, fit_predict, pixel_basis
from audits.base import AuditResult, register_audit, skipped
from datakit.store.dataset import Dataset

__all__ = ["name_that_dataset"]

logger = logging.getLogger(__name__)

NAME = "name_that_dataset"

#: the conv probe on natural images, and its input side
CONV_NATURAL = "convnet4"
CONV_SIZE_NATURAL = 64


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


class _Spaces:
    """Feature matrices of the sampled rows, per feature space, loaded once and sliced."""

    def __init__(self, spaces, groups, workers, scheduler, notes):
        self.spaces = {s.name: s for s in spaces}
        self.groups, self.workers, self.scheduler, self.notes = groups, workers, scheduler, notes
        self.failed: dict[str, list[str]] = {}

    def rows(self, name: str, per_group: list[np.ndarray]) -> np.ndarray:
        parts = []
        for g, pos in zip(self.groups, per_group):
            values, _, reasons = group_features(g, pos, self.spaces[name], workers=self.workers,
                                                scheduler=self.scheduler)
            if reasons:
                self.failed.setdefault(name, [])
                self.failed[name].extend(r for r in reasons if r not in self.failed[name])
            parts.append(values)
        return np.concatenate(parts)


def _resolve_conv(conv_model: str, conv_size: int | None, natural: bool, size: tuple[int, int]):
    if conv_model == "auto":
        conv_model = CONV_NATURAL if natural else "lenet5"
    if conv_size is None:
        conv_size = CONV_SIZE_NATURAL if natural else None
    conv_shape = size if conv_size is None else (int(conv_size), int(conv_size))
    return conv_model, conv_shape


@register_audit(NAME, columns=IMAGE_COLUMNS + ("rank",))
def name_that_dataset(
    datasets: Sequence[Dataset], *, n_per_dataset: int = 1000, n_test_per_dataset: int = 300,
    probes: Sequence[str] | str = ("linear", "conv"), features: Sequence[str] | str = "auto",
    weights: str | None = None, learning_curve: Sequence[int] | str = (10, 30, 100, 300, 1000),
    class_conditional: bool = True, n_per_class: int = 200, max_classes: int = 20, conv_epochs: int | None = None,
    conv_model: str = "auto", conv_size: int | None = None, size_cap: int = 32, group_by: str = "auto",
    class_map: Mapping[str, Mapping[str, str]] | None = None, n_typical: int = 8, workers: int | None = None,
    scheduler: str | None = None, seed: int = 0,
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
        Probes on the images themselves: logistic regression on pixels (at the
        common size, at most ``size_cap``) and a conv net (at ``conv_size``).
    features : "auto", "none" or sequence of str
        Feature spaces of :mod:`datakit.features` for linear probes, reported
        next to the others (``accuracy_hog``, ``accuracy_gist``, ...).
        ``"auto"``: HOG, GIST and colour histograms on natural images (colour,
        or larger than 32 px), plus ``pretrained`` when ``weights`` is given;
        none on small greyscale digits.
    weights : str, optional
        A torchvision weights file on disk for the ``pretrained`` feature space
        (loaded with ``weights_only=True``; nothing is downloaded).
    learning_curve : sequence of int
        Training images per dataset at which the best linear probe is re-trained.
    class_conditional : bool
        Also run the linear probes within each class shared by all datasets.
    n_per_class : int
        Images per dataset and class for the class-conditional variant.
    max_classes : int
        At most this many shared classes (the largest) in the class-conditional variant.
    conv_epochs : int, optional
        Epochs of the conv probe (default: enough for about 12,000 image updates, 3-20).
    conv_model : str
        ``"auto"``: LeNet-5 on digits, ``convnet4`` (a four-block conv net) at 64x64 colour on natural images;
        or a model name of :func:`datakit.train.list_models`.
    conv_size : int, optional
        Side of the conv probe's input (default: 64 on natural images, else the pixel probe's size).
    size_cap : int
        Images are resized to at most ``size_cap`` x ``size_cap`` for the pixel probe.
    group_by : {"auto", "dataset", "source"}
    class_map : mapping, optional
        ``{dataset: {label: shared label}}`` for the class-conditional variant.
    n_typical : int
        Held-out images per dataset shown as most (and least) typical of it.
    workers, scheduler : optional
        For feature extraction (see :func:`datakit.features.extract_features`).
    seed : int

    Returns
    -------
    AuditResult
        ``summary``: ``accuracy`` (best probe), ``best_probe``, ``accuracy_<probe>``
        for every probe (``linear``, ``conv``, ``hog``, ...), ``chance``,
        ``class_conditional_accuracy`` (its best linear probe, named in
        ``class_conditional_probe``), sample sizes. ``per_image``: the
        held-out images with ``score`` = the best probe's probability of the true dataset
        and ``flag`` = identified with probability >= 0.9. ``tables["typical"]``:
        the held-out images the best probe finds most and least typical of each dataset.
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
    natural = natural_images(groups, mode)
    feature_names = resolve_features(features, natural, weights)
    conv_model, conv_shape = _resolve_conv(conv_model, conv_size, natural, size)
    train_pos, test_pos = _split_rows(groups, n_train, n_test, rng, class_map)
    y_train = np.repeat(np.arange(k), [len(p) for p in train_pos])
    y_test = np.repeat(np.arange(k), [len(p) for p in test_pos])
    chance = 1.0 / k

    summary: dict = {}
    tables: dict[str, pd.DataFrame] = {}
    info: dict = {"groups": names, "image_size": list(size), "mode": mode, "probes": {}, "natural_images": natural,
                  "method": "Torralba & Efros 2011: equal samples per dataset, held-out accuracy vs chance"}
    results: dict = {}
    x_train = x_test = basis = None
    if "linear" in probes or class_conditional:
        x_train = np.concatenate([load_images(g, p, size, mode) for g, p in zip(groups, train_pos)])
        x_test = np.concatenate([load_images(g, p, size, mode) for g, p in zip(groups, test_pos)])
        basis = pixel_basis(x_train, seed=seed)
    for probe in probes:
        try:
            if probe == "linear":
                res = fit_predict("linear", x_train, y_train, x_test, k, seed=seed, basis=basis)
            else:
                cmode = "RGB" if natural and mode == "RGB" else mode
                xc_train = np.concatenate([load_images(g, p, conv_shape, cmode) for g, p in zip(groups, train_pos)])
                xc_test = np.concatenate([load_images(g, p, conv_shape, cmode) for g, p in zip(groups, test_pos)])
                res = fit_predict("conv", xc_train, y_train, xc_test, k, seed=seed, epochs=conv_epochs,
                                  conv_model=conv_model)
                res.info["image_size"] = list(conv_shape)
                res.info["mode"] = cmode
                del xc_train, xc_test
        except ProbeUnavailable as exc:
            notes.append(f"{probe} probe skipped: {exc}")
            continue
        results[probe] = res
        info["probes"][probe] = res.info

    # linear probes on feature spaces
    learned_target = "dataset" if len(datasets) >= 2 else "source"
    spaces = _Spaces(feature_spaces(feature_names, datasets, weights=weights, seed=seed, notes=notes,
                                    learned_target=learned_target), groups, workers, scheduler, notes)
    # a net trained on some of these images (``learned``) is scored only on held-out images it never saw
    eval_mask: dict[str, np.ndarray] = {}
    for name, space in spaces.spaces.items():
        seen = np.concatenate([np.isin(p, trained_on(space, g)) for g, p in zip(groups, test_pos)])
        if seen.any():
            eval_mask[name] = ~seen
            notes.append(f"{name}: {int(seen.sum())} of {len(seen)} held-out images trained its net; its accuracy "
                         f"is measured on the other {int((~seen).sum())}, and it is not a candidate for the best probe")
    z: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for name, space in spaces.spaces.items():
        t0 = time.perf_counter()
        z_tr, z_te, n_bad = impute_failed(spaces.rows(name, train_pos), spaces.rows(name, test_pos))
        z[name] = (z_tr, z_te)
        pred, proba, desc = linear_on_features(z_tr, y_train, z_te, k, seed=seed)
        seconds = time.perf_counter() - t0
        results[name] = ProbeResult(pred=pred, proba=proba, seconds=seconds, info={
            "probe": name, "model": desc, "features": space.info.get("description"), "dim": int(z_tr.shape[1]),
            "n_train": int(len(z_tr)), "n_test": int(len(z_te)), "seconds": round(seconds + space.seconds, 3),
            "extract_seconds": round(space.seconds, 3), "computed": space.info.get("computed", 0),
            "from_cache": space.info.get("from_cache", 0), "images_not_described": n_bad})
        info["probes"][name] = results[name].info
        if n_bad:
            notes.append(f"{name}: {n_bad} sampled image(s) could not be described (their features were set to "
                         f"the training mean): " + "; ".join(spaces.failed.get(name, [])[:3]))
    if not results:
        return AuditResult(NAME, skipped="no probe could run: " + "; ".join(notes), notes=notes)
    for probe, res in results.items():
        keep = eval_mask.get(probe, np.ones(len(y_test), bool))
        summary[f"accuracy_{probe}"] = float((res.pred[keep] == y_test[keep]).mean()) if keep.any() else float("nan")
        tables[f"confusion_{probe}"] = _confusion(y_test[keep], res.pred[keep], names)
    candidates = [p for p in results if p not in eval_mask] or list(results)
    best = max(candidates, key=lambda p: summary[f"accuracy_{p}"])
    if len(results) > 2:
        notes.append(f"accuracy is the best of {len(results)} probes on the same held-out images "
                     f"({best}); each probe's own figure is reported next to it")
    summary = {"accuracy": summary[f"accuracy_{best}"], "best_probe": best, "chance": chance, **summary,
               "n_datasets": k, "n_train_per_dataset": n_train, "n_test_per_dataset": n_test}
    per_dataset = pd.DataFrame({"dataset": names})
    for probe, res in results.items():
        keep = eval_mask.get(probe, np.ones(len(y_test), bool))
        per_dataset[f"recall_{probe}"] = [float((res.pred[(y_test == i) & keep] == i).mean()) for i in range(k)]
    tables["per_dataset"] = per_dataset
    tables["probes"] = pd.DataFrame([{"probe": p, "accuracy": summary[f"accuracy_{p}"],
                                      "model": r.info.get("model"), "seconds": r.info.get("seconds")}
                                     for p, r in results.items()])

    # linear-type probes: pixels (with the shared basis) and each feature space
    linear_probes = [p for p in results if p != "conv" and p not in eval_mask]

    def fit_linear(probe, tr_x, tr_y, te_x):
        if probe == "linear":
            return fit_predict("linear", tr_x, tr_y, te_x, k, seed=seed, basis=basis).pred
        return linear_on_features(tr_x, tr_y, te_x, k, seed=seed)[0]

    def arrays(probe):
        return (x_train, x_test) if probe == "linear" else z[probe]

    # learning curve (the best linear-type probe)
    curve_rows = []
    lc_probe = max(linear_probes, key=lambda p: summary[f"accuracy_{p}"]) if linear_probes else None
    curve_sizes = [s for s in sizes if s <= n_train]
    if not curve_sizes or (max(sizes) > n_train and n_train not in curve_sizes):
        curve_sizes.append(n_train)  # the largest size the data allows
    for n in curve_sizes if lc_probe else []:
        repeats = 3 if n < 100 else 1
        accs = []
        tr_all, te_all = arrays(lc_probe)
        for r in range(repeats):
            sub_rng = np.random.default_rng(seed + 1000 * n + r)
            idx = np.concatenate([sub_rng.choice(np.flatnonzero(y_train == i), size=n, replace=False)
                                  for i in range(k)])
            accs.append(float((fit_linear(lc_probe, tr_all[idx], y_train[idx], te_all) == y_test).mean()))
        curve_rows.append({"n_per_dataset": n, "accuracy": float(np.mean(accs)),
                           "std": float(np.std(accs)), "repeats": repeats, "probe": lc_probe})
    tables["learning_curve"] = pd.DataFrame(curve_rows)
    info["learning_curve_probe"] = lc_probe

    # class-conditional variant (every linear-type probe)
    cc_rows = []
    if class_conditional and linear_probes:
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
                tr_pos, te_pos = [], []
                for g, labels in zip(groups, label_sets):
                    rows = sample_rows(g.frame[labels == cls], m, rng)
                    pos = rng.permutation(rows.index.to_numpy())
                    tr_pos.append(np.sort(pos[:m_train]))
                    te_pos.append(np.sort(pos[m_train:]))
                ytr = np.repeat(np.arange(k), [len(p) for p in tr_pos])
                yte = np.repeat(np.arange(k), [len(p) for p in te_pos])
                row = {"class": cls, "n_train_per_dataset": m_train, "n_test_per_dataset": m - m_train,
                       "chance": chance}
                for probe in linear_probes:
                    if probe == "linear":
                        a_tr = np.concatenate([load_images(g, p, size, mode) for g, p in zip(groups, tr_pos)])
                        a_te = np.concatenate([load_images(g, p, size, mode) for g, p in zip(groups, te_pos)])
                    else:
                        a_tr, a_te, _ = impute_failed(spaces.rows(probe, tr_pos), spaces.rows(probe, te_pos))
                    row[f"accuracy_{probe}"] = float((fit_linear(probe, a_tr, ytr, a_te) == yte).mean())
                cc_rows.append(row)
        else:
            notes.append("class-conditional variant skipped: a dataset has no labels")
        if cc_rows:
            cc = pd.DataFrame(cc_rows)
            cc_probe = max(linear_probes, key=lambda p: cc[f"accuracy_{p}"].mean())
            cc.insert(3, "accuracy", cc[f"accuracy_{cc_probe}"])
            cc.insert(4, "probe", cc_probe)
            tables["class_conditional"] = cc
            summary["class_conditional_accuracy"] = float(cc["accuracy"].mean())
            summary["class_conditional_min_accuracy"] = float(cc["accuracy"].min())
            summary["class_conditional_probe"] = cc_probe
            for probe in linear_probes:
                summary[f"class_conditional_accuracy_{probe}"] = float(cc[f"accuracy_{probe}"].mean())
        elif all(l.notna().any() for l in label_sets):
            notes.append("class-conditional variant skipped: no class with at least 8 images in every dataset "
                         "(state correspondences with --map DATASET:LABEL=SHARED)")

    # per-image table: how recognisable each held-out image is
    best_res = results[best]
    frames = [g.dataset.manifest.loc[p, ["id", "label"]] for g, p in zip(groups, test_pos)]
    per_image = pd.concat(frames, ignore_index=True)
    per_image.insert(0, "dataset", np.repeat(names, [len(p) for p in test_pos]))
    per_image["position"] = np.concatenate(test_pos)
    per_image["predicted"] = [names[i] for i in best_res.pred]
    per_image["score"] = best_res.proba[np.arange(len(y_test)), y_test]
    per_image["flag"] = (best_res.pred == y_test) & (per_image["score"] >= 0.9)
    tables["typical"] = _typical(per_image, n_typical)

    figures = _figures(tables, results, names, chance)
    if n_typical > 0:
        figures["typical"] = _typical_figure(tables["typical"], groups, natural, mode, size, best)
    per_image = per_image.drop(columns="position")
    info["notes"] = notes
    if spaces.failed:
        info["features_failed"] = spaces.failed
    return AuditResult(NAME, summary=summary, per_image=per_image, tables=tables, figures=figures, info=info,
                       notes=notes)


def _typical(per_image: pd.DataFrame, n: int) -> pd.DataFrame:
    """Per dataset, the ``n`` held-out images with the highest and the lowest probability of their own dataset."""
    rows = []
    for name, frame in per_image.groupby("dataset", sort=False):
        order = frame.sort_values("score", ascending=False, kind="stable")
        for kind, part in (("most", order.head(n)), ("least", order.tail(n).iloc[::-1])):
            for rank, (_, r) in enumerate(part.iterrows(), 1):
                rows.append({"dataset": name, "kind": kind, "rank": rank, "id": r["id"], "label": r["label"],
                             "score": float(r["score"]), "predicted": r["predicted"], "position": int(r["position"])})
    return pd.DataFrame(rows, columns=["dataset", "kind", "rank", "id", "label", "score", "predicted", "position"])


def _typical_figure(typical: pd.DataFrame, groups: list[Group], natural: bool, mode: str,
                    size: tuple[int, int], probe: str) -> bytes:
    shape = (64, 64) if natural else size
    cmode = "RGB" if mode == "RGB" else "L"
    cells, row_labels = [], []
    by_name = {g.name: g for g in groups}
    for (name, kind), part in typical.groupby(["dataset", "kind"], sort=False):
        imgs = load_images(by_name[name], part["position"].to_numpy(), shape, cmode).astype(np.float32) / 255.0
        cells.append(list(imgs))
        row_labels.append(f"{name}\n{kind} typical")
    cols = [str(i) for i in range(1, max((len(c) for c in cells), default=0) + 1)]
    return image_grid(cells, row_labels, cols, f"Most and least typical held-out images of each dataset "
                                               f"({probe} probe's probability of the true dataset)")


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
    if len(lc):
        fig, ax = plt.subplots(figsize=(4.2, 3.0))
        lc_label = f"{lc['probe'].iloc[0]} probe" if len(lc) else "probe"
        ax.errorbar(lc["n_per_dataset"], lc["accuracy"], yerr=lc["std"], marker="o", label=lc_label)
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
        ax.set_title(f"Same class, different datasets ({cc['probe'].iloc[0]} probe)", fontsize=9)
        ax.legend(fontsize=7)
        figures["class_conditional"] = fig_to_png(fig)
    return figures
