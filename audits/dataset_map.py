"""A map of the datasets: a 2D embedding of their images, coloured by dataset and by class.

Each dataset's images are described in one feature space (GIST on natural
images by default, standardized pixels on digits), embedded in 2D with
t-SNE (scikit-learn) and drawn twice: coloured by dataset, then by class.
Datasets that occupy separate islands of the map carry a signature a
classifier can learn (Torralba and Efros 2011); classes that mix across
datasets are what a benchmark wants. The figure is read by a person; the
number a gate can test is measured in the feature space itself, not on the
picture: the share of each image's nearest neighbours that come from its
own dataset, next to the share expected if the datasets were mixed.
"""
from __future__ import annotations

import logging
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from audits._common import (IMAGE_COLUMNS, common_mode, fig_to_png, load_images, make_groups, pyplot, sample_rows, shared_labels,
                            working_size)
from audits._features import feature_spaces, group_features, natural_images, resolve_features
from audits.base import AuditResult, register_audit, skipped
from datakit.store.dataset import Dataset

__all__ = ["dataset_map", "neighbour_purity"]

logger = logging.getLogger(__name__)

NAME = "dataset_map"
_METHODS = ("tsne", "pca")


def neighbour_purity(z: np.ndarray, groups: np.ndarray, k: int = 10) -> np.ndarray:
    """Share of each point's ``k`` nearest neighbours (Euclidean, itself excluded) in its own group.

    Parameters
    ----------
    z : ndarray, shape (N, d), float
    groups : ndarray, shape (N,), int
    k : int

    Returns
    -------
    ndarray, shape (N,), float in [0, 1]

    Examples
    --------
    >>> z = np.array([[0.0], [0.1], [10.0], [10.1]])
    >>> neighbour_purity(z, np.array([0, 0, 1, 1]), k=1).tolist()
    [1.0, 1.0, 1.0, 1.0]
    """
    from sklearn.neighbors import NearestNeighbors

    k = int(min(k, len(z) - 1))
    if k < 1:
        return np.full(len(z), np.nan)
    nn = NearestNeighbors(n_neighbors=k + 1).fit(z)
    idx = nn.kneighbors(z, return_distance=False)[:, 1:]
    return (groups[idx] == groups[:, None]).mean(1)


@register_audit(NAME, columns=IMAGE_COLUMNS)
def dataset_map(
    datasets: Sequence[Dataset], *, features: Sequence[str] | str = "auto", weights: str | None = None,
    n_per_dataset: int = 500, method: str = "tsne", perplexity: float = 30.0, k: int = 10, max_classes: int = 10,
    size_cap: int = 32, group_by: str = "auto", class_map: Mapping[str, Mapping[str, str]] | None = None,
    workers: int | None = None, scheduler: str | None = None, seed: int = 0,
) -> AuditResult:
    """Embed a sample of every dataset in 2D and draw it, coloured by dataset and by class.

    Parameters
    ----------
    datasets : sequence of Dataset
        One or more datasets (one dataset with several sources is mapped per source).
    features : "auto" or str
        One feature space of :mod:`datakit.features` (``"auto"``: ``gist`` on natural
        images, ``pretrained`` when ``weights`` is given; standardized pixels on digits;
        ``"pixels"`` forces pixels).
    weights : str, optional
        Weights file for the ``pretrained`` feature space.
    n_per_dataset : int
        Images sampled per dataset (class-stratified).
    method : {"tsne", "pca"}
        t-SNE (scikit-learn, after a 50-component PCA) or the first two principal components.
    perplexity : float
        t-SNE perplexity (reduced for small samples).
    k : int
        Neighbours for the purity figure (in the feature space, not in 2D).
    max_classes : int
        Classes coloured individually; the rest are drawn grey as "other".
    size_cap : int
        Pixel side when the map is drawn from pixels.
    group_by, class_map, workers, scheduler, seed
        As for the other audits.

    Returns
    -------
    AuditResult
        ``summary``: ``neighbour_same_dataset`` (mean share of an image's ``k``
        nearest neighbours from its own dataset), ``expected_if_mixed``,
        ``separation`` (how far between mixed, 0, and fully separate, 1).
        ``per_image``: sampled images with their 2D coordinates and ``score``
        = their own share. ``figures["map"]``: the two coloured maps.
    """
    if method not in _METHODS:
        raise ValueError(f"Unknown value {method!r} for method. Valid values are {{{', '.join(_METHODS)}}}.")
    groups = [g for g in make_groups(datasets, group_by) if len(g)]
    if not groups:
        return skipped(NAME, "no images")
    rng = np.random.default_rng(seed)
    notes: list[str] = []
    mode = common_mode(groups)
    natural = natural_images(groups, mode)
    if isinstance(features, str) and features.strip().lower() == "pixels":
        names = []
    else:
        names = resolve_features(features, natural, weights)
        if isinstance(features, str) and features.strip().lower() == "auto":
            names = ["pretrained"] if weights else (["gist"] if natural else [])
        if len(names) > 1:
            notes.append(f"one feature space per map: used {names[0]} (of {', '.join(names)})")
            names = names[:1]
    samples = []
    for g in groups:
        labels = shared_labels(g, class_map)
        rows = sample_rows(g.frame, n_per_dataset, rng, stratify=labels if labels.notna().any() else None)
        samples.append(np.sort(rows.index.to_numpy()))
    gid = np.repeat(np.arange(len(groups)), [len(p) for p in samples])
    space_name = "pixels"
    if names:
        spaces = feature_spaces(names, datasets, weights=weights, seed=seed, notes=notes)
        if not spaces:
            return skipped(NAME, "; ".join(notes))
        space = spaces[0]
        space_name = space.info["description"]
        parts, failed = [], []
        for g, p in zip(groups, samples):
            values, _, reasons = group_features(g, p, space, workers=workers, scheduler=scheduler)
            parts.append(values)
            failed += reasons
        z = np.concatenate(parts)
        if failed:
            notes.append(f"{len(failed)} image(s) could not be described and are left off the map: "
                         + "; ".join(failed[:3]))
    else:
        size, size_note = working_size(groups, size_cap)
        if size_note:
            notes.append(size_note)
        z = np.concatenate([load_images(g, p, size, mode) for g, p in zip(groups, samples)])
        z = z.reshape(len(z), -1).astype(np.float32) / 255.0
    ok = ~np.isnan(z).any(1)
    if ok.sum() < 5:
        return skipped(NAME, f"too few images could be described ({int(ok.sum())})")
    z, gid = z[ok], gid[ok]
    from sklearn.decomposition import PCA
    from sklearn.preprocessing import StandardScaler

    zs = StandardScaler().fit_transform(z)
    n_comp = int(min(50, zs.shape[1], len(zs) - 1))
    zp = PCA(n_components=n_comp, random_state=seed).fit_transform(zs) if n_comp >= 2 else zs
    if method == "tsne" and len(zp) > 5:
        from sklearn.manifold import TSNE

        perp = float(min(perplexity, max(2.0, (len(zp) - 1) / 3.0)))
        xy = TSNE(n_components=2, perplexity=perp, init="pca", random_state=seed).fit_transform(zp)
    else:
        xy = zp[:, :2] if zp.shape[1] >= 2 else np.column_stack([zp[:, 0], np.zeros(len(zp))])
    purity = neighbour_purity(zp, gid, k)
    share = np.bincount(gid, minlength=len(groups)) / len(gid)
    expected = float((share[gid] * len(gid) - 1).sum() / (len(gid) * (len(gid) - 1))) if len(gid) > 1 else 1.0
    observed = float(np.mean(purity))
    separation = float((observed - expected) / (1 - expected)) if expected < 1 else float("nan")

    frames = []
    for i, (g, p) in enumerate(zip(groups, samples)):
        labels = shared_labels(g, class_map).loc[p]
        f = pd.DataFrame({"dataset": g.name, "id": g.dataset.manifest["id"].to_numpy()[p],
                          "label": labels.astype("object").to_numpy()})
        frames.append(f)
    per_image = pd.concat(frames, ignore_index=True)[ok].reset_index(drop=True)
    per_image["x"], per_image["y"] = xy[:, 0], xy[:, 1]
    per_image["score"] = purity
    per_image["flag"] = purity >= 0.9
    per_dataset = pd.DataFrame({"dataset": [g.name for g in groups],
                                "images": np.bincount(gid, minlength=len(groups)),
                                "neighbour_same_dataset": [float(purity[gid == i].mean()) if (gid == i).any()
                                                           else np.nan for i in range(len(groups))],
                                "expected_if_mixed": share})
    summary = {"neighbour_same_dataset": observed, "expected_if_mixed": expected, "separation": separation,
               "n_images": int(len(gid)), "k": int(min(k, len(gid) - 1))}
    info = {"features": space_name, "method": method, "notes": notes,
            "reading": "islands of one colour in the left panel: datasets a classifier can tell apart"}
    figures = {"map": _map_figure(per_image, [g.name for g in groups], max_classes, method, space_name)}
    return AuditResult(NAME, summary=summary, per_image=per_image, tables={"per_dataset": per_dataset},
                       figures=figures, info=info, notes=notes)


def _map_figure(per: pd.DataFrame, names: list[str], max_classes: int, method: str, space: str) -> bytes:
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10.0, 4.6))
    cmap = plt.get_cmap("tab10")
    for i, name in enumerate(names):
        m = (per["dataset"] == name).to_numpy()
        axes[0].scatter(per["x"][m], per["y"][m], s=6, alpha=0.7, color=cmap(i % 10), label=f"{name} ({m.sum()})")
    axes[0].set_title("by dataset", fontsize=9)
    axes[0].legend(fontsize=7, markerscale=2, loc="best")
    labels = per["label"].astype(str).where(per["label"].notna(), "(none)")
    top = labels.value_counts().index[:max_classes]
    cmap2 = plt.get_cmap("tab20")
    other = ~labels.isin(top)
    if other.any():
        axes[1].scatter(per["x"][other], per["y"][other], s=5, alpha=0.4, color="lightgrey", label="other")
    markers = ["o", "^", "s", "D", "v", "P", "X", "*"]
    for j, lab in enumerate(top):
        shown = False
        for i, name in enumerate(names):
            m = ((labels == lab) & (per["dataset"] == name)).to_numpy()
            if m.any():
                axes[1].scatter(per["x"][m], per["y"][m], s=8, alpha=0.8, color=cmap2(j % 20),
                                marker=markers[i % len(markers)], label=None if shown else str(lab)[:16])
                shown = True
    axes[1].set_title("by class (marker: dataset)" if len(names) > 1 else "by class", fontsize=9)
    axes[1].legend(fontsize=6, markerscale=1.5, loc="best", ncol=2)
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(f"{'t-SNE' if method == 'tsne' else 'PCA'} map of {space}", fontsize=9)
    return fig_to_png(fig)
