"""Open a dataset directory: manifest as a DataFrame, torch views per split."""
from __future__ import annotations

import hashlib
import json
import os
from functools import cached_property
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
import pandas as pd
from PIL import Image

from datakit.errors import DatakitError

__all__ = ["Dataset", "SplitDataset", "open_dataset", "CATEGORY_COLUMNS"]

#: Columns of ``categories.csv``; ``label`` is the class id used in the manifest.
CATEGORY_COLUMNS = ["label", "name", "wnid", "lemmas", "gloss", "hypernym_path", "depth", "lexname"]


class SplitDataset:
    """A ``torch.utils.data.Dataset`` over one split of a datakit dataset.

    Items are ``(image, target)``: by default a float tensor of shape (C, H, W)
    in [0, 1] and an ``int`` class index. ``classes`` and ``class_to_idx``
    follow torchvision's ``ImageFolder``.
    """

    def __init__(self, dataset: "Dataset", split: str | None, transform: Callable | None = None,
                 target_transform: Callable | None = None) -> None:
        frame = dataset.manifest
        if split is not None:
            frame = frame[frame["split"] == split]
        self.frame = frame.reset_index(drop=True)
        self.root = dataset.root
        self.split = split
        self.classes = dataset.classes
        self.class_to_idx = dataset.class_to_idx
        self.transform = transform
        self.target_transform = target_transform
        # -1 for unlabeled images (label missing)
        self.targets = [self.class_to_idx.get(l, -1) if isinstance(l, str) else -1
                        for l in self.frame["label"]] if len(self.frame) else []

    def __len__(self) -> int:
        return len(self.frame)

    def load_image(self, index: int) -> Image.Image:
        with Image.open(self.root / self.frame.at[index, "path"]) as im:
            im.load()
            return im

    def __getitem__(self, index: int):
        import torch

        image = self.load_image(index)
        target = self.targets[index]
        if self.transform is not None:
            image = self.transform(image)
        else:
            array = np.array(image)  # a writable copy: torch.from_numpy warns on read-only arrays
            if array.ndim == 2:
                array = array[None]
            else:
                array = array.transpose(2, 0, 1)
            image = torch.from_numpy(np.ascontiguousarray(array)).float().div_(255.0)
        if self.target_transform is not None:
            target = self.target_transform(target)
        return image, target

    def __repr__(self) -> str:
        return f"SplitDataset(split={self.split!r}, n={len(self)}, classes={len(self.classes)})"


class Dataset:
    """A dataset directory written by ``datakit build``.

    Attributes
    ----------
    root : Path
    manifest : pandas.DataFrame
        One row per kept image (columns in :data:`datakit.store.MANIFEST_COLUMNS`).
    rejected : pandas.DataFrame
    categories : pandas.DataFrame
    classes : list of str
        Class ids (the manifest's ``label``) in ``categories.csv`` order.
    class_to_idx : dict
    """

    def __init__(self, root: str | os.PathLike, *, columns: Sequence[str] | None = None) -> None:
        self.root = Path(root)
        #: Manifest columns this object reads (None: all); see :meth:`select_columns`.
        self.columns = None if columns is None else tuple(dict.fromkeys(("label", "split", *columns)))
        if not (self.root / "manifest.parquet").exists():
            raise DatakitError(
                f"{self.root} is not a datakit dataset (no manifest.parquet). "
                "Build one with `datakit build RECIPE.toml --out DIR`."
            )

    @cached_property
    def info(self) -> dict:
        path = self.root / "datakit.json"
        return json.loads(path.read_text()) if path.exists() else {}

    @property
    def name(self) -> str:
        return self.info.get("name") or self.root.name

    @cached_property
    def manifest(self) -> pd.DataFrame:
        if self.columns is None:
            return pd.read_parquet(self.root / "manifest.parquet")
        return self.read_columns(self.columns)

    def read_columns(self, columns: Sequence[str], categories: Sequence[str] = ()) -> pd.DataFrame:
        """These manifest columns only, read from the file (not cached); columns the file lacks are left out.

        ``categories``: string columns to read as pandas categoricals, decoded
        from the file's dictionary without a string per row (``split``,
        ``source``, ``label``: a few distinct values each).
        """
        import pyarrow.parquet as pq

        path = self.root / "manifest.parquet"
        have = set(pq.read_schema(path).names)
        wanted = [c for c in dict.fromkeys(columns) if c in have]
        # one column chunk at a time, not the whole file buffered first: at a million images the read's
        # peak was 650 MB for 190 MB of columns with pyarrow's defaults, 480 MB this way (and no slower)
        if not categories:
            return pd.read_parquet(path, columns=wanted, pre_buffer=False, use_threads=False)
        import pyarrow as pa

        table = pq.read_table(path, columns=wanted, pre_buffer=False, use_threads=False,
                              read_dictionary=[c for c in categories if c in wanted])
        strings = pd.StringDtype("pyarrow")
        return table.to_pandas(types_mapper={pa.string(): strings, pa.large_string(): strings}.get)

    def column_values(self, name: str, positions: Sequence[int] | np.ndarray) -> np.ndarray:
        """One manifest column's values at these row positions (object array, in the order given).

        From the loaded manifest when it holds the column; otherwise read from
        the file one row group at a time, only the row groups that hold the
        positions, so that a view without the column (e.g. ``path`` at a
        million images: about 80 MB) never loads it whole.

        Raises
        ------
        KeyError
            The manifest has no such column.
        IndexError
            A position is outside the manifest.
        """
        positions = np.asarray(positions, dtype=np.int64).ravel()
        if "manifest" in vars(self) and name in self.manifest.columns:
            return self.manifest[name].iloc[positions].to_numpy(dtype=object)
        import pyarrow.parquet as pq

        pf = pq.ParquetFile(self.root / "manifest.parquet")
        if name not in pf.schema_arrow.names:
            raise KeyError(f"the manifest of {self.root} has no column {name!r}")
        meta = pf.metadata
        starts = np.cumsum([0] + [meta.row_group(i).num_rows for i in range(meta.num_row_groups)])
        if len(positions) and (positions.min() < 0 or positions.max() >= starts[-1]):
            raise IndexError(f"row positions must be in 0..{starts[-1] - 1}")
        out = np.empty(len(positions), dtype=object)
        group = np.searchsorted(starts, positions, side="right") - 1
        order = np.argsort(group, kind="stable")
        cuts = np.flatnonzero(np.r_[True, group[order][1:] != group[order][:-1], True]) if len(order) else []
        for lo, hi in zip(cuts[:-1], cuts[1:]):
            take = order[lo:hi]
            g = int(group[take[0]])
            column = pf.read_row_group(g, columns=[name]).column(0)
            out[take] = column.take(positions[take] - starts[g]).to_numpy(zero_copy_only=False)
        return out

    def select_columns(self, columns: Sequence[str] | None) -> "Dataset":
        """A fresh view of this dataset whose ``manifest`` holds only ``columns`` (plus ``label`` and ``split``).

        The audits read what they need this way: at a million images the whole
        manifest is about 1 GB, its ``label`` and ``split`` columns a few MB.
        ``columns=None`` gives a fresh view of every column. Nothing is shared
        with this object except the directory, so the view's memory is freed
        with it.
        """
        return type(self)(self.root, columns=columns)

    @cached_property
    def rejected(self) -> pd.DataFrame:
        path = self.root / "rejected.parquet"
        if path.exists():
            return pd.read_parquet(path)
        from datakit.store.manifest import empty_rejected

        return empty_rejected()

    @cached_property
    def categories(self) -> pd.DataFrame:
        path = self.root / "categories.csv"
        if path.exists():
            return pd.read_csv(path, dtype={"label": str, "wnid": str})
        labels = sorted(self.manifest["label"].dropna().unique())
        return pd.DataFrame({"label": labels, "name": labels})

    @cached_property
    def classes(self) -> list[str]:
        present = set(self.manifest["label"].dropna())
        return [l for l in self.categories["label"].astype(str) if l in present] or sorted(present)

    @cached_property
    def class_to_idx(self) -> dict[str, int]:
        return {c: i for i, c in enumerate(self.classes)}

    @property
    def splits(self) -> list[str]:
        order = {"train": 0, "val": 1, "test": 2}
        return sorted(self.manifest["split"].dropna().unique(), key=lambda s: (order.get(s, 9), s))

    @property
    def labeled(self) -> bool:
        return bool(self.manifest["label"].notna().any())

    @cached_property
    def checksum(self) -> str:
        """sha256 over the manifest's ids, labels and splits (identifies the data)."""
        from datakit.store.manifest import manifest_checksum

        return manifest_checksum(self.root / "manifest.parquet")  # streamed: memory does not grow with n

    def split(self, name: str | None, transform: Callable | None = None,
              target_transform: Callable | None = None) -> SplitDataset:
        """A torch ``Dataset`` over split ``name`` (``None``: all images)."""
        if name is not None and name not in self.splits:
            raise DatakitError(f"Unknown split {name!r} in {self.root}. Valid values are {{{', '.join(self.splits)}}}.")
        return SplitDataset(self, name, transform, target_transform)

    def load_arrays(self, split: str | None = None, size: tuple[int, int] | None = None,
                    mode: str | None = None, mmap: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """All images of a split as one uint8 array, with integer targets.

        Parameters
        ----------
        split : str or None
            Split name, or None for every image.
        size : (height, width), optional
            Resize every image to this size (bilinear). Needed when sizes differ.
        mode : {"L", "RGB"}, optional
            Convert every image to this mode.
        mmap : bool, default False
            Return the images as a read-only memory map of the cache file
            (pages are read as they are used; nothing is held twice). Falls
            back to an array in memory when the cache cannot be written.

        Returns
        -------
        images : ndarray, shape (N, H, W) or (N, H, W, 3), uint8
        targets : ndarray, shape (N,), int64 (-1 for unlabeled images)

        The result is cached under ``<root>/.cache`` (two ``.npy`` files) keyed by the manifest checksum.
        """
        frame = self.manifest if split is None else self.manifest[self.manifest["split"] == split]
        key = hashlib.sha256(f"{self.checksum}|{split}|{size}|{mode}".encode()).hexdigest()[:16]
        cache_images = self.root / ".cache" / f"arrays-{key}-images.npy"
        cache_targets = self.root / ".cache" / f"arrays-{key}-targets.npy"
        if cache_images.exists() and cache_targets.exists():
            # plain .npy files: read straight into one array, or mapped (an .npz was read in pieces, then joined)
            return _load_npy(cache_images, mmap), np.load(cache_targets)
        paths = frame["path"] if "path" in frame.columns else self.column_values(
            "path", np.flatnonzero((self.manifest["split"] == split).fillna(False).to_numpy(dtype=bool))
            if split is not None
            else np.arange(len(frame)))
        targets = np.array([self.class_to_idx.get(l, -1) if isinstance(l, str) else -1 for l in frame["label"]],
                           dtype=np.int64)
        from datakit.store.atomic import atomic_write

        if mmap and len(frame):
            # decoded image by image straight into the cache file, then mapped: never held in memory
            try:
                with atomic_write(cache_targets, "wb") as fh:
                    np.save(fh, targets)
                with atomic_write(cache_images, "wb") as fh:  # written last: its presence marks a complete cache
                    self._stream_images(paths, size, mode, fh)
                return _load_npy(cache_images, True), targets
            except OSError:  # read-only dataset: decoded into memory below
                pass
        # decoded straight into one array (a list of small arrays, then a stack, held the images twice over)
        array = None
        shapes: set = set()
        for k, image in enumerate(self._decoded(paths, size, mode)):
            shapes.add(image.shape)
            if len(shapes) > 1:
                continue  # only the shapes still matter, for the error below
            if array is None:
                array = np.empty((len(frame), *image.shape), dtype=image.dtype)
            array[k] = image
        self._check_shapes(shapes)
        if array is None:
            array = np.zeros((0, 0, 0), np.uint8)
        try:
            with atomic_write(cache_targets, "wb") as fh:
                np.save(fh, targets)
            with atomic_write(cache_images, "wb") as fh:  # written last: its presence marks a complete cache
                np.save(fh, array)
        except OSError:  # read-only dataset: caching is an optimisation only
            pass
        return array, targets

    def _decoded(self, paths, size: tuple[int, int] | None, mode: str | None) -> Iterator[np.ndarray]:
        for rel in paths:
            with Image.open(self.root / rel) as im:
                if mode is not None and im.mode != mode:
                    im = im.convert(mode)
                if size is not None and im.size != (size[1], size[0]):
                    im = im.resize((size[1], size[0]), Image.BILINEAR)
                yield np.asarray(im)

    def _check_shapes(self, shapes: set) -> None:
        if len(shapes) > 1:
            raise DatakitError(
                f"Images in {self.root} have different shapes ({len(shapes)} kinds, e.g. "
                f"{sorted(shapes)[:3]}); pass size=(H, W) and mode= to load them as one array."
            )

    def _stream_images(self, paths, size: tuple[int, int] | None, mode: str | None, fh) -> None:
        """Write the decoded images to ``fh`` as one ``.npy`` array, image by image (header first)."""
        shapes: set = set()
        n = len(paths)
        for image in self._decoded(paths, size, mode):
            if not shapes:
                header = np.lib.format.header_data_from_array_1_0(image[None])
                header["shape"] = (n, *image.shape)
                np.lib.format.write_array_header_1_0(fh, header)
            shapes.add(image.shape)
            if len(shapes) == 1:
                fh.write(np.ascontiguousarray(image).tobytes())
        self._check_shapes(shapes)

    def __repr__(self) -> str:
        return f"Dataset({str(self.root)!r}, images={len(self.manifest)}, classes={len(self.classes)})"


def _load_npy(path: Path, mmap: bool) -> np.ndarray:
    """An ``.npy`` file, memory-mapped read-only when asked (an empty array cannot be mapped: read)."""
    if mmap:
        try:
            return np.load(path, mmap_mode="r")
        except ValueError:
            pass
    return np.load(path)


def open_dataset(path: str | os.PathLike) -> Dataset:
    """Open a dataset directory.

    Examples
    --------
    >>> ds = open_dataset("demo/digits")                     # doctest: +SKIP
    >>> ds.manifest.groupby("split").size()                  # doctest: +SKIP
    >>> train = ds.split("train"); image, target = train[0]  # doctest: +SKIP
    """
    return Dataset(path)
