"""Private helpers shared by the audits: groups, shared labels, image loading, figures.

A *group* is what the multi-dataset audits compare: one per dataset when
several datasets are given, or one per value of the manifest's ``source``
column when a single dataset mixes sources (e.g. MNIST + USPS + scikit-learn
digits in one directory).
"""
from __future__ import annotations

import io
import logging
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
from PIL import Image

from datakit.store.dataset import Dataset

__all__ = [
    "IMAGE_COLUMNS", "PIXEL_COLUMNS", "image_paths",
    "Group", "make_groups", "shared_labels", "common_mode", "working_size", "load_images",
    "sample_rows", "parse_list", "to_gray_float", "pyplot", "fig_to_png", "image_grid", "GROUP_BY",
]

logger = logging.getLogger(__name__)

#: valid values of the ``group_by`` option
GROUP_BY = ("auto", "dataset", "source")

#: The manifest columns an audit that opens images reads (``register_audit(columns=...)``):
#: the 64-character ``id`` and the ``path`` are the heavy ones; ``source_ref``, ``source_label``,
#: ``query``, ``license`` and the crowd columns are left on disk.
IMAGE_COLUMNS = ("id", "path", "label", "label_name", "split", "source", "width", "height")
#: ... of an audit that opens images only through :func:`load_images` and lists none by id: no ``id``
#: and no ``path`` (the paths of the images it opens are read when it opens them,
#: :meth:`Dataset.column_values`), so a million-image manifest view is about 50 MB, not 200
PIXEL_COLUMNS = ("label", "label_name", "split", "source", "width", "height")

_GRAY_MODES = {"L", "1", "I", "I;16", "F", "LA"}


@dataclass
class Group:
    """Images of one dataset, or of one source within a dataset.

    Attributes
    ----------
    name : str
        Dataset name (``datakit.json``) or source name.
    dataset : Dataset
    frame : DataFrame
        The group's manifest rows; the index is the row position in
        ``dataset.manifest``.
    """

    name: str
    dataset: Dataset
    frame: pd.DataFrame

    @property
    def positions(self) -> np.ndarray:
        return self.frame.index.to_numpy()

    def __len__(self) -> int:
        return len(self.frame)


def _unique_names(names: Sequence[str]) -> list[str]:
    seen: dict[str, int] = {}
    out = []
    for name in names:
        seen[name] = seen.get(name, 0) + 1
        out.append(name if seen[name] == 1 else f"{name}#{seen[name]}")
    return out


def make_groups(datasets: Sequence[Dataset], group_by: str = "auto") -> list[Group]:
    """Split the input into the groups an audit compares.

    Parameters
    ----------
    datasets : sequence of Dataset
    group_by : {"auto", "dataset", "source"}
        ``"dataset"``: one group per dataset. ``"source"``: one group per
        (dataset, source) pair. ``"auto"``: per dataset when there are two or
        more datasets, per source when one dataset has two or more sources.

    Returns
    -------
    list of Group
    """
    if group_by not in GROUP_BY:
        raise ValueError(f"Unknown value {group_by!r} for group_by. Valid values are {{{', '.join(GROUP_BY)}}}.")
    if group_by == "auto":
        group_by = "dataset"
        if len(datasets) == 1:
            sources = datasets[0].manifest["source"].dropna().unique()
            if len(sources) >= 2:
                group_by = "source"
    groups: list[tuple[str, Dataset, pd.DataFrame]] = []
    for ds in datasets:
        m = ds.manifest
        if group_by == "source":
            src = m["source"].fillna("(no source)").astype(str)
            for value in sorted(src.unique()):
                label = value if len(datasets) == 1 else f"{ds.name}/{value}"
                groups.append((label, ds, m[src == value]))
        else:
            groups.append((ds.name, ds, m))
    names = _unique_names([g[0] for g in groups])
    return [Group(name, ds, frame) for name, (_, ds, frame) in zip(names, groups)]


def shared_labels(group: Group, class_map: Mapping[str, Mapping[str, str]] | None = None) -> pd.Series:
    """The group's labels after the user's class correspondence.

    Parameters
    ----------
    group : Group
    class_map : mapping, optional
        ``{group or dataset name: {label: shared label}}``; labels not listed
        keep their own id. E.g. ``{"imagenette": {"n02102040": "dog"}}``.

    Returns
    -------
    Series of str (NaN for unlabeled images), indexed like ``group.frame``.
    """
    col = group.frame["label"]
    mapping: dict[str, str] = {}
    if class_map:
        for key in (group.dataset.name, group.name):
            mapping.update({str(k): str(v) for k, v in (class_map.get(key) or {}).items()})
    # one Python object per distinct label, shared by its rows (``astype(object)`` made a string per row:
    # about 60 MB at a million images)
    codes, uniques = pd.factorize(col)
    missing = col.isna().to_numpy()
    na = col[missing].iloc[0] if missing.any() else np.nan
    values = np.array([mapping.get(l, l) if isinstance(l, str) else l for l in uniques.astype(object)] + [na],
                      dtype=object)
    return pd.Series(values[codes], index=col.index, name=col.name, dtype=object)


def common_mode(groups: Sequence[Group], probe: int = 16) -> str:
    """``"L"`` when every inspected image is grayscale, else ``"RGB"``.

    Up to ``probe`` images per group are opened (evenly spread over the group).
    """
    for g in groups:
        if len(g) == 0:
            continue
        take = np.unique(np.linspace(0, len(g) - 1, num=min(probe, len(g))).astype(int))
        for rel in image_paths(g.dataset, g.positions[take]):
            with Image.open(g.dataset.root / rel) as im:
                if im.mode not in _GRAY_MODES:
                    return "RGB"
    return "L"


def working_size(groups: Sequence[Group], cap: int) -> tuple[tuple[int, int], str | None]:
    """One image size for all groups, and a note when images had to be resized.

    Returns the common (height, width) when every image has it and it is not
    larger than ``cap``; otherwise a square of side ``min(cap, smallest side)``.
    """
    sizes = set()
    for g in groups:
        w, h = g.frame["width"], g.frame["height"]
        if w.isna().any() or h.isna().any():
            for rel in image_paths(g.dataset, g.positions[(w.isna() | h.isna()).to_numpy()]):
                with Image.open(g.dataset.root / rel) as im:
                    sizes.add((im.size[1], im.size[0]))
        sizes.update(zip(h.dropna().astype(int), w.dropna().astype(int)))
    if not sizes:
        return (cap, cap), None
    if len(sizes) == 1:
        (h, w), = sizes
        if max(h, w) <= cap:
            return (h, w), None
    side = int(min(cap, min(min(s) for s in sizes)))
    shown = sorted(sizes)[:4]
    more = "" if len(sizes) <= 4 else f" and {len(sizes) - 4} more"
    note = (f"images have size(s) {', '.join(f'{h}x{w}' for h, w in shown)}{more} (HxW); "
            f"resized to {side}x{side} (bilinear) for this audit")
    return (side, side), note


_MEMO: dict[tuple, np.ndarray] = {}
_MEMO_LIMIT = 4
#: datasets up to this size (at the requested size and mode) are decoded whole, once
_FULL_LOAD_BYTES = 256 * 2**20
#: ... and never datasets larger than this (they are decoded in the pieces asked for)
_MAX_FULL_BYTES = 2 * 2**30


class _Rows:
    """Rows of an array cached on disk (:meth:`Dataset.load_arrays` with ``mmap=True``), read on demand.

    ``rows[positions]`` reads just those rows from the file (one read per run of
    consecutive positions), so the images a chunk asks for are the only ones in
    this process's memory; the rest stay in the OS page cache. (Indexing the
    memory map itself would map every page it touches, and pages around them,
    into the process: a whole 100,000-image dataset by the end of an audit.)
    An array that is not a map (a read-only dataset) is indexed directly.
    """

    def __init__(self, images: np.ndarray) -> None:
        self.shape, self.dtype = images.shape, images.dtype
        self.path = getattr(images, "filename", None)
        self.offset = getattr(images, "offset", 0)
        self.array = None if self.path is not None else images

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, positions) -> np.ndarray:
        if self.array is not None:
            return self.array[positions]
        import os

        positions = np.arange(self.shape[0])[positions] if not isinstance(positions, np.ndarray) else positions
        positions = np.asarray(positions, dtype=np.int64).ravel()
        out = np.empty((len(positions), *self.shape[1:]), dtype=self.dtype)
        if not len(positions):
            return out
        if positions.min() < 0 or positions.max() >= self.shape[0]:
            raise IndexError(f"row positions must be in 0..{self.shape[0] - 1}")
        row = int(np.prod(self.shape[1:], dtype=np.int64)) * self.dtype.itemsize
        order = np.argsort(positions, kind="stable")
        sorted_pos = positions[order]
        flat = out.reshape(len(positions), -1).view(np.uint8)
        breaks = np.flatnonzero(np.diff(sorted_pos) != 1) + 1
        fd = os.open(self.path, os.O_RDONLY)
        try:
            for lo, hi in zip(np.r_[0, breaks].tolist(), np.r_[breaks, len(sorted_pos)].tolist()):
                start, count = int(sorted_pos[lo]), hi - lo
                data = os.pread(fd, count * row, self.offset + start * row)
                if len(data) != count * row:
                    raise OSError(f"short read from {self.path}: the array cache is damaged; delete it")
                flat[order[lo:hi]] = np.frombuffer(data, dtype=np.uint8).reshape(count, row)
        finally:
            os.close(fd)
        return out


def _full_arrays(ds: Dataset, size: tuple[int, int], mode: str) -> "_Rows":
    key = (str(ds.root), ds.checksum, size, mode)
    if key not in _MEMO:
        images, _ = ds.load_arrays(None, size=size, mode=mode, mmap=True)  # on disk, read as asked
        if len(_MEMO) >= _MEMO_LIMIT:
            _MEMO.pop(next(iter(_MEMO)))
        _MEMO[key] = _Rows(images)
        del images
    return _MEMO[key]


def load_images(group: Group, positions: np.ndarray | None, size: tuple[int, int], mode: str) -> np.ndarray:
    """Decode images of a group as one uint8 array.

    Parameters
    ----------
    group : Group
    positions : ndarray of int, optional
        Row positions in ``group.dataset.manifest`` (default: the whole group).
    size : (height, width)
    mode : {"L", "RGB"}

    Returns
    -------
    ndarray, shape (N, H, W) for ``"L"`` or (N, H, W, 3) for ``"RGB"``, uint8

    When the whole dataset fits in 256 MiB at this size and mode, or more than
    a third of it is requested and it fits in 2 GiB, the whole dataset is loaded once through
    :meth:`Dataset.load_arrays` (cached on disk and in memory) and sliced;
    otherwise only the requested files are decoded.
    """
    if positions is None:
        positions = group.positions
    positions = np.asarray(positions, dtype=np.int64)
    ds = group.dataset
    n_total = len(ds.manifest)
    if len(positions) == 0:
        shape = (0, *size) if mode == "L" else (0, *size, 3)
        return np.zeros(shape, np.uint8)
    channels = 1 if mode == "L" else 3
    total_bytes = n_total * size[0] * size[1] * channels
    whole = total_bytes <= _FULL_LOAD_BYTES or (len(positions) * 3 > n_total and total_bytes <= _MAX_FULL_BYTES)
    if whole or (str(ds.root), ds.checksum, size, mode) in _MEMO:
        # decode the whole dataset once (cached on disk and in memory): audits sample it repeatedly
        return _full_arrays(ds, size, mode)[positions]
    out = np.empty((len(positions), *size) if mode == "L" else (len(positions), *size, 3), dtype=np.uint8)
    for k, rel in enumerate(image_paths(ds, positions)):
        with Image.open(ds.root / rel) as im:
            if im.mode != mode:
                im = im.convert(mode)
            if im.size != (size[1], size[0]):
                im = im.resize((size[1], size[0]), Image.BILINEAR)
            out[k] = np.asarray(im)
    return out


def image_paths(ds: Dataset, positions: np.ndarray) -> np.ndarray:
    """Relative paths of the images at these row positions of ``ds.manifest`` (object array).

    From the view's manifest when it holds ``path``, else read for just these
    rows (:meth:`Dataset.column_values`; audits declaring :data:`PIXEL_COLUMNS`).
    """
    if hasattr(ds, "column_values"):
        return ds.column_values("path", positions)
    return ds.manifest["path"].to_numpy(dtype=object)[np.asarray(positions, dtype=np.int64)]


def sample_rows(frame: pd.DataFrame, n: int, rng: np.random.Generator,
                stratify: pd.Series | None = None) -> pd.DataFrame:
    """Up to ``n`` rows of ``frame`` without replacement (proportionally per stratum)."""
    if n >= len(frame):
        return frame
    if stratify is None:
        take = np.sort(rng.choice(len(frame), size=n, replace=False))
        return frame.iloc[take]
    parts = []
    strata = stratify.loc[frame.index].astype(object).where(stratify.loc[frame.index].notna(), "(none)")
    counts = strata.value_counts()
    # largest-remainder apportionment: exactly n rows, each stratum in proportion to its size
    exact = counts / counts.sum() * n
    quota = np.floor(exact).astype(int)
    short = n - int(quota.sum())
    if short > 0:
        order = (exact - quota).sort_values(ascending=False, kind="stable").index[:short]
        quota[order] += 1
    for value, q in quota.items():
        if q > 0:
            parts.append(sample_rows(frame[(strata == value).to_numpy()], int(q), rng))
    return pd.concat(parts).sort_index()


def parse_list(value, kind=str) -> list:
    """Accept a list or a comma-separated string (as given by ``--option``)."""
    if value is None:
        return []
    if isinstance(value, str):
        return [kind(v.strip()) for v in value.split(",") if v.strip()]
    if isinstance(value, (int, float)):
        return [kind(value)]
    return [kind(v) for v in value]


def to_gray_float(images: np.ndarray) -> np.ndarray:
    """uint8 images (N, H, W[, 3]) -> float32 grayscale (N, H, W) in [0, 1]."""
    x = images.astype(np.float32) / 255.0
    if x.ndim == 4:
        x = x[..., :3] @ np.array([0.299, 0.587, 0.114], np.float32)
    return x


def pyplot():
    """``matplotlib.pyplot`` on the non-interactive Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def fig_to_png(fig) -> bytes:
    """Render a matplotlib figure to PNG bytes and close it."""
    plt = pyplot()

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def image_grid(cells: Sequence[Sequence[np.ndarray | None]], row_labels: Sequence[str],
               col_labels: Sequence[str], title: str, cmap: str = "gray", normalize: bool = False) -> bytes:
    """A grid of images (rows x cols) as PNG bytes.

    Parameters
    ----------
    cells : rows of images, each float (H, W) or (H, W, 3) in [0, 1], or None
    normalize : bool
        Stretch each image to its own min-max range (for std images).
    """
    plt = pyplot()
    nr, nc = len(cells), max(1, max((len(r) for r in cells), default=1))
    fig, axes = plt.subplots(nr, nc, figsize=(1.1 * nc + 1.2, 1.1 * nr + 0.6), squeeze=False)
    for i, row in enumerate(cells):
        for j in range(nc):
            ax = axes[i][j]
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_visible(False)
            img = row[j] if j < len(row) else None
            if img is not None:
                img = np.asarray(img, dtype=np.float32)
                if normalize:
                    lo, hi = float(img.min()), float(img.max())
                    img = (img - lo) / (hi - lo) if hi > lo else np.zeros_like(img)
                img = np.clip(img, 0, 1)
                ax.imshow(img, cmap=cmap if img.ndim == 2 else None, vmin=0, vmax=1, interpolation="nearest")
            if i == 0 and j < len(col_labels):
                ax.set_title(str(col_labels[j])[:14], fontsize=7)
            if j == 0:
                ax.set_ylabel(str(row_labels[i])[:32], fontsize=7)
    fig.suptitle(title, fontsize=9)
    return fig_to_png(fig)
