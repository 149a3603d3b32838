"""Export a dataset directory to conventional layouts.

Formats are registered in :data:`EXPORTERS` (``datakit export --format NAME``).
An exporter is ``fn(dataset, out, *, split=None, progress=None, **options) -> dict``
taking an opened :class:`~datakit.store.dataset.Dataset` and returning a small
summary (at least ``format``, ``out`` and ``images``). Add one with::

    @register_exporter("webdataset")
    def export_webdataset(dataset, out, *, split=None, progress=None, shard_size="1GB"):
        ...

Built in:

``imagefolder``
    torchvision ``ImageFolder`` layout: ``<out>/<split>/<class>/<id>.png``
    (``datasets.ImageFolder(out / "train")`` loads a split).
``idx``
    MNIST IDX files per split, gzipped: ``<split>-images-idx3-ubyte.gz`` and
    ``<split>-labels-idx1-ubyte.gz`` (labels are class indices in the order of
    ``classes.txt``, which is written next to them).

In their own modules (registered by :func:`export_formats`):

``webdataset``
    tar shards (:mod:`datakit.store.webdataset`).
``huggingface``
    Parquet shards with embedded images, ``ClassLabel`` names and the
    provenance columns, plus a dataset card; ``datasets.load_dataset(out)``
    opens it (:mod:`datakit.store.huggingface`).
``croissant``
    MLCommons Croissant 1.0 JSON-LD describing the dataset directory in
    place (:mod:`datakit.store.croissant`); ``out`` may be a directory
    (``croissant.json`` is written in it) or a ``.json`` file.

An exporter whose ``out`` may be a file sets ``fn.out_may_be_file = True``;
``export_dataset`` then leaves creating ``out`` to it. One that copies no
data (``croissant``) sets ``fn.may_write_inside_dataset = True``.
"""
from __future__ import annotations

import logging
import os
import re
import shutil
from pathlib import Path
from typing import Any, Callable

import numpy as np

from datakit.errors import DatakitError
from datakit.registry import Registry
from datakit.store.atomic import atomic_write_json, atomic_write_text

__all__ = ["EXPORTERS", "register_exporter", "export_dataset", "export_formats", "export_imagefolder", "export_idx"]

logger = logging.getLogger(__name__)

#: format name -> exporter function
EXPORTERS: Registry[Callable[..., dict]] = Registry("export format")

_UNSAFE = re.compile(r"[^A-Za-z0-9_.\-]+")


def register_exporter(name: str):
    """Decorator registering an exporter under ``name``."""
    return EXPORTERS.register(name)


#: format -> (module, function) of the exporters that live in their own modules
_PLUGINS = {
    "webdataset": ("datakit.store.webdataset", "export_webdataset"),
    "huggingface": ("datakit.store.huggingface", "export_huggingface"),
    "croissant": ("datakit.store.croissant", "export_croissant"),
}


def _load_plugins() -> None:
    """Register exporters that live in their own modules (imported lazily: they may pull in torch)."""
    import importlib

    for name, (module, attr) in _PLUGINS.items():
        if name in EXPORTERS:
            continue
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name != module:
                raise
            continue
        fn = getattr(mod, attr, None)
        if fn is not None and name not in EXPORTERS:
            EXPORTERS.register(name)(fn)


def export_formats() -> list[str]:
    """Names of the available export formats."""
    _load_plugins()
    return EXPORTERS.names()


def export_dataset(dataset: Any, fmt: str, out: str | os.PathLike, *, split: str | None = None,
                   progress: Callable[[int], None] | None = None, **options: Any) -> dict:
    """Export ``dataset`` (a Dataset or a path) in format ``fmt`` to ``out``.

    Parameters
    ----------
    dataset : Dataset or path
    fmt : str
        A name in :data:`EXPORTERS` (``imagefolder``, ``idx``, ...).
    out : path
        Output directory (created), or a file for formats that write one (``croissant``).
    split : str, optional
        Export only this split (default: every split).
    progress : callable, optional
        Called with the number of images just written.

    Returns
    -------
    dict
        Summary: ``format``, ``out``, ``images``, ``splits`` (images per split), ...

    Raises
    ------
    DatakitError
        Unknown format or split, or a dataset the format cannot hold.
    """
    from datakit.store.dataset import Dataset, open_dataset

    _load_plugins()
    exporter = EXPORTERS.get(fmt)
    ds = dataset if isinstance(dataset, Dataset) else open_dataset(dataset)
    if split is not None and split not in ds.splits:
        raise DatakitError(f"Unknown split {split!r} in {ds.root}. Valid values are {{{', '.join(ds.splits)}}}.")
    out = Path(out)
    inside = out.resolve() == ds.root.resolve() or ds.root.resolve() in out.resolve().parents
    if inside and not getattr(exporter, "may_write_inside_dataset", False):
        raise DatakitError(f"--out {out} is inside the dataset {ds.root}; export somewhere else.")
    if not getattr(exporter, "out_may_be_file", False):
        if out.exists() and not out.is_dir():
            raise DatakitError(f"--out {out} is a file; format {fmt!r} writes a directory.")
        out.mkdir(parents=True, exist_ok=True)
    return exporter(ds, out, split=split, progress=progress, **options)


def _split_names(ds, split: str | None) -> list[str]:
    return [split] if split is not None else list(ds.splits)


def _safe(name: str) -> str:
    safe = _UNSAFE.sub("_", name).strip("._") or "_"
    return safe


@register_exporter("imagefolder")
def export_imagefolder(ds, out: Path, *, split: str | None = None, progress: Callable[[int], None] | None = None,
                       link: bool = False) -> dict:
    """``<out>/<split>/<class>/<id>.png`` (torchvision ImageFolder), plus ``classes.csv``.

    Parameters
    ----------
    link : bool
        Hard-link the stored images instead of copying them (same file system only).

    Notes
    -----
    Class folder names are the class ids with characters other than letters,
    digits, ``_ . -`` replaced by ``_``; ``classes.csv`` maps them back.
    Unlabeled images go to ``_unlabeled``. Re-running skips files already there.
    """
    m = ds.manifest
    counts = {}
    folder_of = {c: _safe(c) for c in ds.classes}
    if len(set(folder_of.values())) != len(folder_of):
        raise DatakitError("Two class ids map to the same folder name after making them file-system safe; "
                           "rename the classes in the recipe's label_map.")
    for s in _split_names(ds, split):
        frame = m[m["split"] == s]
        counts[s] = int(len(frame))
        for image_id, rel, label in zip(frame["id"], frame["path"], frame["label"]):
            cls = folder_of.get(label, "_unlabeled") if isinstance(label, str) else "_unlabeled"
            target = out / s / cls / f"{image_id}{Path(rel).suffix}"
            if not target.exists():
                target.parent.mkdir(parents=True, exist_ok=True)
                src = ds.root / rel
                if link:
                    tmp = target.with_name(f".{target.name}.tmp")
                    tmp.unlink(missing_ok=True)
                    os.link(src, tmp)
                    os.replace(tmp, target)
                else:
                    tmp = target.with_name(f".{target.name}.tmp")
                    shutil.copyfile(src, tmp)
                    os.replace(tmp, target)
            if progress:
                progress(1)
    lines = ["label,folder,name"]
    names = dict(zip(ds.categories["label"].astype(str), ds.categories["name"].astype(str))) \
        if "name" in ds.categories else {}
    for c in ds.classes:
        name = names.get(c, c).replace('"', "'")
        lines.append(f'"{c}",{folder_of[c]},"{name}"')
    atomic_write_text(out / "classes.csv", "\n".join(lines) + "\n")
    return {"format": "imagefolder", "out": str(out), "images": sum(counts.values()), "splits": counts,
            "classes": len(ds.classes)}


@register_exporter("idx")
def export_idx(ds, out: Path, *, split: str | None = None, progress: Callable[[int], None] | None = None,
               size: tuple[int, int] | None = None) -> dict:
    """Gzipped IDX files per split (MNIST layout), plus ``classes.txt``.

    Parameters
    ----------
    size : (height, width), optional
        Resize images to this size first (needed when sizes differ).

    Raises
    ------
    DatakitError
        Images of different sizes (without ``size``), unlabeled images, or more
        than 256 classes (IDX label files hold uint8 here).
    """
    from datakit.sources.idx import write_idx

    if not ds.labeled:
        raise DatakitError(f"{ds.root} has no labels; the idx format needs a label per image.")
    if len(ds.classes) > 256:
        raise DatakitError(f"{len(ds.classes)} classes do not fit IDX uint8 labels (at most 256).")
    counts, files = {}, []
    mode = None
    if "width" in ds.manifest:
        # color datasets keep RGB (N, H, W, 3); grayscale stays (N, H, W)
        with_color = False
        first = ds.manifest["path"].iloc[0] if len(ds.manifest) else None
        if first is not None:
            from PIL import Image

            with Image.open(ds.root / first) as im:
                with_color = im.mode not in ("L", "1", "I;16", "I")
        mode = "RGB" if with_color else "L"
    for s in _split_names(ds, split):
        try:
            images, targets = ds.load_arrays(s, size=size, mode=mode)
        except DatakitError as exc:
            raise DatakitError(f"{exc} (datakit export --format idx: resize with --size HxW)") from None
        if (targets < 0).any():
            raise DatakitError(f"split {s!r} has {(targets < 0).sum()} unlabeled images; idx needs labels.")
        nd = images.ndim
        img_path = out / f"{s}-images-idx{nd}-ubyte.gz"
        lab_path = out / f"{s}-labels-idx1-ubyte.gz"
        write_idx(img_path, images)
        write_idx(lab_path, targets.astype(np.uint8))
        counts[s] = int(len(targets))
        files += [img_path.name, lab_path.name]
        if progress:
            progress(len(targets))
    atomic_write_text(out / "classes.txt", "\n".join(ds.classes) + "\n")
    atomic_write_json(out / "export.json", {"format": "idx", "dataset": ds.name, "classes": ds.classes,
                                            "splits": counts, "files": files, "checksum": ds.checksum})
    return {"format": "idx", "out": str(out), "images": sum(counts.values()), "splits": counts, "files": files,
            "classes": len(ds.classes)}
