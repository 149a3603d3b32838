"""The feature-extractor interface, its registry, and cached extraction over a dataset.

An extractor turns uint8 images into one float32 vector each. Audits ask
:func:`extract_features` for a dataset's features; it decodes the images in
batches (through :func:`datakit.parallel.get_executor` for extractors that run
in worker processes, in this process for torch models), and keeps the matrix
in the dataset directory under ``.cache/features/``, keyed by the manifest
checksum and the extractor's settings: a second audit reuses it, a rebuilt
dataset (another checksum) does not, and an interrupted run resumes from the
rows already written.

Images that cannot be read or described are never silently dropped: their
rows are NaN in the matrix and listed, with the reason, in
:attr:`FeatureMatrix.failed`.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd

from datakit.errors import DatakitError
from datakit.registry import Registry

__all__ = [
    "FEATURES", "FeatureError", "FeatureExtractor", "FeatureMatrix", "register_feature", "get_extractor",
    "list_features", "extract_features", "decode_for_features", "CACHE_DIR",
]

logger = logging.getLogger(__name__)

#: name -> :class:`FeatureExtractor` subclass
FEATURES: Registry[type["FeatureExtractor"]] = Registry("feature extractor")

#: cache folder inside a dataset directory
CACHE_DIR = Path(".cache") / "features"
#: bump when the cache layout changes meaning
_CACHE_VERSION = 1
_MODES = ("RGB", "L")


class FeatureError(DatakitError, ValueError):
    """A bad extractor option, weights file or input for feature extraction."""


def register_feature(name: str):
    """Class decorator: register a :class:`FeatureExtractor` subclass under ``name``."""

    def decorator(cls):
        cls.name = name
        return FEATURES.register(name)(cls)

    return decorator


def list_features() -> list[str]:
    """Names of the registered extractors."""
    _load_all()
    return FEATURES.names()


def get_extractor(name: str, **options: Any) -> "FeatureExtractor":
    """The extractor ``name`` with ``options``, checked before any work.

    Raises
    ------
    UnknownNameError
        Unknown name (the message lists the valid names).
    FeatureError
        Unknown option or bad value.
    """
    _load_all()
    cls = FEATURES.get(name)
    try:
        ext = cls(**options)
    except TypeError as exc:
        raise FeatureError(f"feature extractor {name!r}: {exc}") from None
    ext.check()
    return ext


def _load_all() -> None:
    import datakit.features  # noqa: F401  (the package imports every extractor module)


class FeatureExtractor:
    """Base class: an image -> vector map with declared input size and mode.

    Subclasses take keyword-only options in ``__init__`` (stored as public
    attributes of the same names), check them in :meth:`check`, and implement
    :meth:`transform`. Class attributes:

    ``name``
        The registered name (set by :func:`register_feature`).
    ``parallel``
        True when :meth:`transform` is cheap to pickle and runs well in worker
        processes (classic descriptors); False for torch models, which run in
        this process with torch's own threads.
    """

    name: str = "?"
    parallel: bool = True
    #: images are decoded to (size, size) in this mode before :meth:`transform`
    size: int | None = 64
    mode: str = "RGB"

    def check(self) -> None:
        """Raise :class:`FeatureError` for bad options (called by :func:`get_extractor`)."""
        size = getattr(self, "size", None)
        if size is not None and (isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 8):
            raise FeatureError(f"{self.name}: size must be an integer >= 8, got {size!r}")
        if self.mode not in _MODES:
            raise FeatureError(f"{self.name}: unknown value {self.mode!r} for mode. Valid values are {{'RGB', 'L'}}.")

    def params(self) -> dict[str, Any]:
        """The settings that determine the output (the cache key): public attributes.

        Learned state (attributes ending in ``_``, set by :meth:`prepare`) is not a setting.
        """
        return {k: (v if isinstance(v, (int, float, str, bool, type(None), list, tuple)) else repr(v))
                for k, v in sorted(vars(self).items()) if not k.startswith("_") and not k.endswith("_")}

    def describe(self) -> str:
        """One line: name and settings."""
        return f"{self.name}(" + ", ".join(f"{k}={v}" for k, v in self.params().items()) + ")"

    def prepare(self, datasets: Sequence = ()) -> "FeatureExtractor":
        """Get ready for :meth:`transform` (load weights, train a net); default: nothing. Returns self."""
        return self

    def transform(self, images: np.ndarray) -> np.ndarray:
        """Describe images.

        Parameters
        ----------
        images : ndarray, shape (N, size, size, 3) for RGB or (N, size, size) for L, uint8

        Returns
        -------
        ndarray, shape (N, d), float32
        """
        raise NotImplementedError

    def cache_key(self) -> dict[str, Any]:
        """What identifies this extractor's output besides the dataset (default: name + params)."""
        return {"name": self.name, "params": self.params()}


@dataclass
class FeatureMatrix:
    """Features of some rows of one dataset.

    Attributes
    ----------
    values : ndarray, shape (N, d), float32
        Row i describes manifest row ``positions[i]``; NaN rows failed.
    positions : ndarray, shape (N,), int64
        Manifest row positions (in the order asked for).
    failed : DataFrame
        ``position``, ``id``, ``reason``: images that could not be described.
    info : dict
        ``extractor``, ``params``, ``dim``, ``computed``, ``from_cache``, ``seconds``, ``cache``.
    """

    values: np.ndarray
    positions: np.ndarray
    failed: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=["position", "id", "reason"]))
    info: dict = field(default_factory=dict)

    @property
    def ok(self) -> np.ndarray:
        """bool (N,): rows that were described."""
        return ~np.isnan(self.values).any(axis=1) if self.values.size else np.ones(len(self.values), bool)


def decode_for_features(path: str | os.PathLike, size: int | None, mode: str) -> np.ndarray:
    """Decode one stored image to uint8 pixels at ``(size, size)`` in ``mode``.

    Any mode is accepted (greyscale, CMYK, 16-bit, palette, RGBA: through
    :func:`datakit.sources.decode.to_array`); images are resized with Pillow's
    anti-aliased bilinear filter (1x1 images are upsampled).

    Raises
    ------
    ImageRejected
        The file cannot be decoded (reason from :func:`datakit.sources.decode.load_image`).
    """
    from PIL import Image

    from datakit.sources.decode import load_image, to_array

    im = load_image(str(path))
    a = to_array(im, mode)
    if size is not None and a.shape[:2] != (size, size):
        a = np.asarray(Image.fromarray(a).resize((size, size), Image.Resampling.BILINEAR))
    return a


def _describe_chunk(chunk: tuple, extractor: FeatureExtractor) -> tuple[np.ndarray, list[tuple[int, str]]]:
    """Worker: decode and describe one chunk ``(positions, paths)``; failures as (position, reason)."""
    from datakit.errors import ImageRejected

    positions, paths = chunk
    images, ok_pos, failed = [], [], []
    for pos, path in zip(positions, paths):
        try:
            images.append(decode_for_features(path, extractor.size, extractor.mode))
            ok_pos.append(pos)
        except ImageRejected as exc:
            failed.append((int(pos), f"{exc.reason}: {exc.detail}"[:300]))
        except Exception as exc:  # recorded with its reason, never lost
            failed.append((int(pos), "".join(traceback.format_exception_only(type(exc), exc)).strip()[:300]))
    out = None
    if images:
        out = np.asarray(extractor.transform(np.stack(images)), dtype=np.float32)
        if out.ndim != 2 or len(out) != len(images):
            raise FeatureError(f"{extractor.name}.transform returned shape {out.shape} for {len(images)} images")
    return (np.asarray(ok_pos, np.int64), out), failed


class _Cache:
    """``<root>/.cache/features/<name>-<key>/``: values.npy (memmap), done.npy, failed.json, meta.json."""

    def __init__(self, root: Path, checksum: str, extractor: FeatureExtractor, n: int) -> None:
        key = {"version": _CACHE_VERSION, "checksum": checksum, **extractor.cache_key()}
        digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]
        self.base = root / CACHE_DIR
        self.dir = self.base / f"{extractor.name}-{digest}"
        self.key, self.n, self.name = key, n, extractor.name
        self.checksum = checksum
        self.values: np.ndarray | None = None
        self.done = np.zeros(n, bool)
        self.failed: dict[int, str] = {}
        self.writable = True

    def open(self) -> None:
        meta_path = self.dir / "meta.json"
        try:
            if meta_path.exists():
                meta = json.loads(meta_path.read_text())
                done = np.load(self.dir / "done.npy")
                if meta.get("key") == json.loads(json.dumps(self.key, default=str)) and len(done) == self.n:
                    self.values = np.load(self.dir / "values.npy", mmap_mode="r+")
                    self.done = done
                    self.failed = {int(k): v for k, v in json.loads((self.dir / "failed.json").read_text()).items()}
                    return
                shutil.rmtree(self.dir, ignore_errors=True)
        except (OSError, ValueError) as exc:
            logger.info("feature cache %s unreadable (%s); recomputing", self.dir, exc)
            shutil.rmtree(self.dir, ignore_errors=True)
        self.values = None

    def ensure(self, dim: int) -> None:
        if self.values is not None:
            return
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            self._drop_stale()
            self.values = np.lib.format.open_memmap(self.dir / "values.npy", mode="w+", dtype=np.float32,
                                                    shape=(self.n, dim))
            for p in self.failed:
                self.values[p] = np.nan
            self._atomic_json("meta.json", {"key": self.key, "dim": dim, "n": self.n})
            self.commit()
        except OSError as exc:  # read-only dataset: caching is an optimisation only
            logger.info("cannot cache features in %s (%s)", self.dir, exc)
            self.writable = False
            self.values = np.full((self.n, dim), np.nan, np.float32)
            self.done[:] = False

    def _drop_stale(self) -> None:
        """Remove this extractor's caches for other manifests (a rebuilt dataset)."""
        for other in self.base.glob(f"{self.name}-*"):
            if other == self.dir:
                continue
            try:
                meta = json.loads((other / "meta.json").read_text())
                if meta.get("key", {}).get("checksum") != self.checksum:
                    shutil.rmtree(other, ignore_errors=True)
            except (OSError, ValueError):
                shutil.rmtree(other, ignore_errors=True)

    def _atomic_json(self, name: str, obj) -> None:
        from datakit.store.atomic import atomic_write_json

        atomic_write_json(self.dir / name, obj)

    def commit(self) -> None:
        """Make written rows durable: values flushed first, then the done mask (atomic rename)."""
        if not self.writable:
            return
        try:
            if isinstance(self.values, np.memmap):
                self.values.flush()
            tmp = self.dir / "done.npy.tmp"
            with open(tmp, "wb") as fh:
                np.save(fh, self.done)
            os.replace(tmp, self.dir / "done.npy")
            self._atomic_json("failed.json", {str(k): v for k, v in self.failed.items()})
        except OSError as exc:
            logger.info("cannot update feature cache %s (%s)", self.dir, exc)
            self.writable = False


def extract_features(dataset, extractor: FeatureExtractor | str, *, positions: Sequence[int] | None = None,
                     workers: int | None = None, scheduler: str | None = None,
                     progress: Callable[[int], None] | None = None, cache: bool = True,
                     chunk_size: int = 128, **options: Any) -> FeatureMatrix:
    """Features of a dataset's images, in manifest order, cached in the dataset directory.

    Parameters
    ----------
    dataset : Dataset
    extractor : FeatureExtractor or str
        An extractor (already :meth:`~FeatureExtractor.prepare`-d when it needs
        it) or a registered name, built with ``options``.
    positions : sequence of int, optional
        Manifest row positions to describe (default: every row). Only the rows
        not in the cache are computed.
    workers, scheduler
        Passed to :func:`datakit.parallel.get_executor` for extractors with
        ``parallel = True`` (default: ``min(2, cpu_count)`` local processes).
    progress : callable, optional
        Called with the number of images finished, as they finish.
    cache : bool
        Read and write ``<dataset>/.cache/features/``.
    chunk_size : int
        Images per task.

    Returns
    -------
    FeatureMatrix
    """
    from datakit.parallel import get_executor

    if isinstance(extractor, str):
        extractor = get_extractor(extractor, **options).prepare([dataset])
    elif options:
        raise TypeError("options are only accepted with an extractor name")
    t0 = time.perf_counter()
    manifest = dataset.manifest
    n = len(manifest)
    pos = np.arange(n, dtype=np.int64) if positions is None else np.asarray(positions, dtype=np.int64)
    if len(pos) and (pos.min() < 0 or pos.max() >= n):
        raise FeatureError(f"positions out of range for {dataset.root} ({n} images)")
    store = _Cache(Path(dataset.root), dataset.checksum, extractor, n)
    if cache:
        store.open()
    else:
        store.writable = False
    todo = np.unique(pos[~store.done[pos]]) if len(pos) else pos
    paths = manifest["path"].to_numpy()
    root = Path(dataset.root)
    from_cache = int(len(np.unique(pos)) - len(todo))
    if progress and from_cache:
        progress(from_cache)
    if len(todo):
        chunks = [(todo[i:i + chunk_size], [str(root / p) for p in paths[todo[i:i + chunk_size]]])
                  for i in range(0, len(todo), chunk_size)]
        if extractor.parallel and len(todo) > chunk_size:
            executor = get_executor(min(2, os.cpu_count() or 1) if workers is None else workers, scheduler)
        else:
            executor = get_executor(0)
        import functools

        fn = functools.partial(_describe_chunk, extractor=extractor)
        since_commit = 0
        with executor, contextlib.ExitStack() as finished:
            finished.callback(store.commit)  # also on an error or an interrupt: the next run resumes
            for chunk, res in zip(chunks, executor.map(fn, chunks, batch_size=1)):
                if not res.ok:
                    raise FeatureError(f"feature extractor {extractor.name} failed on a batch of "
                                       f"{len(chunk[0])} images: {res.reason} {res.detail}")
                (ok_pos, out), failed = res.value
                if out is not None:
                    store.ensure(out.shape[1])
                    store.values[ok_pos] = out
                for p, reason in failed:
                    store.failed[p] = reason
                if store.values is not None:
                    for p, _ in failed:
                        store.values[p] = np.nan
                    store.done[chunk[0]] = True
                since_commit += len(chunk[0])
                if since_commit >= 2048:
                    store.commit()
                    since_commit = 0
                if progress:
                    progress(len(chunk[0]))
    if store.values is None:  # nothing could be described at all
        values = np.full((len(pos), 0), np.nan, np.float32)
    else:
        values = np.asarray(store.values[pos], dtype=np.float32)
    bad = [int(p) for p in pos if int(p) in store.failed]
    failed = pd.DataFrame({"position": np.asarray(bad, np.int64),
                           "id": manifest["id"].to_numpy()[bad] if bad else np.array([], object),
                           "reason": [store.failed[p] for p in bad]})
    info = {"extractor": extractor.name, "params": extractor.params(), "description": extractor.describe(),
            "dim": int(values.shape[1]), "computed": int(len(todo)), "from_cache": from_cache,
            "failed": len(bad), "seconds": round(time.perf_counter() - t0, 3),
            "cache": str(store.dir) if store.writable else None}
    return FeatureMatrix(values=values, positions=pos, failed=failed, info=info)
