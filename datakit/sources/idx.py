"""MNIST-format IDX files (MNIST, Fashion-MNIST, EMNIST, KMNIST), gzipped or raw.

The IDX format (http://yann.lecun.com/exdb/mnist/): a 4-byte magic number
``0x00 0x00 <dtype> <ndim>``, then ``ndim`` big-endian uint32 sizes, then the
values in C order, big-endian.
"""
from __future__ import annotations

import gzip
import logging
import os
import struct
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from datakit.errors import DatakitError
from datakit.sources._paths import check_choice, check_options, resolve_path
from datakit.sources.base import Source, SourceItem, register_source

__all__ = ["IdxSource", "read_idx", "read_idx_header", "write_idx", "find_idx_files"]

logger = logging.getLogger(__name__)

_CODE_TO_DTYPE = {0x08: np.dtype("u1"), 0x09: np.dtype("i1"), 0x0B: np.dtype(">i2"),
                  0x0C: np.dtype(">i4"), 0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}
_KIND_TO_CODE = {("u", 1): 0x08, ("i", 1): 0x09, ("i", 2): 0x0B, ("i", 4): 0x0C, ("f", 4): 0x0D, ("f", 8): 0x0E}

_SPLIT_PREFIX = {"train": "train", "test": "t10k"}


def _open(path: str | os.PathLike):
    """Open raw or gzip (decided by the gzip magic bytes, not the name)."""
    with open(path, "rb") as fh:
        head = fh.read(2)
    return gzip.open(path, "rb") if head == b"\x1f\x8b" else open(path, "rb")


def _parse_header(head: bytes, where: str) -> tuple[np.dtype, int]:
    if len(head) < 4 or head[0] != 0 or head[1] != 0 or head[2] not in _CODE_TO_DTYPE or not 1 <= head[3] <= 8:
        raise DatakitError(f"{where} is not an IDX file: magic bytes {head[:4]!r} (expected 00 00 <type> <ndim>, "
                           "e.g. 0x00000803 for images, 0x00000801 for labels). Is it an HTML page or a "
                           "Git-LFS pointer instead of the data?")
    dtype = _CODE_TO_DTYPE[head[2]]
    ndim = head[3]
    return dtype, ndim


def read_idx_header(path: str | os.PathLike) -> tuple[np.dtype, tuple[int, ...]]:
    """The dtype and shape stored in an IDX file's header (reads only the header).

    Raises
    ------
    DatakitError
        When the file is not an IDX file.
    """
    where = os.fspath(path)
    try:
        with _open(path) as fh:
            head = fh.read(4)
            dtype, ndim = _parse_header(head, where)
            dims = fh.read(4 * ndim)
    except (OSError, EOFError) as exc:
        raise DatakitError(f"cannot read IDX file {where}: {exc}") from None
    if len(dims) != 4 * ndim:
        raise DatakitError(f"{where}: IDX header is truncated")
    return dtype, struct.unpack(f">{ndim}I", dims)


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read a whole IDX file (raw or gzip) into an array.

    Parameters
    ----------
    path : path
        The IDX file (``*-idx3-ubyte`` for images, ``*-idx1-ubyte`` for labels),
        optionally gzipped (detected from the content).

    Returns
    -------
    ndarray
        Shape from the header (e.g. (N, 28, 28) uint8 images or (N,) uint8
        labels), native byte order.

    Raises
    ------
    DatakitError
        When the magic number is wrong or the file is shorter or longer than its
        header says.
    """
    where = os.fspath(path)
    try:
        with _open(path) as fh:
            data = fh.read()
    except (OSError, EOFError) as exc:
        raise DatakitError(f"cannot read IDX file {where}: {exc} (is the .gz file complete?)") from None
    dtype, ndim = _parse_header(data[:4], where)
    if len(data) < 4 + 4 * ndim:
        raise DatakitError(f"{where}: IDX header is truncated")
    shape = struct.unpack(f">{ndim}I", data[4:4 + 4 * ndim])
    offset = 4 + 4 * ndim
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(data) - offset != expected:
        raise DatakitError(f"{where}: header says shape {shape} ({expected} bytes of {dtype}) but the file holds "
                           f"{len(data) - offset} bytes of data; the file is truncated or corrupt")
    arr = np.frombuffer(data, dtype=dtype, count=expected // dtype.itemsize, offset=offset).reshape(shape)
    return arr.astype(dtype.newbyteorder("="), copy=True)


def write_idx(path: str | os.PathLike, array: np.ndarray) -> None:
    """Write ``array`` as an IDX file, atomically; gzip when the name ends in ``.gz``.

    Parameters
    ----------
    path : path
        Target file, e.g. ``train-images-idx3-ubyte.gz``.
    array : ndarray
        uint8, int8, int16, int32, float32 or float64, 1 to 8 dimensions
        (images (N, H, W) uint8, labels (N,) uint8). int64 labels whose values
        fit in 0..255 are written as uint8.

    Raises
    ------
    TypeError
        For a dtype IDX cannot hold.
    """
    arr = np.asarray(array)
    if arr.dtype.kind in "iu" and arr.dtype.itemsize > 1 and (arr.dtype.kind, arr.dtype.itemsize) not in _KIND_TO_CODE:
        if arr.size == 0 or (arr.min() >= 0 and arr.max() <= 255):
            arr = arr.astype(np.uint8)
        elif arr.min() >= -(2 ** 31) and arr.max() < 2 ** 31:
            arr = arr.astype(np.int32)
    elif arr.dtype == np.uint16 or arr.dtype == np.uint32:
        arr = arr.astype(np.int32)
    key = (arr.dtype.kind, arr.dtype.itemsize)
    if key not in _KIND_TO_CODE:
        raise TypeError(f"IDX cannot store dtype {arr.dtype}; valid dtypes are uint8, int8, int16, int32, "
                        "float32, float64")
    if not 1 <= arr.ndim <= 8:
        raise ValueError(f"IDX arrays have 1 to 8 dimensions, got shape {arr.shape}")
    from datakit.store.atomic import atomic_write

    header = bytes([0, 0, _KIND_TO_CODE[key], arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape)
    body = np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder(">")).tobytes()
    with atomic_write(path, "wb") as fh:
        if os.fspath(path).endswith(".gz"):
            with gzip.GzipFile(fileobj=fh, mode="wb", mtime=0, filename="") as gz:
                gz.write(header)
                gz.write(body)
        else:
            fh.write(header)
            fh.write(body)


def find_idx_files(root: Path, split: str) -> tuple[Path | None, Path | None]:
    """The images and labels files of ``split`` ("train"/"test") under ``root``.

    Accepts the usual spellings: ``train-images-idx3-ubyte``,
    ``train-images.idx3-ubyte``, with or without ``.gz``; ``t10k-`` or ``test-``
    for the test split.
    """
    prefixes = ("t10k", "test") if split == "test" else ("train",)
    found: dict[str, Path | None] = {}
    for what, nd in (("images", 3), ("labels", 1)):
        found[what] = None
        for prefix in prefixes:
            for sep in ("-", "."):
                for ext in ("", ".gz"):
                    c = root / f"{prefix}-{what}{sep}idx{nd}-ubyte{ext}"
                    if c.is_file() and found[what] is None:
                        found[what] = c
    return found["images"], found["labels"]


@register_source("idx")
class IdxSource(Source):
    """Images (and labels) from MNIST-format IDX files.

    Options
    -------
    images, labels : path
        The IDX files (labels optional: without them items are unlabeled).
    root : path
        Instead of ``images``/``labels``: a folder holding the standard names
        (``train-images-idx3-ubyte[.gz]``, ``t10k-labels-idx1-ubyte[.gz]``, ...).
    split : {"train", "test", "all"}, default "train"
        With ``root``: which files. With ``images`` it only names the items' split
        (default: guessed from the file name, ``t10k``/``test`` -> "test").
    label_names : list of str
        Names for label values 0..K-1 (e.g. Fashion-MNIST's "T-shirt/top", ...);
        default the number as a string.
    transpose : bool, default False
        Transpose each image (EMNIST stores images transposed).

    Items carry ``array`` (H, W) uint8 and ``source_ref = "<file name>#<index>"``.
    """

    OPTIONS = ("images", "labels", "root", "split", "label_names", "transpose")

    def __init__(self, name: str | None = None, data_root: str | os.PathLike | None = None, **options: Any) -> None:
        super().__init__(name=name, **options)
        check_options(self.kind, name, options, self.OPTIONS)
        self.data_root = data_root
        if ("root" in options) == ("images" in options):
            raise DatakitError(f"source {self.name!r} (kind 'idx'): give either 'root' (a folder with the standard "
                               "file names) or 'images' (and 'labels'), not both or neither")
        if "labels" in options and "images" not in options:
            raise DatakitError(f"source {self.name!r} (kind 'idx'): 'labels' needs 'images'")
        self.split = options.get("split")
        if self.split is not None:
            check_choice(self.kind, name, "split", self.split, ["train", "test", "all"])
        if "images" in options and self.split == "all":
            raise DatakitError(f"source {self.name!r} (kind 'idx'): split = 'all' needs 'root', not 'images'")
        names = options.get("label_names")
        if names is not None and (isinstance(names, str) or not all(isinstance(n, str) for n in names)):
            raise DatakitError(f"source {self.name!r} (kind 'idx'): label_names must be a list of strings, got {names!r}")
        self.label_names: list[str] | None = list(names) if names is not None else None
        self.transpose = bool(options.get("transpose", False))
        self._parts: list[tuple[str | None, Path, Path | None]] | None = None

    # -- files -------------------------------------------------------------------
    def parts(self) -> list[tuple[str | None, Path, Path | None]]:
        """``[(split, images file, labels file or None), ...]``, resolved and checked to exist."""
        if self._parts is not None:
            return self._parts
        o = self.options
        if "images" in o:
            images = resolve_path(o["images"], option="images", kind=self.kind, name=self.name,
                                  data_root=self.data_root)
            labels = None
            if o.get("labels") is not None:
                labels = resolve_path(o["labels"], option="labels", kind=self.kind, name=self.name,
                                      data_root=self.data_root)
            split = self.split
            if split is None:
                low = images.name.lower()
                split = "test" if (low.startswith("t10k") or "test" in low) else ("train" if "train" in low else None)
            parts = [(split, images, labels)]
        else:
            root = resolve_path(o["root"], option="root", kind=self.kind, name=self.name,
                                data_root=self.data_root, want="dir")
            split = self.split or "train"
            parts = []
            for s in (["train", "test"] if split == "all" else [split]):
                images, labels = find_idx_files(root, s)
                if images is None or labels is None:
                    missing = "images" if images is None else "labels"
                    prefix = _SPLIT_PREFIX[s]
                    nd = 3 if missing == "images" else 1
                    raise DatakitError(
                        f"source {self.name!r} (kind 'idx'): no {s} {missing} file in {root}; expected "
                        f"{prefix}-{missing}-idx{nd}-ubyte.gz (or without .gz). Put the file there, "
                        "or give the paths with the 'images' and 'labels' options.")
                parts.append((s, images, labels))
        self._parts = parts
        return parts

    def validate(self) -> None:
        """Check that the files exist and have IDX headers whose counts agree (reads headers only)."""
        for _, images, labels in self.parts():
            _, ishape = read_idx_header(images)
            if len(ishape) < 2:
                raise DatakitError(f"source {self.name!r} (kind 'idx'): {images} holds shape {ishape}, not images")
            if labels is not None:
                _, lshape = read_idx_header(labels)
                if lshape[0] != ishape[0]:
                    raise DatakitError(f"source {self.name!r} (kind 'idx'): {images} has {ishape[0]} images but {labels} "
                                       f"has {lshape[0]} labels")

    def __len__(self) -> int:
        return sum(read_idx_header(images)[1][0] for _, images, _ in self.parts())

    def _label_of(self, value: int) -> str:
        if self.label_names is None:
            return str(value)
        if not 0 <= value < len(self.label_names):
            raise DatakitError(f"source {self.name!r} (kind 'idx'): label value {value} has no entry in label_names "
                               f"({len(self.label_names)} names)")
        return self.label_names[value]

    def labels(self) -> list[str]:
        out: set[str] = set()
        for _, _, labels in self.parts():
            if labels is not None:
                out.update(self._label_of(int(v)) for v in np.unique(read_idx(labels)))
        return sorted(out)

    def iter_items(self, chunk: int = 4096) -> Iterator[SourceItem]:
        """Items in file order; images are streamed in chunks, never all decoded at once."""
        for split, images, labels in self.parts():
            lab = read_idx(labels).astype(np.int64) if labels is not None else None
            dtype, shape = read_idx_header(images)
            n, item_shape = shape[0], shape[1:]
            if lab is not None and len(lab) != n:
                raise DatakitError(f"source {self.name!r} (kind 'idx'): {images} has {n} images but {labels} has "
                                   f"{len(lab)} labels")
            item_size = int(np.prod(item_shape)) * dtype.itemsize
            fname = images.name
            with _open(images) as fh:
                fh.read(4 + 4 * len(shape))
                i = 0
                while i < n:
                    k = min(chunk, n - i)
                    buf = fh.read(k * item_size)
                    if len(buf) != k * item_size:
                        raise DatakitError(f"{images}: file ends after {i + len(buf) // item_size} of {n} images; "
                                           "it is truncated")
                    block = np.frombuffer(buf, dtype=dtype).reshape((k, *item_shape)).astype(dtype.newbyteorder("="))
                    for j in range(k):
                        arr = block[j].T.copy() if self.transpose else block[j].copy()
                        yield SourceItem(source_ref=f"{fname}#{i + j}",
                                         label=self._label_of(int(lab[i + j])) if lab is not None else None,
                                         split=split, array=arr, meta={"index": i + j})
                    i += k
