"""Orientation artifacts: images rotated during curation.

Rotating a photo inside its frame leaves constant-color triangles in the
corners (the fill color), bounded by a straight edge at the rotation angle.
Caltech101's rotated categories carry them, and a classifier can learn the
triangles instead of the object. This audit scores every image 0-1 for such
corners and reports the flagged fraction per class.

Detection, per corner: follow the top and left borders from the corner pixel
while the color stays within ``tol`` of it (legs ``a`` and ``b``). A rotation
triangle has both legs shorter than the border (a uniform background or a
letterbox bar runs the whole border), is filled with the corner color inside
the hypotenuse, and is *not* that color just beyond it. The corner score is
(fill fraction inside) - (fill fraction in a band outside), times a
straightness factor (each row's run of fill must shrink linearly, as along a
straight edge; a round object touching the border fails). A rotation about
the center leaves congruent triangles in opposite corners, so each diagonal
scores its weaker corner when the two triangles' legs match (half its stronger
corner otherwise), and the image score is the mean of the two diagonals: four
clean corners score about 1, three about 0.75, one diagonal 0.5. Images at or
above ``threshold`` (default 0.6: at least three corners) are flagged.
Flips leave no trace in the pixels and are not detected.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from audits._common import (common_mode, fig_to_png, load_images, make_groups, pyplot, shared_labels,
                            working_size)
from audits.base import AuditResult, register_audit, skipped
from datakit.store.dataset import Dataset

__all__ = ["orientation_artifacts", "corner_scores", "rotation_scores"]

NAME = "orientation_artifacts"

_CORNERS = ("top_left", "top_right", "bottom_left", "bottom_right")


def _orient(images: np.ndarray, corner: int) -> np.ndarray:
    """View of (N, H, W, C) images flipped so ``corner`` is at the top left."""
    if corner in (1, 3):
        images = images[:, :, ::-1]
    if corner in (2, 3):
        images = images[:, ::-1]
    return images


def _run_length(match: np.ndarray) -> np.ndarray:
    """Length of the leading run of True along the last axis; (N, L) -> (N,)."""
    return np.cumprod(match, axis=1).sum(axis=1)


def corner_scores(images: np.ndarray, tol: float = 0.06, min_leg: float = 0.04,
                  return_legs: bool = False):
    """Rotation-triangle score of each corner of each image.

    Parameters
    ----------
    images : ndarray, shape (N, H, W) or (N, H, W, C), float in [0, 1] or uint8
    tol : float
        Largest per-channel difference (0-1) from the corner color that still
        counts as fill (JPEG noise).
    min_leg : float
        Shortest accepted longer leg of a triangle, as a fraction of its image
        side; the shorter leg may be half as long (at least 2 pixels).
    return_legs : bool
        Also return the legs (along the horizontal and the vertical border).

    Returns
    -------
    scores : ndarray, shape (N, 4), float in [0, 1]
        Corners in the order top-left, top-right, bottom-left, bottom-right.
    legs : ndarray, shape (N, 4, 2), int (only with ``return_legs``)
    """
    x = np.asarray(images)
    if x.dtype == np.uint8:
        x = x.astype(np.float32) / 255.0
    if x.ndim == 3:
        x = x[..., None]
    n, h, w, _ = x.shape
    out = np.zeros((n, 4))
    legs = np.zeros((n, 4, 2), dtype=np.int64)
    yy, xx = np.mgrid[0:h, 0:w]
    yy, xx = yy + 0.5, xx + 0.5
    for c in range(4):
        v = _orient(x, c)
        color = v[:, :1, :1, :]
        top = (np.abs(v[:, 0, :, :] - color[:, 0]) <= tol).all(-1)
        left = (np.abs(v[:, :, 0, :] - color[:, 0]) <= tol).all(-1)
        a, b = _run_length(top), _run_length(left)
        legs[:, c, 0], legs[:, c, 1] = a, b
        # legs as fractions of their borders: the longer at least min_leg (and 2.5 min_leg overall), the
        # shorter at least half of it. A wide photo rotated by ~15 degrees has one pair of thin triangles
        # (e.g. 10 x 32 pixels in a 300 x 126 image); the straightness and outside checks below still apply.
        fa, fb = a / w, b / h
        long_leg, short_leg = np.maximum(fa, fb), np.minimum(fa, fb)
        ok = (a >= 2) & (b >= 2) & (short_leg >= 0.5 * min_leg) & (long_leg >= 2.5 * min_leg) & (a < w) & (b < h)
        for i in np.flatnonzero(ok):
            r = xx / a[i] + yy / b[i]
            inside, band = r < 0.85, (r > 1.2) & (r < 1.8)
            if inside.sum() < 6 or band.sum() < 6:
                continue
            match = (np.abs(v[i] - color[i, 0]) <= tol).all(-1)
            f_in, f_out = match[inside].mean(), match[band].mean()
            if f_in < 0.9:
                continue
            # the fill's edge must be a straight line from (a, 0) to (0, b): each row's
            # run of fill color shrinks linearly (a round object touching the border does not)
            runs = _run_length(match[:b[i]])
            expected = a[i] * (1 - (np.arange(b[i]) + 0.5) / b[i])
            # 1 pixel of slack for resampling; a curved edge (round vignette) bows to one side: half a pixel
            deviation = max(0.0, np.abs(runs - expected).mean() - 1.0) + max(0.0, abs((runs - expected).mean()) - 0.5)
            straight = max(0.0, 1.0 - deviation / (0.2 * a[i]))
            out[i, c] = max(0.0, f_in - f_out) * straight
    return (out, legs) if return_legs else out


def rotation_scores(images: np.ndarray, tol: float = 0.06, min_leg: float = 0.04,
                    batch: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """Image rotation score and the corner scores.

    A rotation about the image center leaves congruent triangles in opposite
    corners (top-left / bottom-right, top-right / bottom-left). Each diagonal
    scores its weaker corner when the two triangles' legs agree (within 25% + 2
    pixels), or half its stronger corner (the fill can merge with same-colored
    content at one corner); the image score is the mean of the two diagonals.
    Four clean corners score about 1, three about 0.75, one diagonal alone 0.5.

    Parameters
    ----------
    images : ndarray, shape (N, H, W) or (N, H, W, C)

    Returns
    -------
    scores : ndarray, shape (N,), in [0, 1]
    corners : ndarray, shape (N, 4)
    """
    scores, corners = [], []
    for i in range(0, len(images), batch):
        cs, legs = corner_scores(images[i:i + batch], tol, min_leg, return_legs=True)
        pairs = []
        for c1, c2 in ((0, 3), (1, 2)):
            l1, l2 = legs[:, c1].astype(float), legs[:, c2].astype(float)
            agree = (np.abs(l1 - l2) <= 0.25 * np.maximum(l1, l2) + 2).all(axis=1)
            both = np.where(agree, np.minimum(cs[:, c1], cs[:, c2]), 0.0)
            # half credit for a lone triangle: the fill can merge with same-colored content at one corner
            pairs.append(np.maximum(both, 0.5 * np.maximum(cs[:, c1], cs[:, c2])))
        scores.append((pairs[0] + pairs[1]) / 2)
        corners.append(cs)
    if not scores:
        return np.zeros(0), np.zeros((0, 4))
    return np.concatenate(scores), np.concatenate(corners)


@register_audit(NAME, columns=("id", "label", "split", "source", "width", "height"))
def orientation_artifacts(
    datasets: Sequence[Dataset], *, threshold: float = 0.6, tol: float = 0.06, size_cap: int = 128,
    max_examples: int = 16, group_by: str = "auto", class_map: Mapping[str, Mapping[str, str]] | None = None,
    chunk: int = 8192,
) -> AuditResult:
    """Flag images with rotation corners; fraction flagged per dataset and class.

    Parameters
    ----------
    datasets : sequence of Dataset
    threshold : float
        Images scoring at or above this are flagged (0.6: three or four rotation corners).
    tol : float
        Fill-color tolerance per channel (0-1).
    size_cap : int
        Larger images are examined at ``size_cap`` x ``size_cap``.
    max_examples : int
        Flagged images shown in the report figure.
    group_by : {"auto", "dataset", "source"}
    class_map : mapping, optional
    chunk : int
        Images examined at a time (bounds memory on large datasets).

    Returns
    -------
    AuditResult
        ``per_image``: every image's ``score`` (0-1) and ``flag``.
        ``summary``: ``flagged_fraction``, ``n_flagged``, ``max_class_fraction``
        and the class it belongs to. ``tables["per_class"]``.
    """
    if not 0 <= threshold <= 1:
        raise ValueError(f"threshold must be in [0, 1], got {threshold!r}")
    groups = [g for g in make_groups(datasets, group_by) if len(g)]
    if not groups:
        return skipped(NAME, "no images")
    notes: list[str] = []
    frames, examples = [], []
    for g in groups:
        size, note = working_size([g], size_cap)
        if note:
            notes.append(f"{g.name}: {note}")
        mode = common_mode([g])
        # in chunks: memory stays bounded on large datasets (small ones are decoded once and sliced)
        score_parts, corner_parts = [], []
        for start in range(0, len(g), chunk):
            images = load_images(g, g.positions[start:start + chunk], size, mode)
            part, corners = rotation_scores(images, tol)
            score_parts.append(part)
            corner_parts.append(corners)
            examples += [(float(part[i]), g.name, images[i].copy()) for i in np.argsort(-part)[:max_examples]
                         if part[i] >= threshold]
            examples = sorted(examples, key=lambda e: -e[0])[:max_examples]
        scores, corners = np.concatenate(score_parts), np.concatenate(corner_parts)
        del score_parts, corner_parts, images  # the parts are copied: at a million images about 40 MB
        labels = shared_labels(g, class_map)
        columns = {"dataset": pd.Categorical.from_codes(np.zeros(len(g), np.int8), [g.name]),
                   "id": g.frame["id"].array, "label": labels.to_numpy(), "score": scores,
                   "flag": scores >= threshold}
        for j, name in enumerate(_CORNERS):
            columns[f"corner_{name}"] = np.ascontiguousarray(corners[:, j])
        del corners
        frames.append(pd.DataFrame(columns, copy=False))  # one copy of each column, not two
        del columns, scores, labels
    # one group: its frame as it is (concatenating even one frame copies every column)
    per_image = frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True)
    del frames
    # grouped by the columns themselves: no copy of the per-image frame (a million rows: about 100 MB)
    keys = [per_image["dataset"], per_image["label"].fillna("(unlabeled)")]
    per_class = (per_image[["flag", "score"]].groupby(keys)
                 .agg(n=("flag", "size"), n_flagged=("flag", "sum"), flagged_fraction=("flag", "mean"),
                      mean_score=("score", "mean")).reset_index()
                 .sort_values("flagged_fraction", ascending=False, kind="stable").reset_index(drop=True))
    top_class = per_class.iloc[0]
    summary = {"flagged_fraction": float(per_image["flag"].mean()), "n_flagged": int(per_image["flag"].sum()),
               "n_images": int(len(per_image)), "max_class_fraction": float(top_class["flagged_fraction"]),
               "max_class": f"{top_class['dataset']}/{top_class['label']}" if len(groups) > 1
               else str(top_class["label"]), "mean_score": float(per_image["score"].mean())}
    figures = {"flagged_per_class": _class_figure(per_class)}
    examples.sort(key=lambda e: -e[0])
    if examples:
        figures["flagged_examples"] = _examples_figure(examples[:max_examples])
    info = {"threshold": threshold, "tol": tol,
            "method": "constant-color triangles with straight edges in opposite corners, as left by rotating a "
                      "photo inside its frame; flips leave no trace and are not detected",
            "notes": notes}
    return AuditResult(NAME, summary=summary, per_image=per_image, tables={"per_class": per_class},
                       figures=figures, info=info, notes=notes)


def _class_figure(per_class: pd.DataFrame) -> bytes:
    plt = pyplot()
    top = per_class.head(20)
    fig, ax = plt.subplots(figsize=(max(3.5, 0.3 * len(top) + 1.5), 3.0))
    ax.bar([f"{str(r.label)[:12]}" for r in top.itertuples()], top["flagged_fraction"], color="tab:red")
    ax.set_ylim(0, max(0.05, float(top["flagged_fraction"].max()) * 1.1))
    ax.tick_params(axis="x", rotation=60, labelsize=6)
    ax.set_ylabel("fraction flagged")
    ax.set_title("Rotation corners per class (top 20)", fontsize=9)
    return fig_to_png(fig)


def _examples_figure(examples: list) -> bytes:
    plt = pyplot()
    k = len(examples)
    cols = min(8, k)
    rows = (k + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(1.3 * cols, 1.45 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, (score, name, img) in zip(axes.ravel(), examples):
        ax.imshow(img, cmap="gray" if img.ndim == 2 else None, vmin=0, vmax=255)
        ax.set_title(f"{name[:10]} {score:.2f}", fontsize=6)
    fig.suptitle("Flagged images (score)", fontsize=9)
    return fig_to_png(fig)
