"""Private helpers of ``label_issues``: out-of-fold predicted probabilities, or a user's pred-probs file.

Confident learning needs, for every image, class probabilities from a model
that did not train on it: :func:`out_of_fold` trains a probe on K-1 folds of a
stratified K-fold split and predicts the held-out fold, for every fold.
:func:`load_pred_probs` reads probabilities computed elsewhere and checks they
line up with the manifest.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import pandas as pd

from audits._common import Group, common_mode, load_images, parse_list, working_size
from audits._features import feature_spaces, group_features, linear_on_features, natural_images
from audits._probes import ProbeUnavailable, fit_predict
from datakit.errors import DatakitError

__all__ = ["PROBES", "AuditSkip", "out_of_fold", "load_pred_probs", "conv_epochs"]

logger = logging.getLogger(__name__)

#: valid values of the ``probe`` option
PROBES = ("auto", "conv", "linear", "features")

#: side cap for pixel probes
_PIXEL_CAP = 32


class AuditSkip(Exception):
    """The dataset cannot be audited; the message is the reason."""


def conv_epochs(n_train: int, presentations: int = 60000) -> int:
    """Conv-probe epochs: about ``presentations`` image updates per fold, 3 to 10.

    Measured on MNIST test with 3% flipped labels (bench/label_issues.py): 3
    epochs on 8,000 images gave precision 0.80, 8 epochs 0.88.

    Examples
    --------
    >>> conv_epochs(8000), conv_epochs(65000), conv_epochs(1000)
    (8, 3, 10)
    """
    return int(min(10, max(3, -(-presentations // max(n_train, 1)))))


def _usable_classes(y: np.ndarray, k: int, folds: int, name: str, notes: list[str]) -> tuple[np.ndarray, int]:
    """Rows whose class can be cross-validated (2+ images), and the folds the smallest such class allows."""
    counts = np.bincount(y, minlength=k)
    tiny = np.flatnonzero((counts > 0) & (counts < 2))
    kept = ~np.isin(y, tiny)
    if len(tiny):
        notes.append(f"{name}: {len(tiny)} class(es) with a single image excluded (cannot be held out and "
                     f"predicted by a model trained on the others): class index(es) {tiny.tolist()[:10]}")
    live = counts[(counts >= 2)]
    if len(live) < 2:
        raise AuditSkip(f"{name}: needs at least two classes with 2+ images each for cross-validation; "
                        f"class counts are {counts.tolist()}")
    if live.min() < folds:
        notes.append(f"{name}: folds reduced from {folds} to {int(live.min())}: the smallest class has "
                     f"{int(live.min())} images (stratified K-fold needs at least K per class)")
        folds = int(live.min())
    return kept, folds


def _resolve_probe(probe: str, group: Group, notes: list[str]) -> tuple[str, str]:
    mode = common_mode([group])
    natural = natural_images([group], mode)
    if probe == "auto":
        if natural:
            probe = "features"
        else:
            try:
                import datakit.train  # noqa: F401
                probe = "conv"
            except ImportError as exc:
                notes.append(f"conv probe unavailable ({exc}); using the linear pixel probe")
                probe = "linear"
    return probe, mode


def _feature_name(features, weights) -> str:
    if features is None or (isinstance(features, str) and features.strip().lower() in ("auto", "")):
        return "pretrained" if weights else "gist"
    names = parse_list(features)
    if not names:
        raise ValueError(f"features={features!r} names no feature space for the `features` probe")
    return names[0]


def out_of_fold(group: Group, y: np.ndarray, k: int, *, probe: str = "auto", folds: int = 5,
                epochs: int | None = None, features=None, weights: str | None = None, workers: int | None = None,
                scheduler: str | None = None, seed: int = 0, notes: list[str]) -> tuple[np.ndarray, np.ndarray, dict]:
    """Out-of-fold predicted probabilities of a group's images by stratified K-fold cross-validation.

    Parameters
    ----------
    group : Group
        The examined rows (``group.frame``, labelled).
    y : ndarray, shape (N,), int in [0, k)
        Given labels of ``group.frame``'s rows.
    k : int
        Number of classes (columns of the result).
    probe : {"auto", "conv", "linear", "features"}
    folds : int
    epochs : int, optional
        Conv-probe epochs (default :func:`conv_epochs`).
    features, weights, workers, scheduler : see ``label_issues``
    seed : int
    notes : list of str
        Appended to: reduced folds, excluded classes, failed feature rows.

    Returns
    -------
    probs : ndarray, shape (N, k), float64; rows sum to 1 (zeros for excluded rows)
    kept : ndarray, shape (N,), bool
        False for rows of classes too small to cross-validate.
    info : dict
        Probe, model, folds, seconds.

    Raises
    ------
    AuditSkip
        Fewer than two classes with 2+ images.
    """
    from sklearn.model_selection import StratifiedKFold

    t0 = time.perf_counter()
    name = group.name
    kept, folds = _usable_classes(y, k, folds, name, notes)
    probe, mode = _resolve_probe(probe, group, notes)
    rows = np.flatnonzero(kept)
    positions = group.positions[rows]
    yk = y[rows]
    info: dict = {"probe": probe, "folds": folds}
    if probe == "features":
        space_name = _feature_name(features, weights)
        spaces = feature_spaces([space_name], [group.dataset], weights=weights, seed=seed, notes=notes)
        if not spaces:
            raise AuditSkip(f"{name}: feature space {space_name!r} unavailable ({notes[-1] if notes else ''})")
        x, ok, reasons = group_features(group, positions, spaces[0], workers=workers, scheduler=scheduler)
        if reasons:
            notes.append(f"{name}: {len(reasons)} image(s) without {space_name} features (given the mean "
                         f"feature): {'; '.join(reasons[:3])}")
            x = x.copy()
            x[~ok] = np.nanmean(x[ok], axis=0) if ok.any() else 0.0
        info["features"] = space_name
    else:
        size, note = working_size([group], cap=_PIXEL_CAP)
        if note:
            notes.append(f"{name}: {note}")
        x = load_images(group, positions, size, mode)
    probs = np.zeros((len(y), k))
    part = np.zeros((len(yk), k))
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    for fold, (tr, te) in enumerate(splitter.split(np.zeros(len(yk)), yk)):
        if probe == "features":
            _, proba, desc = linear_on_features(x[tr], yk[tr], x[te], k, seed=seed)
            info["model"] = desc
        else:
            ep = epochs if epochs is not None else conv_epochs(len(tr))
            try:
                res = fit_predict(probe, x[tr], yk[tr], x[te], k, seed=seed + fold, epochs=ep)
            except ProbeUnavailable as exc:
                raise AuditSkip(f"{name}: {exc}; pass probe=linear") from exc
            proba = res.proba
            info["model"] = res.info.get("model")
            if probe == "conv":
                info["epochs"] = ep
        part[te] = proba
    sums = part.sum(1, keepdims=True)
    part = np.divide(part, sums, out=np.full_like(part, 1.0 / k), where=sums > 0)
    probs[rows] = part
    info["seconds"] = round(time.perf_counter() - t0, 2)
    return probs, kept, info


def _check_values(probs: np.ndarray, path) -> np.ndarray:
    probs = np.asarray(probs, dtype=np.float64)
    if not np.isfinite(probs).all():
        bad = int((~np.isfinite(probs)).any(1).sum())
        raise DatakitError(f"pred_probs {path}: {bad} row(s) have NaN or infinite values")
    if (probs < 0).any():
        raise DatakitError(f"pred_probs {path}: negative probabilities in {int((probs < 0).any(1).sum())} row(s)")
    sums = probs.sum(1)
    off = np.flatnonzero(np.abs(sums - 1) > 1e-3)
    if len(off):
        raise DatakitError(f"pred_probs {path}: rows must sum to 1 (probabilities, e.g. softmax outputs); "
                           f"{len(off)} row(s) do not, e.g. row {int(off[0])} sums to {sums[off[0]]:.4g}")
    return probs / sums[:, None]


def load_pred_probs(path, ds, frame: pd.DataFrame, classes: list[str]) -> np.ndarray:
    """Read a pred-probs file and align it with the examined rows.

    Parameters
    ----------
    path : str or Path
        ``.npy``: shape (N, K), rows in manifest order, N = ``len(ds.manifest)``
        or ``len(frame)``. ``.csv`` / ``.parquet``: an ``id`` column and one
        column per class (class ids, or class names from ``categories.csv``).
    ds : Dataset
    frame : DataFrame
        The examined manifest rows (index = manifest position).
    classes : list of str
        ``ds.classes``, the column order of the result.

    Returns
    -------
    ndarray, shape (len(frame), K), float64, rows summing to 1.

    Raises
    ------
    DatakitError
        Missing file, unknown format, or rows / ids / classes / values that do not match.
    """
    path = Path(path)
    k = len(classes)
    if not path.is_file():
        raise DatakitError(f"pred_probs file not found: {path}")
    suffix = path.suffix.lower()
    if suffix == ".npy":
        arr = np.load(path, allow_pickle=False)
        if arr.ndim != 2:
            raise DatakitError(f"pred_probs {path}: expected a 2-D array (images, classes), got shape {arr.shape}")
        if arr.shape[1] != k:
            raise DatakitError(f"pred_probs {path} has {arr.shape[1]} columns (classes) but {ds.name} has {k} "
                               f"classes ({', '.join(classes[:12])}{', ...' if k > 12 else ''})")
        n_manifest = len(ds.manifest)
        if arr.shape[0] == n_manifest:
            arr = arr[frame.index.to_numpy()]
        elif arr.shape[0] != len(frame):
            raise DatakitError(f"pred_probs {path} has {arr.shape[0]} rows but {ds.name}'s manifest has "
                               f"{n_manifest} rows and {len(frame)} are examined (labelled, in the split); "
                               "give one row per manifest row, in manifest order, or use a .csv/.parquet "
                               "with an `id` column")
        return _check_values(arr, path)
    if suffix == ".csv":
        table = pd.read_csv(path, dtype={"id": str})
    elif suffix == ".parquet":
        table = pd.read_parquet(path)
    else:
        raise DatakitError(f"pred_probs {path}: unknown format {suffix!r}. Valid values are {{.npy, .csv, .parquet}}.")
    if "id" not in table.columns:
        raise DatakitError(f"pred_probs {path} has no `id` column (columns: {list(table.columns)[:12]})")
    table = table.assign(id=table["id"].astype(str))
    cols = [str(c) for c in table.columns if c != "id"]
    table.columns = [str(c) for c in table.columns]
    names = dict(zip(ds.categories["label"].astype(str), ds.categories["name"].astype(str))) \
        if "name" in ds.categories else {}
    if set(cols) == set(classes):
        order = classes
    elif names and set(cols) == {names.get(c, c) for c in classes}:
        order = [names.get(c, c) for c in classes]
    else:
        missing = sorted(set(classes) - set(cols))
        extra = sorted(set(cols) - set(classes))
        raise DatakitError(f"pred_probs {path}: columns do not match the classes of {ds.name}: missing "
                           f"{missing[:10]}, unexpected {extra[:10]} (expected `id` plus one column per class: "
                           f"{', '.join(classes[:12])}{', ...' if k > 12 else ''})")
    dup = table["id"].duplicated()
    if dup.any():
        raise DatakitError(f"pred_probs {path}: {int(dup.sum())} duplicated id(s), e.g. {table['id'][dup].iloc[0]}")
    known = set(ds.manifest["id"].astype(str))
    unknown = table["id"][~table["id"].isin(known)]
    if len(unknown):
        raise DatakitError(f"pred_probs {path}: {len(unknown)} id(s) not in the manifest of {ds.name}, "
                           f"e.g. {unknown.iloc[0]}")
    want = frame["id"].astype(str)
    table = table.set_index("id")
    absent = want[~want.isin(table.index)]
    if len(absent):
        raise DatakitError(f"pred_probs {path}: no row for {len(absent)} of the {len(want)} examined image(s), "
                           f"e.g. {absent.iloc[0]}")
    return _check_values(table.loc[want.to_numpy(), order].to_numpy(dtype=np.float64), path)
