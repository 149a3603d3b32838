"""``label_issues``: the images whose label is probably wrong, by confident learning.

Confident learning (Northcutt, Jiang & Chuang, "Confident Learning:
Estimating Uncertainty in Dataset Labels", JAIR 2021) needs out-of-sample
predicted probabilities: this audit gets them by stratified K-fold
cross-validation with a probe chosen for the data (the LeNet-5 conv net, or
logistic regression on pixel components, for digits; logistic regression on a
feature space of :mod:`datakit.features` for photos), or reads them from a
file the user gives (``pred_probs=PATH``). It then estimates per-class
thresholds, the confident joint of given and true labels, the noise matrix and
noise rates, and flags label issues (:mod:`audits._confident`). Where the
dataset has crowd votes (``annotations.parquet``), the model's probabilities
and the votes are combined first (after CROWDLAB, Goh, Tkachenko & Mueller
2022), so a strong consensus for the given label outweighs the model.

Per image: ``given_label``, ``suggested_label`` (argmax of the probabilities),
``label_quality`` (self-confidence, the probability of the given label; low is
suspicious), ``score`` (1 - label_quality) and ``is_label_issue`` (= ``flag``).
"""
from __future__ import annotations

import logging
import time
from typing import Sequence

import numpy as np
import pandas as pd

from audits import _confident as cl
from audits._common import IMAGE_COLUMNS, Group, common_mode, fig_to_png, load_images, pyplot, working_size
from audits._crowd_evidence import combine_with_votes
from audits._oof import PROBES, AuditSkip, load_pred_probs, out_of_fold
from audits.base import AuditResult, register_audit, skipped
from datakit.errors import DatakitError
from datakit.store.dataset import Dataset

__all__ = ["label_issues"]

logger = logging.getLogger(__name__)

NAME = "label_issues"


def _select(ds: Dataset, split: str | None, notes: list[str]) -> tuple[pd.DataFrame, np.ndarray]:
    """The examined rows (labelled, in the split) and their class indices in ``ds.classes``."""
    m = ds.manifest
    if split is not None:
        if split not in ds.splits:
            raise DatakitError(f"Unknown split {split!r} in {ds.name}. Valid values are "
                               f"{{{', '.join(map(str, ds.splits))}}} (or leave split unset for every image).")
        m = m[m["split"] == split]
    unlabeled = m["label"].isna()
    if unlabeled.any():
        notes.append(f"{ds.name}: {int(unlabeled.sum())} unlabeled image(s) excluded (no given label to check)")
        m = m[~unlabeled]
    idx = ds.class_to_idx
    y = m["label"].astype(str).map(idx)
    if y.isna().any():  # labels not in categories (cannot happen for datasets datakit built)
        notes.append(f"{ds.name}: {int(y.isna().sum())} image(s) with a label outside the class list excluded")
        m, y = m[y.notna()], y[y.notna()]
    return m, y.to_numpy(dtype=np.int64)


def _names(ds: Dataset) -> list[str]:
    cats = ds.categories.set_index(ds.categories["label"].astype(str))
    names = cats["name"].astype(str).to_dict() if "name" in cats else {}
    return [names.get(c, c) for c in ds.classes]


def _audit_one(ds: Dataset, *, probe: str, pred_probs: str | None, split: str | None, folds: int, method: str,
               epochs: int | None, features, weights, use_votes: bool, workers, scheduler, seed: int,
               notes: list[str]) -> dict:
    frame, y = _select(ds, split, notes)
    classes = list(ds.classes)
    k = len(classes)
    present = np.bincount(y, minlength=k) if len(y) else np.zeros(k, np.int64)
    if (present > 0).sum() < 2:
        raise AuditSkip(f"{ds.name}: needs images of at least two classes to find label errors; got "
                    f"{int((present > 0).sum())} class(es) ({', '.join(c for c, n in zip(classes, present) if n) or 'none'})"
                    + (f" in split {split!r}" if split else ""))
    info: dict = {}
    if pred_probs is not None:
        probs = load_pred_probs(pred_probs, ds, frame, classes)
        info["probe"] = f"pred_probs file {pred_probs}"
        kept = np.ones(len(y), bool)
    else:
        group = Group(ds.name, ds, frame)
        probs, kept, info = out_of_fold(group, y, k, probe=probe, folds=folds, epochs=epochs, features=features,
                                        weights=weights, workers=workers, scheduler=scheduler, seed=seed,
                                        notes=notes)
    frame, y, probs = frame[kept], y[kept], probs[kept]
    model_probs = probs
    oof_acc = float((probs.argmax(1) == y).mean())
    crowd: dict = {}
    if use_votes:
        probs, crowd = combine_with_votes(ds, frame, y, probs, classes)
        if crowd:
            notes.append(f"{ds.name}: crowd votes combined with the model for {crowd['n_voted']} image(s) "
                         f"(model weight {crowd['model_weight']:.2f}, mean annotator weight "
                         f"{crowd['mean_annotator_weight']:.2f})")
    thresholds = cl.per_class_thresholds(y, probs)
    cj = cl.confident_joint(y, probs, thresholds)
    cal = cl.calibrate_joint(cj, y, k)
    flags = cl.find_label_issues(y, probs, method=method, calibrated=cal)
    quality = probs[np.arange(len(y)), y]
    return {"ds": ds, "frame": frame, "y": y, "probs": probs, "model_probs": model_probs, "flags": flags,
            "quality": quality, "thresholds": thresholds, "cj": cj, "calibrated": cal,
            "joint": cl.estimate_joint(cal), "oof_accuracy": oof_acc, "classes": classes, "names": _names(ds),
            "info": {**info, **({"crowd": crowd} if crowd else {})}}


def _per_image(r: dict) -> pd.DataFrame:
    classes = np.asarray(r["classes"], dtype=object)
    frame = r["frame"]
    return pd.DataFrame({
        "dataset": r["ds"].name, "id": frame["id"].astype(str).to_numpy(),
        "split": frame["split"].astype("string").to_numpy(),
        "given_label": classes[r["y"]], "suggested_label": classes[r["probs"].argmax(1)],
        "label_quality": r["quality"], "is_label_issue": r["flags"], "score": 1.0 - r["quality"],
        "flag": r["flags"], "position": frame.index.to_numpy()})


def _tables(r: dict) -> dict[str, pd.DataFrame]:
    name, classes, names = r["ds"].name, r["classes"], r["names"]
    counts = np.bincount(r["y"], minlength=len(classes))
    issues = np.bincount(r["y"][r["flags"]], minlength=len(classes))
    per_class = pd.DataFrame({"dataset": name, "class": classes, "name": names, "images": counts,
                              "threshold": np.where(np.isfinite(r["thresholds"]), r["thresholds"], np.nan),
                              "estimated_noise_rate": cl.per_class_noise(r["calibrated"]),
                              "n_issues": issues,
                              "issue_rate": np.divide(issues, counts, out=np.zeros(len(counts)), where=counts > 0)})
    nm = pd.DataFrame(cl.noise_matrix(r["joint"]), columns=[f"true={c}" for c in classes])
    nm.insert(0, "given", classes)
    nm.insert(0, "dataset", name)
    cj = pd.DataFrame(r["calibrated"], columns=[f"true={c}" for c in classes])
    cj.insert(0, "given", classes)
    cj.insert(0, "dataset", name)
    return {"per_class": per_class, "noise_matrix": nm, "confident_joint": cj}


def _rank(per_image: pd.DataFrame) -> pd.DataFrame:
    """Flagged images first, then all by label quality (lowest first)."""
    return per_image.assign(_f=~per_image["flag"]).sort_values(["_f", "label_quality", "id"], kind="stable") \
        .drop(columns="_f")


def _thumbnails(worst: pd.DataFrame, results: dict[str, dict], n: int, title: str) -> bytes | None:
    if not len(worst):
        return None
    rows = worst.head(n)
    images = []
    for dataset, part in rows.groupby("dataset", sort=False):
        ds = results[dataset]["ds"]
        group = Group(ds.name, ds, ds.manifest)
        size, _ = working_size([Group(ds.name, ds, ds.manifest.loc[part["position"]])], cap=64)
        mode = common_mode([group])
        arr = load_images(group, part["position"].to_numpy(), size, mode).astype(np.float32) / 255.0
        images.extend(zip(part.index, arr))
    by_index = dict(images)
    plt = pyplot()
    cols = min(5, len(rows))
    nr = -(-len(rows) // cols)
    fig, axes = plt.subplots(nr, cols, figsize=(1.6 * cols, 1.75 * nr + 0.4), squeeze=False)
    for ax in axes.ravel():
        ax.set_axis_off()
    for ax, (i, row) in zip(axes.ravel(), rows.iterrows()):
        img = by_index[i]
        ax.imshow(img, cmap="gray" if img.ndim == 2 else None, vmin=0, vmax=1, interpolation="nearest")
        names = results[row["dataset"]]["name_of"]
        ax.set_title(f"{names[row['given_label']][:10]} -> {names[row['suggested_label']][:10]}\n"
                     f"q={row['label_quality']:.3f}", fontsize=7)
    fig.suptitle(title, fontsize=9)
    return fig_to_png(fig)


def _heatmap(r: dict) -> bytes:
    plt = pyplot()
    nm = cl.noise_matrix(r["joint"])
    k = len(nm)
    fig, ax = plt.subplots(figsize=(min(1.0 + 0.45 * k, 12), min(0.8 + 0.45 * k, 12)))
    im = ax.imshow(nm, cmap="viridis", vmin=0, vmax=1)
    labels = [str(n)[:12] for n in r["names"]]
    if k <= 40:
        ax.set_xticks(range(k), labels, rotation=90, fontsize=7)
        ax.set_yticks(range(k), labels, fontsize=7)
        if k <= 12:
            for i in range(k):
                for j in range(k):
                    ax.text(j, i, f"{nm[i, j]:.2f}", ha="center", va="center", fontsize=6,
                            color="white" if nm[i, j] < 0.5 else "black")
    ax.set_xlabel("true label (estimated)")
    ax.set_ylabel("given label")
    ax.set_title(f"{r['ds'].name}: noise matrix P(given | true)", fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.046)
    return fig_to_png(fig)


@register_audit(NAME, columns=IMAGE_COLUMNS + ("votes", "p_correct"))
def label_issues(datasets: Sequence[Dataset], *, probe: str = "auto", pred_probs: str | None = None,
                 split: str | None = None, folds: int = 5, method: str = "prune_by_noise_rate",
                 epochs: int | None = None, features: str | None = "auto", weights: str | None = None,
                 use_votes: bool = True, n_worst: int = 25, save_pred_probs: str | None = None,
                 workers: int | None = None,
                 scheduler: str | None = None, seed: int = 0) -> AuditResult:
    """Find images whose label is probably wrong (confident learning on out-of-fold predictions).

    Parameters
    ----------
    datasets : sequence of Dataset
        Each is audited on its own.
    probe : {"auto", "conv", "linear", "features"}
        How to get out-of-fold probabilities. ``auto``: ``conv`` (LeNet-5) for
        digits (grayscale, at most 32 px), ``features`` for photos; ``linear``:
        logistic regression on pixel components; ``features``: logistic
        regression on a :mod:`datakit.features` space.
    pred_probs : str, optional
        A file of predicted probabilities to use instead of a probe (one
        dataset only): ``.npy`` of shape (N, K) in manifest order (N = the
        manifest, or the examined rows), or ``.csv`` / ``.parquet`` with an
        ``id`` column and one column per class (``ds.classes``).
    split : str, optional
        Audit one split (default: every image; per-split counts in ``tables["per_split"]``).
    folds : int
        Cross-validation folds (reduced, with a note, when a class has fewer images).
    method : {"prune_by_noise_rate", "confident_joint", "both"}
        How issues are flagged (:func:`audits._confident.find_label_issues`).
    epochs : int, optional
        Training epochs of the conv probe (default: enough for about 60,000 presentations, 3-10).
    features : str, optional
        Feature space of the ``features`` probe (the first named; ``auto``: ``gist``, or
        ``pretrained`` when ``weights`` is given).
    weights : str, optional
        Weights file for the ``pretrained`` feature space.
    use_votes : bool
        Combine crowd votes (``annotations.parquet``) with the model.
    n_worst : int
        Images in the ``worst`` table and the thumbnails figure.
    save_pred_probs : str, optional
        Write the model's out-of-fold probabilities (before any crowd votes) to this ``.npy``:
        shape (len(manifest), K), manifest order, NaN rows for images not examined; it can be
        given back as ``pred_probs`` (one dataset only).
    workers, scheduler : optional
        For feature extraction (:func:`datakit.parallel.get_executor`).
    seed : int

    Returns
    -------
    AuditResult
        ``summary``: ``rate`` (flagged share), ``n_issues``, ``estimated_noise_rate``
        (off-diagonal mass of the calibrated joint), ``oof_accuracy``, ``n_images``;
        ``per_image``: ``dataset, id, split, given_label, suggested_label,
        label_quality, is_label_issue, score, flag``; ``tables``: ``per_class``,
        ``noise_matrix`` (rows given, columns true; columns sum to 1),
        ``confident_joint`` (calibrated), ``per_split``, ``worst``; ``figures``:
        ``worst`` (thumbnails, "given -> suggested") and ``noise_matrix``.

    Raises
    ------
    ValueError
        Unknown probe or method, folds < 2.
    DatakitError
        Unknown split; a pred-probs file whose rows, ids or classes do not match the manifest.
    """
    if probe not in PROBES:
        raise ValueError(f"Unknown probe {probe!r}. Valid values are {{{', '.join(PROBES)}}}.")
    if method not in cl.METHODS:
        raise ValueError(f"Unknown method {method!r}. Valid values are {{{', '.join(cl.METHODS)}}}.")
    folds = int(folds)
    if folds < 2:
        raise ValueError(f"folds must be at least 2, got {folds}")
    if (pred_probs is not None or save_pred_probs is not None) and len(datasets) != 1:
        raise DatakitError(f"pred_probs / save_pred_probs are for one dataset; got {len(datasets)} datasets. "
                           "Audit them one at a time.")
    split = None if split is None else str(split)
    t0 = time.perf_counter()
    notes: list[str] = []
    results: dict[str, dict] = {}
    skips: list[str] = []
    for ds in datasets:
        try:
            r = _audit_one(ds, probe=probe, pred_probs=pred_probs, split=split, folds=folds, method=method,
                           epochs=epochs, features=features, weights=weights, use_votes=use_votes,
                           workers=workers, scheduler=scheduler, seed=seed, notes=notes)
        except AuditSkip as exc:
            skips.append(str(exc))
            continue
        r["name_of"] = dict(zip(r["classes"], r["names"]))
        results[ds.name] = r
    if not results:
        return skipped(NAME, "; ".join(skips))
    notes.extend(skips)
    if save_pred_probs is not None:
        r = next(iter(results.values()))
        full = np.full((len(r["ds"].manifest), len(r["classes"])), np.nan)
        full[r["frame"].index.to_numpy()] = r["model_probs"]
        np.save(save_pred_probs, full)
    per_image = pd.concat([_per_image(r) for r in results.values()], ignore_index=True)
    tables: dict[str, pd.DataFrame] = {}
    for r in results.values():
        for key, table in _tables(r).items():
            tables[key] = pd.concat([tables[key], table], ignore_index=True) if key in tables else table
    per_split = per_image.assign(split=per_image["split"].fillna("(none)")).groupby(["dataset", "split"]).agg(
        images=("flag", "size"), n_issues=("flag", "sum"), mean_label_quality=("label_quality", "mean"))
    per_split["rate"] = per_split["n_issues"] / per_split["images"]
    tables["per_split"] = per_split.reset_index()
    ranked = _rank(per_image)
    worst = ranked.head(max(int(n_worst), 0))
    tables["worst"] = worst.rename(columns={"given_label": "given", "suggested_label": "suggested"})[
        ["dataset", "id", "split", "given", "suggested", "label_quality", "is_label_issue"]].reset_index(drop=True)
    figures: dict[str, bytes] = {}
    shown = ranked[ranked["flag"]].head(max(int(n_worst), 0))
    png = _thumbnails(shown if len(shown) else worst, results, max(int(n_worst), 1),
                      f"label_issues: {'flagged' if len(shown) else 'lowest label quality'} images "
                      f"(given -> suggested, q = label quality)")
    if png:
        figures["worst"] = png
    for name, r in results.items():
        figures["noise_matrix" if len(results) == 1 else f"noise_matrix[{name}]"] = _heatmap(r)
    n = len(per_image)
    total = sum(len(r["y"]) for r in results.values())
    est = sum((1 - float(np.trace(r["joint"]))) * len(r["y"]) for r in results.values()) / max(total, 1)
    oof = sum(r["oof_accuracy"] * len(r["y"]) for r in results.values()) / max(total, 1)
    summary = {"rate": float(per_image["flag"].mean()) if n else 0.0, "n_issues": int(per_image["flag"].sum()),
               "estimated_noise_rate": float(est), "oof_accuracy": float(oof), "n_images": int(n),
               "n_datasets": len(results)}
    info = {"probe": probe, "method": method, "folds": folds, "split": split, "seconds": round(time.perf_counter() - t0, 2),
            "datasets": {name: r["info"] for name, r in results.items()}}
    return AuditResult(name=NAME, summary=summary, per_image=per_image.drop(columns="position"), tables=tables,
                       figures=figures, info=info, notes=notes)
