"""WebDataset tar shards: export a dataset for streaming training, and read it back.

A shard is a plain POSIX tar whose members are grouped by key (the image's
content id)::

    <id>.png    the image bytes, as stored in the dataset
    <id>.cls    the class index as decimal text (absent for unlabeled images)
    <id>.json   id, label, label_name, split, source, source_ref, width, height

which is the layout the ``webdataset`` library reads (``.decode("pil")
.to_tuple("png", "cls")``), so users can pick either reader. Shards are named
``<split>-000000.tar`` and never exceed the shard size unless one sample
alone is larger. ``index.json`` next to them lists the shards, their sample
counts and the class order, so a reader can know ``len`` and the classes
without opening a tar.

Shards are written atomically (temporary name, then rename), so an
interrupted export leaves whole shards only; rerunning it skips the shards
whose members already match the plan and writes the rest.
"""
from __future__ import annotations

import io
import json
import logging
import os
import re
import tarfile
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
import pandas as pd
from PIL import Image
from torch.utils.data import IterableDataset

from datakit.errors import DatakitError
from datakit.store.atomic import atomic_write, atomic_write_json

__all__ = ["export_webdataset", "parse_size", "ShardSizeError", "WebDatasetShards", "read_index"]

logger = logging.getLogger(__name__)

INDEX_NAME = "index.json"
_TAR_BLOCK = 512
_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
          "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")


class ShardSizeError(DatakitError, ValueError):
    """An invalid shard size (a ``ValueError``; the CLI shows it as a clean message)."""


def parse_size(size: str | int) -> int:
    """Parse a shard size such as ``"1GB"``, ``"500MB"``, ``"64MiB"`` or ``1000000``.

    Decimal units (KB, MB, GB, TB: powers of 1000) and binary units (KiB,
    MiB, GiB, TiB: powers of 1024); case-insensitive; a bare number is bytes.

    Returns
    -------
    int
        Bytes (at least 1).

    Raises
    ------
    ShardSizeError (a ValueError)
        For an unknown unit, a negative or zero size, or a value of another type.

    Examples
    --------
    >>> parse_size("1GB"), parse_size("500MB"), parse_size("1.5KiB"), parse_size(4096)
    (1000000000, 500000000, 1536, 4096)
    """
    if isinstance(size, bool) or not isinstance(size, (int, str)):
        raise ShardSizeError(f"Invalid shard size {size!r}: give bytes as an int or a string like '1GB' or '500MB'.")
    if isinstance(size, int):
        value = size
    else:
        match = _SIZE_RE.match(size)
        unit = match.group(2).lower() if match else None
        if match is None or unit not in _UNITS:
            valid = ", ".join(["B", "KB", "MB", "GB", "TB", "KiB", "MiB", "GiB", "TiB"])
            raise ShardSizeError(f"Invalid shard size {size!r}. Expected a number with a unit in {{{valid}}}, e.g. '1GB'.")
        value = int(float(match.group(1)) * _UNITS[unit])
    if value < 1:
        raise ShardSizeError(f"Invalid shard size {size!r}: it must be at least 1 byte.")
    return value


def _member_bytes(n: int) -> int:
    """Bytes a member of ``n`` bytes takes in a tar (header + data padded to 512)."""
    return _TAR_BLOCK + -(-n // _TAR_BLOCK) * _TAR_BLOCK


def _add_member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = 0  # deterministic shards: the same dataset gives the same bytes
    info.mode = 0o644
    info.uname = info.gname = ""
    tar.addfile(info, io.BytesIO(data))


def _sample_members(row: dict, class_to_idx: dict[str, int], root: Path) -> list[tuple[str, bytes]]:
    key = str(row["id"])
    path = root / str(row["path"])
    try:
        image = path.read_bytes()
    except OSError as exc:
        raise DatakitError(f"Cannot read image {path} of dataset {root} ({exc}); the dataset is incomplete.") from None
    ext = Path(str(row["path"])).suffix.lstrip(".").lower() or "png"
    members = [(f"{key}.{ext}", image)]
    label = row.get("label")
    if label is not None and not (isinstance(label, float) and np.isnan(label)) and label is not pd.NA:
        members.append((f"{key}.cls", str(class_to_idx[str(label)]).encode()))
    meta = {}
    for col in ("id", "label", "label_name", "split", "source", "source_ref", "width", "height"):
        value = row.get(col)
        if value is None or value is pd.NA or (isinstance(value, float) and np.isnan(value)):
            value = None
        elif isinstance(value, (np.integer,)):
            value = int(value)
        meta[col] = value
    members.append((f"{key}.json", json.dumps(meta, sort_keys=True).encode()))
    return members


def _plan(frame: pd.DataFrame, root: Path, limit: int) -> list[list[int]]:
    """Row positions of each shard, greedily filled up to ``limit`` bytes (tar end blocks included)."""
    shards: list[list[int]] = []
    current: list[int] = []
    used = 2 * _TAR_BLOCK * 10  # tar end-of-archive padding (a 10 KiB record at most)
    base = used
    for pos, rel in enumerate(frame["path"]):
        try:
            size = os.stat(root / str(rel)).st_size
        except OSError as exc:
            raise DatakitError(f"Cannot read image {root / str(rel)} ({exc}); the dataset is incomplete.") from None
        # image + .cls + .json (the last two are small: one block of data each)
        need = _member_bytes(size) + 2 * _member_bytes(_TAR_BLOCK)
        if current and used + need > limit:
            shards.append(current)
            current, used = [], base
        current.append(pos)
        used += need
    if current:
        shards.append(current)
    return shards


def _existing_keys(path: Path) -> list[str] | None:
    try:
        with tarfile.open(path, "r:") as tar:
            names = tar.getnames()
    except (OSError, tarfile.TarError):
        return None
    keys = []
    for name in names:
        key = name.split(".", 1)[0]
        if not keys or keys[-1] != key:
            keys.append(key)
    return keys


def export_webdataset(dataset, out: str | os.PathLike, shard_size: str | int = "1GB", split: str | None = None,
                      progress: Callable[[int], None] | None = None) -> dict:
    """Write a dataset as WebDataset tar shards.

    Parameters
    ----------
    dataset : datakit.store.dataset.Dataset or path
        The dataset to export (a path is opened with :func:`datakit.open_dataset`).
    out : path
        Output directory (created). Shards are ``<split>-NNNNNN.tar``; images
        without a split go to ``all-NNNNNN.tar``.
    shard_size : str or int, default "1GB"
        Largest shard, e.g. ``"1GB"``, ``"500MB"``, or bytes (see :func:`parse_size`).
    split : str, optional
        Export only this split (default: every split, each in its own shards).
    progress : callable, optional
        Called with the number of samples written after each shard.

    Returns
    -------
    dict
        The ``index.json`` content: ``format``, ``images``, ``splits`` (images
        per split), ``classes``, ``shard_size`` (bytes) and ``shards`` (list of
        ``{"path", "split", "count", "bytes"}``, paths relative to ``out``);
        plus ``out``, the output directory.

    Raises
    ------
    DatakitError
        For an unknown split or an image file missing from the dataset.
    ShardSizeError (a ValueError)
        For an invalid ``shard_size``.

    Examples
    --------
    >>> import numpy as np, tempfile
    >>> from datakit.store.writer import write_dataset
    >>> tmp = tempfile.mkdtemp()
    >>> x = np.zeros((6, 8, 8), np.uint8); x[:, 2:6, 2:6] = np.arange(1, 7)[:, None, None] * 40
    >>> root = write_dataset(tmp + "/ds", x, [0, 1, 0, 1, 0, 1], "train")
    >>> index = export_webdataset(root, tmp + "/wds", shard_size="2KB")
    >>> index["images"], [(s["path"], s["count"]) for s in index["shards"]]
    (6, [('train-000000.tar', 1), ('train-000001.tar', 1), ('train-000002.tar', 1), ('train-000003.tar', 1), ('train-000004.tar', 1), ('train-000005.tar', 1)])
    >>> images, targets = next(iter(WebDatasetShards(tmp + "/wds", split="train")))
    >>> tuple(images.shape), targets
    ((1, 8, 8), 0)
    """
    from datakit.store.dataset import Dataset, open_dataset

    limit = parse_size(shard_size)
    ds = dataset if isinstance(dataset, Dataset) else open_dataset(dataset)
    out = Path(out)
    frame = ds.manifest
    if split is not None:
        if split not in ds.splits:
            raise DatakitError(f"Unknown split {split!r} in {ds.root}. Valid values are {{{', '.join(ds.splits)}}}.")
        frame = frame[frame["split"] == split]
    out.mkdir(parents=True, exist_ok=True)
    class_to_idx = ds.class_to_idx
    split_names = frame["split"].astype("object").where(frame["split"].notna(), "all")
    groups = [(name, frame[split_names == name]) for name in pd.unique(split_names)]
    shards_info = []
    written = skipped = 0
    for name, part in groups:
        part = part.reset_index(drop=True)
        plan = _plan(part, ds.root, limit)
        for number, positions in enumerate(plan):
            rel = f"{name}-{number:06d}.tar"
            target = out / rel
            keys = [str(k) for k in part["id"].iloc[positions]]
            if target.exists() and _existing_keys(target) == keys:
                skipped += 1
            else:
                with atomic_write(target, "wb") as fh:
                    with tarfile.open(fileobj=fh, mode="w", format=tarfile.USTAR_FORMAT) as tar:
                        for row in part.iloc[positions].to_dict("records"):
                            for member, data in _sample_members(row, class_to_idx, ds.root):
                                _add_member(tar, member, data)
                written += 1
            shards_info.append({"path": rel, "split": name, "count": len(positions), "bytes": target.stat().st_size})
            if progress:
                progress(len(positions))
        planned = {f"{name}-{number:06d}.tar" for number in range(len(plan))}
        for stale in out.glob(f"{name}-*.tar"):
            if re.fullmatch(rf"{re.escape(name)}-\d{{6}}\.tar", stale.name) and stale.name not in planned:
                logger.info("removing stale shard %s from an earlier export", stale)
                stale.unlink()
    counts = {name: int(len(part)) for name, part in groups}
    index = {"format": "webdataset", "dataset": ds.name, "checksum": ds.checksum, "images": sum(counts.values()),
             "splits": counts, "classes": list(ds.classes), "shard_size": limit, "shards": shards_info}
    atomic_write_json(out / INDEX_NAME, index)
    logger.info("wrote %d shards (%d already complete) to %s", written, skipped, out)
    return {**index, "out": str(out)}


def read_index(directory: str | os.PathLike) -> dict:
    """The ``index.json`` written by :func:`export_webdataset` in ``directory``."""
    path = Path(directory) / INDEX_NAME
    if not path.exists():
        raise DatakitError(
            f"{directory} has no {INDEX_NAME}: it is not a datakit WebDataset export. "
            "Create one with `datakit export DATASET --format webdataset --out DIR`."
        )
    return json.loads(path.read_text())


def _default_transform(image: Image.Image):
    import torch

    array = np.array(image)  # a writable copy
    array = array[None] if array.ndim == 2 else array.transpose(2, 0, 1)
    return torch.from_numpy(np.ascontiguousarray(array)).float().div_(255.0)


def _partition() -> tuple[int, int]:
    """(index, count) of this reader among DDP ranks x DataLoader workers."""
    import torch.distributed as dist
    from torch.utils.data import get_worker_info

    rank, world = 0, 1
    if dist.is_available() and dist.is_initialized():
        rank, world = dist.get_rank(), dist.get_world_size()
    info = get_worker_info()
    worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
    return rank * workers + worker, world * workers


class WebDatasetShards(IterableDataset):
    """An ``IterableDataset`` over WebDataset shards, yielding ``(image, target)``.

    With several ``DataLoader`` workers (and/or DDP ranks), each reader takes
    every k-th shard, so every sample is read exactly once per epoch; use at
    least as many shards as readers (a reader without shards yields nothing
    and a warning is logged).

    Parameters
    ----------
    shards : path or sequence of paths
        A directory written by :func:`export_webdataset` (then ``split``
        selects its shards) or tar files.
    split : str, optional
        With a directory: only the shards of this split.
    transform : callable, optional
        Applied to the PIL image; default: float tensor, shape (C, H, W), in [0, 1].
    target_transform : callable, optional
        Applied to the integer target (-1 for an unlabeled sample).
    shuffle_shards : bool, default False
        Shuffle the shard order each epoch (seeded by ``seed`` + epoch).
    seed : int, default 0

    Attributes
    ----------
    paths : list of Path
    classes : list of str or None
        From ``index.json`` when reading a directory.
    """

    def __init__(self, shards: str | os.PathLike | Sequence[str | os.PathLike], split: str | None = None,
                 transform: Callable | None = None, target_transform: Callable | None = None,
                 shuffle_shards: bool = False, seed: int = 0) -> None:
        super().__init__()
        self.classes = None
        self._counts: list[int] | None = None
        if isinstance(shards, (str, os.PathLike)) and Path(shards).is_dir():
            index = read_index(shards)
            entries = index["shards"]
            if split is not None:
                valid = sorted({e["split"] for e in entries})
                if split not in valid:
                    raise DatakitError(f"Unknown split {split!r} in {shards}. Valid values are {{{', '.join(valid)}}}.")
                entries = [e for e in entries if e["split"] == split]
            self.paths = [Path(shards) / e["path"] for e in entries]
            self._counts = [int(e["count"]) for e in entries]
            self.classes = list(index.get("classes") or [])
        else:
            if split is not None:
                raise ValueError("split= selects shards of an export directory; pass a directory, not tar files.")
            paths = [shards] if isinstance(shards, (str, os.PathLike)) else list(shards)
            self.paths = [Path(p) for p in paths]
        missing = [str(p) for p in self.paths if not p.is_file()]
        if missing:
            raise DatakitError(f"Shard files not found: {', '.join(missing[:3])}{' ...' if len(missing) > 3 else ''}")
        if not self.paths:
            raise DatakitError("No shards to read.")
        self.transform = transform
        self.target_transform = target_transform
        self.shuffle_shards = shuffle_shards
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Reshuffle shards differently in each epoch (with ``shuffle_shards``)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        """Samples over all shards (known from ``index.json``; otherwise by reading the tar headers)."""
        if self._counts is None:
            self._counts = [len(_existing_keys(p) or []) for p in self.paths]
        return sum(self._counts)

    def shards_for_reader(self, index: int, count: int) -> list[Path]:
        """The shards that reader ``index`` of ``count`` reads (every ``count``-th, after the shuffle)."""
        order = list(range(len(self.paths)))
        if self.shuffle_shards:
            np.random.default_rng(self.seed + self.epoch).shuffle(order)
        return [self.paths[i] for i in order[index::count]]

    def samples(self, path: str | os.PathLike) -> Iterator[dict]:
        """Raw samples of one shard: dicts of extension -> bytes, plus ``__key__``."""
        with tarfile.open(path, "r:") as tar:
            sample: dict = {}
            for member in tar:
                if not member.isfile():
                    continue
                key, _, ext = member.name.partition(".")
                if sample and sample["__key__"] != key:
                    yield sample
                    sample = {}
                sample["__key__"] = key
                sample[ext] = tar.extractfile(member).read()
            if sample:
                yield sample

    def __iter__(self):
        index, count = _partition()
        mine = self.shards_for_reader(index, count)
        if not mine:
            logger.warning("reader %d of %d has no shard (%d shards): use more shards or fewer workers",
                           index, count, len(self.paths))
        for path in mine:
            for sample in self.samples(path):
                ext = next((e for e in ("png", "jpg", "jpeg") if e in sample), None)
                if ext is None:
                    raise DatakitError(f"Sample {sample['__key__']!r} in {path} has no image member.")
                with Image.open(io.BytesIO(sample[ext])) as im:
                    im.load()
                    image = im
                target = int(sample["cls"]) if "cls" in sample else -1
                image = self.transform(image) if self.transform is not None else _default_transform(image)
                if self.target_transform is not None:
                    target = self.target_transform(target)
                yield image, target

    def __repr__(self) -> str:
        return f"WebDatasetShards(shards={len(self.paths)})"
