"""``learned``: the penultimate layer of a conv net that datakit trains on the datasets themselves.

:meth:`LearnedFeatures.prepare` trains a registered model
(:mod:`datakit.train.models`, default ``convnet4``: four conv/BN/ReLU/pool
blocks, 128 pooled features) with :func:`datakit.train.fit_arrays` on the
given datasets' images, decoded at ``size`` x ``size`` RGB with
:func:`datakit.features.decode_for_features` (the decoding used for
extraction). The target is

``"label"``
    the datasets' own class ids (the manifest's ``label`` column; the union
    over the datasets: the same id in two datasets is one class; unlabeled
    rows are left out);
``"dataset"``
    which dataset each image came from (the "name that dataset" task);
``"source"``
    the manifest's ``source`` column (one dataset assembled from several sources);
``"auto"``
    ``"dataset"`` for two or more datasets, ``"label"`` for one.

Which rows train the net: in every dataset, the rows whose ``split`` is
``train_split`` (default ``"train"``); a dataset without such rows
contributes all its rows (noted in :attr:`LearnedFeatures.info_` and logged,
since probes later evaluated on its rows then see images the net was trained
on). From these, at most ``max_train`` images are drawn with the seed,
spread evenly over the target's classes (a class smaller than its share
gives all its rows and the rest goes to the others). The rows used are kept
in :attr:`LearnedFeatures.training_` so that an audit can hold them out.

The trained net is shared by every dataset it was trained on: its cache key
holds the training datasets' checksums and the settings, so
``extract_features(ds, ext)`` for each of them reuses one net and caches
per dataset.
"""
from __future__ import annotations

import logging
import time
import traceback
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from datakit.features.base import FeatureError, FeatureExtractor, decode_for_features, register_feature

__all__ = ["LearnedFeatures", "TARGETS", "balanced_sample"]

logger = logging.getLogger(__name__)

#: valid values of the ``target`` option
TARGETS = ("auto", "label", "dataset", "source")
_CACHE_VERSION = 1


def balanced_sample(groups: np.ndarray, cap: int | None, rng: np.random.Generator) -> np.ndarray:
    """Indices of at most ``cap`` items spread evenly over groups (all of a group smaller than its share).

    Parameters
    ----------
    groups : ndarray, shape (N,), int
        Group of each item.
    cap : int or None
        Total to draw (None: every item).
    rng : numpy Generator

    Returns
    -------
    ndarray, shape (M,), int64, sorted; M = min(N, cap)

    Examples
    --------
    >>> g = np.array([0] * 10 + [1] * 3 + [2] * 50)
    >>> idx = balanced_sample(g, 15, np.random.default_rng(0))
    >>> np.bincount(g[idx]).tolist()
    [6, 3, 6]
    """
    groups = np.asarray(groups)
    if cap is None or cap >= len(groups):
        return np.arange(len(groups), dtype=np.int64)
    names, counts = np.unique(groups, return_counts=True)
    take = dict.fromkeys(names.tolist(), 0)
    left, open_ = int(cap), sorted(zip(counts.tolist(), names.tolist()))
    while open_ and left > 0:  # water-filling: the smallest groups first
        share = left // len(open_)
        if share == 0:  # fewer left than groups: one more each for the largest groups
            for _, name in sorted(open_, reverse=True)[:left]:
                take[name] += 1
            break
        count, name = open_[0]
        if count - take[name] <= share:
            left -= count - take[name]
            take[name] = count
            open_.pop(0)
        else:
            for _, name in open_:
                take[name] += share
            left -= share * len(open_)
            open_ = [(c, n) for c, n in open_ if take[n] < c]
    out = [rng.choice(np.flatnonzero(groups == name), size=k, replace=False) for name, k in take.items() if k]
    return np.sort(np.concatenate(out)).astype(np.int64) if out else np.zeros(0, np.int64)


@register_feature("learned")
class LearnedFeatures(FeatureExtractor):
    """Penultimate-layer features of a conv net trained on the datasets (see the module doc).

    Parameters
    ----------
    target : {"auto", "label", "dataset", "source"}
    model : str
        A model of :func:`datakit.train.list_models` (default ``convnet4``,
        128 features at 64x64). Features: ``forward_features`` when the model
        has it, otherwise the input of its last Linear/Conv2d layer.
    size : int
        Working size: images are decoded to ``size`` x ``size`` RGB for training and extraction.
    epochs : int
        Training epochs (SGD, momentum 0.9, cosine schedule, as :func:`datakit.train.fit_arrays`).
    seed : int
        Seeds the sampling of the training rows, the initialisation and the batches.
    max_train : int or None
        At most this many training images (None: all training rows).
    train_split : str or None
        The split that trains the net (None: every row of every dataset).
    batch_size : int
    augment : {None, "shift", "shift:N"}
        Random translations during training (:func:`datakit.train.data.make_augment`).
    device : {"cpu", "cuda", "auto"}
        Training and extraction device (CPU runs are deterministic for a seed).

    Attributes
    ----------
    fit_ : datakit.train.FitResult
        The trained net and its input normalization.
    classes_ : list of str
        The target's classes (dataset names, class ids or sources), in output order.
    target_ : str
        The resolved target.
    training_ : list of dict
        Per training dataset: ``name``, ``root``, ``checksum``, ``rows`` (the
        split used, or ``"all"``), ``positions`` (manifest rows that trained
        the net, int64 array).
    info_ : dict
        ``target``, ``classes``, ``n_train``, ``per_class``, ``failed`` (rows
        that could not be decoded, with reasons), ``decode_seconds``,
        ``train_seconds``, ``images_per_second``, ``history``, ``notes``, ``dim``.

    Examples
    --------
    >>> ext = get_extractor("learned", epochs=4).prepare([cifar, imagenette])   # doctest: +SKIP
    >>> extract_features(cifar, ext).values.shape                                # doctest: +SKIP
    (10000, 128)
    """

    parallel = False
    mode = "RGB"

    def __init__(self, *, target: str = "auto", model: str = "convnet4", size: int = 64, epochs: int = 8,
                 seed: int = 0, max_train: int | None = 4000, train_split: str | None = "train", batch_size: int = 64,
                 augment: str | None = None, device: str = "cpu") -> None:
        self.target = target
        self.model = model
        self.size = size
        self.epochs = epochs
        self.seed = seed
        self.max_train = max_train
        self.train_split = train_split
        self.batch_size = batch_size
        self.augment = augment
        self.device = device
        self._key: list | None = None

    # ------------------------------------------------------------------ options

    def check(self) -> None:
        """Raise :class:`FeatureError` for a bad option (no training here)."""
        super().check()
        from datakit.registry import UnknownNameError
        from datakit.train.models import MODELS

        def positive(name, value, allow_none=False):
            if allow_none and value is None:
                return
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise FeatureError(f"learned: {name} must be a positive integer{' or None' if allow_none else ''}, "
                                   f"got {value!r}")

        if self.target not in TARGETS:
            raise FeatureError(f"Unknown value {self.target!r} for target. Valid values are {{{', '.join(TARGETS)}}}.")
        try:
            MODELS.get(self.model)
        except UnknownNameError as exc:
            raise FeatureError(f"learned: {exc}") from None
        positive("epochs", self.epochs)
        positive("batch_size", self.batch_size)
        positive("max_train", self.max_train, allow_none=True)
        if isinstance(self.seed, bool) or not isinstance(self.seed, (int, np.integer)) or self.seed < 0:
            raise FeatureError(f"learned: seed must be a non-negative integer, got {self.seed!r}")
        if self.train_split is not None and not isinstance(self.train_split, str):
            raise FeatureError(f"learned: train_split must be a split name or None, got {self.train_split!r}")
        if self.device not in ("cpu", "cuda", "auto") and not str(self.device).startswith("cuda:"):
            raise FeatureError(f"Unknown value {self.device!r} for device. "
                               "Valid values are {cpu, cuda, cuda:N, auto}.")
        try:
            from datakit.train.data import make_augment

            make_augment(self.augment, 0)
        except (ValueError, TypeError) as exc:
            raise FeatureError(f"learned: {exc}") from None

    def params(self) -> dict[str, Any]:
        """The options (every one changes the trained net, so all are part of the cache key)."""
        return {k: getattr(self, k) for k in ("target", "model", "size", "epochs", "seed", "max_train",
                                              "train_split", "batch_size", "augment", "device")}

    def cache_key(self) -> dict[str, Any]:
        """name, settings, resolved target and classes, and the checksums of the training datasets."""
        if self._key is None:
            raise FeatureError("learned features: call prepare(datasets) first (the net is trained on the datasets' "
                               "training rows).")
        return {"name": self.name, "version": _CACHE_VERSION, "params": self.params(), "training": self._key}

    # ------------------------------------------------------------------ training

    def _rows(self, datasets: Sequence) -> tuple[list, list[str], list[str]]:
        """Per dataset: (positions, group names) of the candidate training rows; the classes; notes."""
        import pandas as pd

        notes: list[str] = []
        target = self.target
        if target == "auto":
            target = "dataset" if len(datasets) >= 2 else "label"
        if target == "dataset" and len(datasets) < 2:
            raise FeatureError("learned: target='dataset' needs two or more datasets (use target='label' or "
                               "'source' for one).")
        names = [ds.name for ds in datasets]
        if target == "dataset" and len(set(names)) < len(names):
            names = [f"{n}#{i}" for i, n in enumerate(names)]
        per = []
        for i, ds in enumerate(datasets):
            m = ds.manifest
            if self.train_split is None:
                rows, used = np.ones(len(m), bool), "all"
            else:
                rows = (m["split"] == self.train_split).fillna(False).to_numpy(bool)
                used = self.train_split
                if not rows.any():
                    rows, used = np.ones(len(m), bool), "all"
                    notes.append(f"{names[i]} has no {self.train_split!r} rows: the net was trained on all its "
                                 "rows, so probes evaluated on its rows see training images")
            if target == "dataset":
                group = pd.Series(names[i], index=m.index)
            else:
                group = m["label" if target == "label" else "source"].astype("string")
                rows &= group.notna().to_numpy(bool)
            pos = np.flatnonzero(rows).astype(np.int64)
            per.append((pos, group.to_numpy(object)[pos].astype(str), used))
        classes = sorted({c for _, g, _ in per for c in g}) if target != "dataset" else names
        if len(classes) < 2:
            what = {"label": "labeled classes", "source": "sources"}.get(target, "datasets")
            raise FeatureError(f"learned: target={target!r} needs two or more {what} among the training rows "
                               f"of {', '.join(names)}, found {len(classes)}.")
        self.target_ = target
        return per, classes, notes

    def prepare(self, datasets: Sequence = ()) -> "LearnedFeatures":
        """Train the net on the datasets' training rows (see the module doc). Returns self.

        Parameters
        ----------
        datasets : sequence of Dataset
            The datasets the features will describe (one or more).

        Raises
        ------
        FeatureError
            No datasets, fewer than two target classes, or no image could be decoded.
        """
        from datakit.errors import ImageRejected
        from datakit.train import fit_arrays

        datasets = list(datasets)
        if not datasets:
            raise FeatureError("learned features are trained on the datasets they describe: pass them to "
                               "prepare([dataset, ...]).")
        self.check()
        key = [{"name": ds.name, "checksum": ds.checksum} for ds in datasets]
        if self._key is not None and self._key[:-1] == key:
            return self  # already trained on these datasets
        per, classes, notes = self._rows(datasets)
        index = {c: k for k, c in enumerate(classes)}
        groups = np.concatenate([[index[c] for c in g] for _, g, _ in per]).astype(np.int64)
        owner = np.concatenate([np.full(len(p), i) for i, (p, _, _) in enumerate(per)]).astype(np.int64)
        flat = np.concatenate([p for p, _, _ in per]).astype(np.int64)
        rng = np.random.default_rng(self.seed)
        pick = balanced_sample(groups, self.max_train, rng)
        t0 = time.perf_counter()
        images, targets, used_pos, failed = [], [], [[] for _ in datasets], []
        for j in pick:
            ds, pos = datasets[owner[j]], int(flat[j])
            path = Path(ds.root) / ds.manifest["path"].iat[pos]
            try:
                images.append(decode_for_features(path, self.size, "RGB"))
            except ImageRejected as exc:
                failed.append({"dataset": ds.name, "position": pos, "reason": f"{exc.reason}: {exc.detail}"[:300]})
                continue
            except Exception as exc:  # recorded with its reason, never lost
                failed.append({"dataset": ds.name, "position": pos,
                               "reason": "".join(traceback.format_exception_only(type(exc), exc)).strip()[:300]})
                continue
            targets.append(groups[j])
            used_pos[owner[j]].append(pos)
        decode_s = time.perf_counter() - t0
        if failed:
            logger.warning("learned: %d training images could not be decoded (first: %s)", len(failed),
                           failed[0]["reason"])
        y = np.asarray(targets, np.int64)
        if len(np.unique(y)) < 2:
            raise FeatureError(f"learned: {len(y)} training images could be decoded ({len(failed)} failed), "
                               f"covering {len(np.unique(y))} of the {len(classes)} classes; need two or more.")
        x = np.stack(images)
        del images
        t1 = time.perf_counter()
        try:
            fit = fit_arrays(x, y, model=self.model, num_classes=len(classes), epochs=int(self.epochs),
                             batch_size=int(self.batch_size), seed=int(self.seed), device=self.device,
                             augment=self.augment)
        except (ValueError, TypeError) as exc:
            raise FeatureError(f"learned: cannot train {self.model!r} on {x.shape[1]}x{x.shape[2]} RGB images "
                               f"({exc})") from None
        train_s = time.perf_counter() - t1
        self.fit_ = fit
        self.classes_ = list(classes)
        self._setup_forward()
        self.training_ = [{"name": ds.name, "root": str(ds.root), "checksum": ds.checksum, "rows": per[i][2],
                           "positions": np.asarray(sorted(used_pos[i]), np.int64)} for i, ds in enumerate(datasets)]
        dim = int(self._forward(x[:1]).shape[1])
        for note in notes:
            logger.warning("learned: %s", note)
        self.info_ = {
            "target": self.target_, "classes": list(classes), "n_train": int(len(y)),
            "per_class": {c: int(n) for c, n in zip(classes, np.bincount(y, minlength=len(classes)))},
            "rows": {t["name"]: t["rows"] for t in self.training_}, "failed": failed,
            "decode_seconds": round(decode_s, 3), "train_seconds": round(train_s, 3),
            "images_per_second": round(len(y) * int(self.epochs) / max(train_s, 1e-9), 1),
            "history": fit.history, "notes": notes, "dim": dim,
        }
        self._key = key + [{"target": self.target_, "classes": list(classes)}]
        logger.info("learned: %s trained on %d images (%s target, %d classes) in %.1f s; %d features",
                    self.model, len(y), self.target_, len(classes), train_s, dim)
        return self

    # ------------------------------------------------------------------ features

    def _setup_forward(self) -> None:
        import torch

        from datakit.features.pretrained import classifier_layer
        from datakit.train.data import Normalizer

        net = self.fit_.model.eval()
        self._normalize = Normalizer(self.fit_.normalization["mean"], self.fit_.normalization["std"])
        self._store: dict = {}
        if callable(getattr(net, "forward_features", None)):
            self._features = net.forward_features
        else:
            _, head = classifier_layer(net)
            head.register_forward_pre_hook(lambda _m, args: self._store.__setitem__("x", args[0]))

            def features(x: torch.Tensor) -> torch.Tensor:
                self._store.clear()
                net(x)
                return self._store.pop("x")

            self._features = features

    def _forward(self, images: np.ndarray) -> np.ndarray:
        from datakit.features.pretrained import pooled_features
        from datakit.train.data import as_uint8_nchw, input_plan, prepare_images

        fit = self.fit_
        x = prepare_images(as_uint8_nchw(images), input_plan(fit.model_name, tuple(images.shape[1:3]),
                                                             fit.input_size))
        return pooled_features(self._features, x, 256, lambda xb: self._normalize(xb.to(fit.device)))

    def transform(self, images: np.ndarray) -> np.ndarray:
        """Penultimate activations of the trained net.

        Parameters
        ----------
        images : ndarray, shape (N, size, size, 3), uint8

        Returns
        -------
        ndarray, shape (N, d), float32 (d = 128 for ``convnet4``)

        Raises
        ------
        FeatureError
            :meth:`prepare` was not called.
        """
        if getattr(self, "fit_", None) is None:
            raise FeatureError("learned features: call prepare(datasets) first (the net is trained on the datasets' "
                               "training rows).")
        images = np.asarray(images)
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
            raise FeatureError(f"learned: images must be uint8 (N, H, W, 3), got {images.dtype} {images.shape}")
        if len(images) == 0:
            return np.zeros((0, self.info_["dim"]), np.float32)
        return self._forward(images)
