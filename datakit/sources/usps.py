"""The USPS handwritten digits (16x16 grayscale) in their three common layouts.

* HDF5 (``usps.h5``, Kaggle "bistaumanga" layout): groups ``train`` and ``test``,
  each with ``data`` (N, 256) float in [0, 1] and ``target`` (N,) ints 0-9.
* LIBSVM, bzip2 or plain (``usps.bz2`` train, ``usps.t.bz2`` test; what
  torchvision's ``USPS`` downloads): ``label idx:value ...`` with labels 1-10
  (= digit + 1) and values in [-1, 1].
* ESL text (``zip.train``, ``zip.test``): ``digit v1 ... v256`` with values in
  [-1, 1]. Some copies carry stray extra fields at the end of a line; the first
  257 fields are used and the quirk is logged.
"""
from __future__ import annotations

import bz2
import gzip
import logging
import os
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from datakit.errors import DatakitError
from datakit.sources._paths import check_choice, check_options, resolve_path
from datakit.sources.base import Source, SourceItem, register_source

__all__ = ["UspsSource", "read_usps", "detect_usps_format"]

logger = logging.getLogger(__name__)

_N_PIXELS = 256


def detect_usps_format(path: str | os.PathLike) -> str:
    """``"h5"``, ``"libsvm"`` or ``"esl"``, decided from the file's content."""
    with open(path, "rb") as fh:
        head = fh.read(8)
    if head.startswith(b"\x89HDF\r\n\x1a\n"):
        return "h5"
    with _open_text(path, head) as fh:
        try:
            text = fh.readline(4096)
        except (UnicodeDecodeError, OSError, EOFError):
            text = ""
    if ":" in text:
        return "libsvm"
    fields = text.split()
    try:
        [float(f) for f in fields]
    except ValueError:
        fields = []
    if len(fields) >= _N_PIXELS + 1:
        return "esl"
    raise DatakitError(f"{path} is not a USPS file: expected HDF5 (usps.h5), LIBSVM ('label idx:value ...', "
                       "optionally bzip2) or ESL text ('digit v1 ... v256')")


def _open_text(path: str | os.PathLike, head: bytes | None = None):
    if head is None:
        with open(path, "rb") as fh:
            head = fh.read(4)
    if head.startswith(b"BZh"):
        return bz2.open(path, "rt")
    if head.startswith(b"\x1f\x8b"):
        return gzip.open(path, "rt")
    return open(path, "rt")


def _read_libsvm(path: Path) -> tuple[np.ndarray, np.ndarray]:
    images, labels = [], []
    with _open_text(path) as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            row = np.zeros(_N_PIXELS, np.float32)  # LIBSVM: absent features are 0
            try:
                head, _, rest = line.strip().partition(" ")
                label = int(float(head))
                pairs = np.array(rest.replace(":", " ").split(), dtype=np.float64).reshape(-1, 2)
                idx = pairs[:, 0].astype(np.int64) - 1
                if idx.size and (idx.min() < 0 or idx.max() >= _N_PIXELS):
                    raise ValueError(f"feature index outside 1..{_N_PIXELS}")
                row[idx] = pairs[:, 1]
            except ValueError as exc:
                raise DatakitError(f"{path}, line {lineno}: not LIBSVM 'label idx:value' data ({exc})") from None
            if not 1 <= label <= 10:
                raise DatakitError(f"{path}, line {lineno}: USPS LIBSVM labels are 1..10 (digit + 1), got {label}")
            images.append(row)
            labels.append(label - 1)
    if not labels:
        raise DatakitError(f"{path} holds no LIBSVM rows")
    return np.stack(images).reshape(-1, 16, 16), np.asarray(labels, np.int64)


def _read_esl(path: Path) -> tuple[np.ndarray, np.ndarray]:
    images, labels = [], []
    with _open_text(path) as fh:
        for lineno, line in enumerate(fh, 1):
            fields = line.split()
            if not fields:
                continue
            if len(fields) < _N_PIXELS + 1:
                raise DatakitError(f"{path}, line {lineno}: {len(fields)} fields, expected a digit and "
                                   f"{_N_PIXELS} values")
            if len(fields) > _N_PIXELS + 1:
                logger.warning("%s, line %d: %d fields; using the first %d (known quirk of some zip.test copies)",
                               path, lineno, len(fields), _N_PIXELS + 1)
            try:
                label = int(float(fields[0]))
                row = np.asarray(fields[1:_N_PIXELS + 1], dtype=np.float32)
            except ValueError as exc:
                raise DatakitError(f"{path}, line {lineno}: not numeric ({exc})") from None
            if not 0 <= label <= 9:
                raise DatakitError(f"{path}, line {lineno}: ESL USPS labels are digits 0..9, got {label}")
            images.append(row)
            labels.append(label)
    if not labels:
        raise DatakitError(f"{path} holds no ESL rows")
    return np.stack(images).reshape(-1, 16, 16), np.asarray(labels, np.int64)


def _read_h5(path: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    import h5py

    try:
        with h5py.File(path, "r") as f:
            if split not in f:
                raise DatakitError(f"{path} has no {split!r} group; it has {sorted(f.keys())}")
            g = f[split]
            if "data" not in g or "target" not in g:
                raise DatakitError(f"{path}: group {split!r} needs 'data' and 'target' datasets, has {sorted(g.keys())}")
            data = np.asarray(g["data"][()], dtype=np.float32)
            target = np.asarray(g["target"][()], dtype=np.int64)
    except OSError as exc:
        raise DatakitError(f"cannot read HDF5 file {path}: {exc}") from None
    if data.ndim == 2 and data.shape[1] == _N_PIXELS:
        data = data.reshape(-1, 16, 16)
    if data.shape[1:] != (16, 16) or len(data) != len(target):
        raise DatakitError(f"{path}/{split}: data shape {data.shape} and target shape {target.shape} are not "
                           "(N, 256) and (N,)")
    return data, target


def read_usps(path: str | os.PathLike, split: str = "train") -> tuple[np.ndarray, np.ndarray, tuple[float, float]]:
    """Read one USPS file.

    Parameters
    ----------
    path : path
        ``usps.h5``, a LIBSVM file (``usps.bz2``, ``usps.t.bz2``) or an ESL text
        file (``zip.train``, ``zip.test``).
    split : {"train", "test"}
        The group to read from an HDF5 file (ignored for the one-split files).

    Returns
    -------
    images : ndarray of float32, shape (N, 16, 16)
    labels : ndarray of int64, shape (N,)
        Digits 0..9.
    value_range : (float, float)
        ``(0, 1)`` for HDF5, ``(-1, 1)`` for LIBSVM and ESL.
    """
    path = Path(path)
    fmt = detect_usps_format(path)
    if fmt == "h5":
        images, labels = _read_h5(path, split)
        return images, labels, (0.0, 1.0)
    if fmt == "libsvm":
        images, labels = _read_libsvm(path)
    else:
        images, labels = _read_esl(path)
    return images, labels, (-1.0, 1.0)


def _guess_split(path: Path) -> str | None:
    low = path.name.lower()
    if ".t." in low or low.endswith(".t") or "test" in low:
        return "test"
    if "train" in low or low in ("usps.bz2", "usps"):
        return "train"
    return None


@register_source("usps")
class UspsSource(Source):
    """USPS digits from ``usps.h5``, the LIBSVM bz2 files or the ESL text files.

    Options
    -------
    path : path
        The file (format detected from its content).
    split : {"train", "test", "all"}
        For ``usps.h5``: which group(s) (default "train"). For the one-split
        files it names the items' split (default guessed from the file name:
        ``usps.t.bz2`` and ``zip.test`` are "test").

    Items carry ``array`` (16, 16) float32 with ``meta["value_range"]`` = (0, 1)
    or (-1, 1), label ``"0"``..``"9"``, ``source_ref = "<file name>[/<split>]#<index>"``.
    """

    OPTIONS = ("path", "split")

    def __init__(self, name: str | None = None, data_root: str | os.PathLike | None = None, **options: Any) -> None:
        super().__init__(name=name, **options)
        check_options(self.kind, name, options, self.OPTIONS)
        if "path" not in options:
            raise DatakitError(f"source {self.name!r} (kind 'usps'): option 'path' is required (usps.h5, usps.t.bz2, "
                               "zip.test, ...)")
        self.data_root = data_root
        self.split = options.get("split")
        if self.split is not None:
            check_choice(self.kind, name, "split", self.split, ["train", "test", "all"])
        self._path: Path | None = None
        self._format: str | None = None
        self._len: int | None = None
        self._text: tuple[np.ndarray, np.ndarray, tuple[float, float]] | None = None

    @property
    def path(self) -> Path:
        if self._path is None:
            self._path = resolve_path(self.options["path"], option="path", kind=self.kind, name=self.name,
                                      data_root=self.data_root)
        return self._path

    def _splits(self) -> list[str | None]:
        if self.format == "h5":
            s = self.split or "train"
            return ["train", "test"] if s == "all" else [s]
        if self.split == "all":
            raise DatakitError(f"source {self.name!r} (kind 'usps'): split = 'all' needs usps.h5; {self.path.name} holds "
                               "one split")
        return [self.split or _guess_split(self.path)]

    @property
    def format(self) -> str:
        if self._format is None:
            self._format = detect_usps_format(self.path)
        return self._format

    def validate(self) -> None:
        """Check the file exists and is a USPS file of a known layout (no full read)."""
        if self.format == "h5":
            import h5py

            with h5py.File(self.path, "r") as f:
                for s in self._splits():
                    if s not in f or "data" not in f[s] or "target" not in f[s]:
                        raise DatakitError(f"source {self.name!r} (kind 'usps'): {self.path} has no {s}/data and "
                                           f"{s}/target datasets")
        else:
            self._splits()

    def __len__(self) -> int:
        if self._len is None:
            if self.format == "h5":
                import h5py

                with h5py.File(self.path, "r") as f:
                    self._len = sum(int(f[s]["target"].shape[0]) for s in self._splits())
            else:  # one-split text files: parse once, keep for iter_items (a few MB)
                self._len = len(self._read(None)[1])
        return self._len

    def _read(self, split: str | None) -> tuple[np.ndarray, np.ndarray, tuple[float, float]]:
        if self.format == "h5":
            return read_usps(self.path, split or "train")
        if self._text is None:
            self._text = read_usps(self.path)
        return self._text

    def labels(self) -> list[str]:
        out: set[str] = set()
        for s in self._splits():
            _, lab, _ = self._read(s)
            out.update(str(int(v)) for v in np.unique(lab))
        return sorted(out)

    def iter_items(self) -> Iterator[SourceItem]:
        for s in self._splits():
            images, labels, value_range = self._read(s)
            ref = f"{self.path.name}/{s}" if self.format == "h5" else self.path.name
            for i in range(len(labels)):
                yield SourceItem(source_ref=f"{ref}#{i}", label=str(int(labels[i])), split=s,
                                 array=images[i].copy(), meta={"index": i, "value_range": value_range})
