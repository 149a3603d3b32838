"""Private helpers: feature spaces for the audits (which extractors, loading them per group, linear probes).

The audits describe images through :mod:`datakit.features` (HOG, GIST,
colour histograms, tiny images, a pretrained backbone from the user's weights
file, a conv net datakit trains). This module decides which feature spaces an
audit uses by default, loads a group's features for given rows (cached in the
dataset directory), and fits the linear probe on them.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from audits._common import Group, parse_list

__all__ = ["FeatureSpace", "resolve_features", "natural_images", "group_features", "linear_on_features",
           "AUTO_NATURAL", "feature_spaces", "trained_on", "impute_failed"]

logger = logging.getLogger(__name__)

#: the feature spaces used by default on natural images (the pretrained one joins when --weights is given)
AUTO_NATURAL = ("hog", "gist", "color_hist")


def natural_images(groups: Sequence[Group], mode: str) -> bool:
    """True for colour images, or images larger than 32 px on a side (photos rather than digits)."""
    if mode == "RGB":
        return True
    for g in groups:
        w, h = g.frame["width"].dropna(), g.frame["height"].dropna()
        if len(w) and (int(w.max()) > 32 or int(h.max()) > 32):
            return True
    return False


def resolve_features(features, natural: bool, weights: str | None) -> list[str]:
    """The feature spaces to use: ``"auto"`` means :data:`AUTO_NATURAL` (+ ``pretrained`` with weights) on
    natural images and none on digits; ``"none"`` or ``[]`` none; otherwise the names given.

    Raises
    ------
    UnknownNameError
        A name that is not a registered extractor (the message lists the valid ones).
    """
    from datakit.features import FEATURES, list_features

    list_features()
    if features is None or (isinstance(features, str) and features.strip().lower() == "auto"):
        names = list(AUTO_NATURAL) if natural else []
        if weights:
            names.append("pretrained")
        return names
    if isinstance(features, str) and features.strip().lower() in ("none", ""):
        return []
    names = parse_list(features)
    for n in names:
        FEATURES.get(n)  # raises with the valid names
    if weights and "pretrained" not in names:
        names.append("pretrained")
    return names


@dataclass
class FeatureSpace:
    """A prepared extractor and what became of it."""

    name: str
    extractor: object
    seconds: float = 0.0
    info: dict = field(default_factory=dict)


def feature_spaces(names: Sequence[str], datasets: Sequence, *, weights: str | None = None,
                   seed: int = 0, notes: list[str], learned_target: str | None = None) -> list[FeatureSpace]:
    """Build and prepare each named extractor; one that cannot be prepared is noted and left out.

    ``learned`` is trained on ``datasets`` (their training rows, target: the dataset each image came from
    unless options say otherwise); ``pretrained`` loads ``weights``.
    """
    from datakit.features import FeatureError, get_extractor

    out = []
    for name in names:
        t0 = time.perf_counter()
        opts: dict = {}
        if name == "pretrained":
            if not weights:
                notes.append("pretrained features skipped: no weights file given (pass --weights PATH; "
                             "nothing is downloaded)")
                continue
            opts["weights"] = str(weights)
        if name == "learned":
            opts["seed"] = seed
            if learned_target:
                opts["target"] = learned_target
        try:
            ext = get_extractor(name, **opts)
            ext = ext.prepare(list(datasets)) or ext
        except FeatureError:
            raise
        except Exception as exc:  # e.g. torch missing; the other spaces still run
            notes.append(f"{name} features skipped: {type(exc).__name__}: {exc}")
            continue
        out.append(FeatureSpace(name, ext, time.perf_counter() - t0, {"description": ext.describe()}))
    return out


def trained_on(space: FeatureSpace, group: Group) -> np.ndarray:
    """Manifest positions of ``group``'s dataset that trained the space's net (empty for fixed extractors)."""
    for t in getattr(space.extractor, "training_", None) or []:
        if t.get("root") == str(group.dataset.root) and t.get("checksum") == group.dataset.checksum:
            return np.asarray(t.get("positions", []), np.int64)
    return np.zeros(0, np.int64)


def group_features(group: Group, positions: np.ndarray, space: FeatureSpace, *, workers: int | None = None,
                   scheduler: str | None = None) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Features of some rows of a group.

    Returns
    -------
    values : ndarray, shape (N, d), float32 (NaN rows failed)
    ok : ndarray, shape (N,), bool
    reasons : list of str
        ``"<id>: <reason>"`` for each failed row.
    """
    from datakit.features import extract_features

    t0 = time.perf_counter()
    fm = extract_features(group.dataset, space.extractor, positions=np.asarray(positions, np.int64),
                          workers=workers, scheduler=scheduler)
    space.seconds += time.perf_counter() - t0
    space.info["computed"] = space.info.get("computed", 0) + fm.info["computed"]
    space.info["from_cache"] = space.info.get("from_cache", 0) + fm.info["from_cache"]
    space.info["dim"] = fm.info["dim"]
    reasons = [f"{i}: {r}" for i, r in zip(fm.failed["id"], fm.failed["reason"])]
    return fm.values, fm.ok, reasons


def impute_failed(z_train: np.ndarray, z_test: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """Replace NaN rows (images a feature space could not describe) by the training mean; count them."""
    bad_tr, bad_te = np.isnan(z_train).any(1), np.isnan(z_test).any(1)
    n_bad = int(bad_tr.sum() + bad_te.sum())
    if n_bad:
        mean = np.nanmean(z_train[~bad_tr], axis=0) if (~bad_tr).any() else np.zeros(z_train.shape[1], np.float32)
        z_train, z_test = z_train.copy(), z_test.copy()
        z_train[bad_tr], z_test[bad_te] = mean, mean
    return z_train, z_test, n_bad


def linear_on_features(z_train: np.ndarray, y_train: np.ndarray, z_test: np.ndarray, num_classes: int,
                       seed: int = 0, C: float = 1.0, max_components: int = 256):
    """Logistic regression on standardized features (PCA to at most ``max_components`` when wider).

    Returns
    -------
    pred : ndarray (M,), int64
    proba : ndarray (M, num_classes)
    model : str
    """
    from sklearn.decomposition import PCA
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    d = z_train.shape[1]
    k = int(min(max_components, len(z_train) - 1, d))
    steps = [StandardScaler()]
    if 2 <= k < d:
        steps.append(PCA(n_components=k, random_state=seed))
    steps.append(LogisticRegression(C=C, max_iter=500, tol=1e-4, random_state=seed))
    pipe = make_pipeline(*steps).fit(z_train, y_train)
    proba = np.zeros((len(z_test), num_classes))
    if len(z_test):
        proba[:, pipe.classes_.astype(int)] = pipe.predict_proba(z_test)
    desc = f"LogisticRegression(C={C}) on standardized features" + (f" (PCA {k} of {d})" if 2 <= k < d else "")
    return proba.argmax(1).astype(np.int64), proba, desc
