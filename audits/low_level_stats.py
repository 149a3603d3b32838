"""Low-level statistics: the cues a classifier can use instead of the object.

Per dataset and class: intensity, contrast, ink / foreground area, center of
mass, object bounding-box size and aspect ratio, image size and aspect ratio.
Differences between datasets are flagged with an effect size (Cohen's d), so
"USPS digits fill more of the frame than MNIST digits" becomes a number.
"""
from __future__ import annotations

from itertools import combinations
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from audits._common import (PIXEL_COLUMNS, common_mode, fig_to_png, load_images, make_groups, pyplot, sample_rows,
                            shared_labels, to_gray_float, working_size)
from audits.base import AuditResult, register_audit, skipped
from datakit.store.dataset import Dataset

__all__ = ["low_level_stats", "image_stats", "cohens_d", "METRICS"]

NAME = "low_level_stats"

#: per-image metrics and what they mean
METRICS = {
    "intensity": "mean gray level, 0-1",
    "contrast": "standard deviation of gray levels, 0-1",
    "ink_area": "fraction of pixels that differ from the background (border median) by more than the threshold",
    "com_x": "center of mass of the foreground, 0 (left) - 1 (right)",
    "com_y": "center of mass of the foreground, 0 (top) - 1 (bottom)",
    "bbox_area": "foreground bounding box area / image area",
    "bbox_aspect": "foreground bounding box width / height",
    "image_width": "stored image width, pixels",
    "image_height": "stored image height, pixels",
    "image_aspect": "stored image width / height",
}


def image_stats(gray: np.ndarray, threshold: float = 0.2) -> pd.DataFrame:
    """Per-image low-level statistics.

    Parameters
    ----------
    gray : ndarray, shape (N, H, W), float in [0, 1]
    threshold : float
        A pixel is foreground when it differs from the image's background
        level (median of its border pixels) by more than this.

    Returns
    -------
    DataFrame with columns intensity, contrast, ink_area, com_x, com_y,
    bbox_area, bbox_aspect (NaN where an image has no foreground).

    Examples
    --------
    >>> x = np.zeros((1, 10, 10)); x[0, 2:4, 6:10] = 1.0
    >>> s = image_stats(x).iloc[0]
    >>> float(s.ink_area), float(s.bbox_area), float(s.bbox_aspect)
    (0.08, 0.08, 2.0)
    """
    n, h, w = gray.shape
    border = np.concatenate([gray[:, 0, :], gray[:, -1, :], gray[:, :, 0], gray[:, :, -1]], axis=1)
    bg = np.median(border, axis=1)[:, None, None]
    diff = np.abs(gray - bg)
    mask = diff > threshold
    weight = diff * mask
    mass = weight.sum((1, 2))
    ys = (np.arange(h) + 0.5) / h
    xs = (np.arange(w) + 0.5) / w
    with np.errstate(invalid="ignore", divide="ignore"):
        com_y = (weight.sum(2) * ys).sum(1) / mass
        com_x = (weight.sum(1) * xs).sum(1) / mass
    rows_any, cols_any = mask.any(2), mask.any(1)
    has = rows_any.any(1)
    top = np.where(has, rows_any.argmax(1), 0)
    bottom = np.where(has, h - rows_any[:, ::-1].argmax(1), 0)
    left = np.where(has, cols_any.argmax(1), 0)
    right = np.where(has, w - cols_any[:, ::-1].argmax(1), 0)
    bh, bw = (bottom - top).astype(float), (right - left).astype(float)
    out = pd.DataFrame({
        "intensity": gray.mean((1, 2)), "contrast": gray.std((1, 2)), "ink_area": mask.mean((1, 2)),
        "com_x": com_x, "com_y": com_y,
        "bbox_area": np.where(has, bh * bw / (h * w), np.nan),
        "bbox_aspect": np.where(has, bw / np.maximum(bh, 1), np.nan),
    })
    return out.astype(float)


def cohens_d(a: np.ndarray, b: np.ndarray) -> float:
    """Cohen's d: difference of means over the pooled standard deviation (NaN-safe).

    Examples
    --------
    >>> round(cohens_d(np.array([1.0, 2, 3]), np.array([2.0, 3, 4])), 3)
    -1.0
    """
    a, b = a[np.isfinite(a)], b[np.isfinite(b)]
    if len(a) < 2 or len(b) < 2:
        return float("nan")
    pooled = np.sqrt(((len(a) - 1) * a.var(ddof=1) + (len(b) - 1) * b.var(ddof=1)) / (len(a) + len(b) - 2))
    diff = a.mean() - b.mean()
    if pooled == 0:
        return 0.0 if diff == 0 else float(np.sign(diff) * np.inf)
    return float(diff / pooled)


@register_audit(NAME, columns=PIXEL_COLUMNS)
def low_level_stats(
    datasets: Sequence[Dataset], *, max_images: int = 2000, threshold: float = 0.2, effect_size: float = 0.8,
    size_cap: int = 64, group_by: str = "auto", class_map: Mapping[str, Mapping[str, str]] | None = None,
    seed: int = 0,
) -> AuditResult:
    """Low-level image statistics per dataset and class, with effect sizes between datasets.

    Parameters
    ----------
    datasets : sequence of Dataset
    max_images : int
        At most this many images per dataset, sampled in proportion to the
        classes (means of 2,000 images estimate Cohen's d to about +-0.06).
    threshold : float
        Foreground threshold (gray-level difference from the border median, 0-1).
    effect_size : float
        |Cohen's d| at or above this is flagged (0.8 = "large", Cohen 1988).
    size_cap : int
        Images larger than this are resized to ``size_cap`` x ``size_cap`` for
        the pixel statistics (image size statistics use the stored sizes).
    group_by : {"auto", "dataset", "source"}
    class_map : mapping, optional
        ``{dataset: {label: shared label}}`` for the per-class comparisons.
    seed : int

    Returns
    -------
    AuditResult
        ``summary``: ``max_abs_cohens_d``, ``max_effect_metric``, ``n_large_differences``,
        and each metric's mean per dataset (``<metric>[<dataset>]``).
        ``tables``: ``per_class`` (means per dataset and class), ``differences``
        (every metric, every pair of datasets), ``class_differences`` (same, within shared classes).
    """
    groups = [g for g in make_groups(datasets, group_by) if len(g)]
    if not groups:
        return skipped(NAME, "no images")
    rng = np.random.default_rng(seed)
    notes: list[str] = []
    frames = []
    for g in groups:
        labels = shared_labels(g, class_map)
        rows = sample_rows(g.frame, max_images, rng, stratify=labels if labels.notna().any() else None)
        if len(rows) < len(g):
            notes.append(f"{g.name}: statistics from a class-stratified random sample of {len(rows)} of {len(g)} images")
        size, note = working_size([g], size_cap)
        if note:
            notes.append(f"{g.name}: {note}")
        gray = to_gray_float(load_images(g, rows.index.to_numpy(), size, common_mode([g])))
        stats = image_stats(gray, threshold)
        stats.insert(0, "dataset", g.name)
        stats.insert(1, "id", g.dataset.column_values("id", rows.index.to_numpy()))  # the sampled rows' ids only
        stats.insert(2, "label", labels.loc[rows.index].to_numpy())
        stats["image_width"] = rows["width"].astype(float).to_numpy()
        stats["image_height"] = rows["height"].astype(float).to_numpy()
        stats["image_aspect"] = stats["image_width"] / stats["image_height"]
        frames.append(stats)
    per_image = pd.concat(frames, ignore_index=True)
    metrics = list(METRICS)
    per_class = per_image.groupby(["dataset", "label"], dropna=False)[metrics].mean().reset_index()
    per_class.insert(2, "n", per_image.groupby(["dataset", "label"], dropna=False).size().to_numpy())
    per_dataset = per_image.groupby("dataset", sort=False)[metrics].mean().reset_index()

    names = [g.name for g in groups]
    diffs, class_diffs = [], []
    for a, b in combinations(names, 2):
        xa, xb = per_image[per_image["dataset"] == a], per_image[per_image["dataset"] == b]
        for metric in metrics:
            d = cohens_d(xa[metric].to_numpy(), xb[metric].to_numpy())
            diffs.append({"metric": metric, "dataset_a": a, "dataset_b": b, "mean_a": float(xa[metric].mean()),
                          "mean_b": float(xb[metric].mean()), "cohens_d": d,
                          "flag": bool(np.isfinite(d) and abs(d) >= effect_size) or bool(np.isinf(d))})
        shared = set(xa["label"].dropna()) & set(xb["label"].dropna())
        for cls in sorted(shared):
            ca, cb = xa[xa["label"] == cls], xb[xb["label"] == cls]
            if len(ca) < 10 or len(cb) < 10:
                continue
            for metric in metrics:
                d = cohens_d(ca[metric].to_numpy(), cb[metric].to_numpy())
                class_diffs.append({"label": cls, "metric": metric, "dataset_a": a, "dataset_b": b,
                                    "mean_a": float(ca[metric].mean()), "mean_b": float(cb[metric].mean()),
                                    "cohens_d": d, "flag": bool(np.isfinite(d) and abs(d) >= effect_size)})
    tables = {"per_dataset": per_dataset, "per_class": per_class}
    summary: dict = {}
    if diffs:
        dt = pd.DataFrame(diffs)
        dt["abs_d"] = dt["cohens_d"].abs()
        finite = dt[np.isfinite(dt["abs_d"])]
        top = finite.loc[finite["abs_d"].idxmax()] if len(finite) else None
        summary.update({"max_abs_cohens_d": float(top["abs_d"]) if top is not None else float("nan"),
                        "max_effect_metric": str(top["metric"]) if top is not None else "",
                        "n_large_differences": int(dt["flag"].sum()), "n_comparisons": int(len(dt))})
        tables["differences"] = dt.sort_values("abs_d", ascending=False).drop(columns="abs_d").reset_index(drop=True)
        if class_diffs:
            ct = pd.DataFrame(class_diffs)
            summary["n_large_class_differences"] = int(ct["flag"].sum())
            tables["class_differences"] = ct.reindex(ct["cohens_d"].abs().sort_values(ascending=False).index)\
                .reset_index(drop=True)
    for r in per_dataset.itertuples(index=False):
        for metric in ("intensity", "contrast", "ink_area", "bbox_area"):
            key = metric if len(per_dataset) == 1 else f"{metric}[{r.dataset}]"
            summary[key] = float(getattr(r, metric))

    figures = {"center_of_mass": _com_figure(per_image, names)}
    if "differences" in tables:
        figures["effect_sizes"] = _effect_figure(tables["differences"], effect_size)
    info = {"metrics": METRICS, "threshold": threshold, "effect_size_flag": effect_size,
            "effect_size": "Cohen's d (pooled standard deviation)", "notes": notes}
    return AuditResult(NAME, summary=summary, per_image=per_image, tables=tables, figures=figures, info=info,
                       notes=notes)


def _com_figure(per_image: pd.DataFrame, names: list[str]) -> bytes:
    plt = pyplot()
    fig, axes = plt.subplots(1, len(names), figsize=(2.4 * len(names) + 0.6, 2.6), squeeze=False)
    for ax, name in zip(axes[0], names):
        sub = per_image[per_image["dataset"] == name].dropna(subset=["com_x", "com_y"])
        hist, _, _ = np.histogram2d(sub["com_y"], sub["com_x"], bins=20, range=[[0, 1], [0, 1]])
        ax.imshow(hist, cmap="magma", extent=(0, 1, 1, 0))
        ax.set_title(f"{name[:18]} (n={len(sub)})", fontsize=7)
        ax.tick_params(labelsize=6)
    fig.suptitle("Center of mass of the foreground (heatmap of image counts)", fontsize=9)
    return fig_to_png(fig)


def _effect_figure(diffs: pd.DataFrame, threshold: float) -> bytes:
    plt = pyplot()
    top = diffs[np.isfinite(diffs["cohens_d"])].head(20).iloc[::-1]
    labels = [f"{r.metric}: {r.dataset_a[:10]} vs {r.dataset_b[:10]}" for r in top.itertuples()]
    fig, ax = plt.subplots(figsize=(5.5, 0.25 * len(top) + 1.0))
    colors = ["tab:red" if abs(d) >= threshold else "tab:gray" for d in top["cohens_d"]]
    ax.barh(range(len(top)), top["cohens_d"], color=colors)
    ax.set_yticks(range(len(top)), labels, fontsize=6)
    for x in (-threshold, threshold):
        ax.axvline(x, color="k", ls=":", lw=0.8)
    ax.set_xlabel("Cohen's d")
    ax.set_title("Largest differences between datasets", fontsize=9)
    return fig_to_png(fig)
