"""Write a dataset directory (the contract of DESIGN.md, "A dataset on disk")."""
from __future__ import annotations

import datetime as _dt
import os
import platform
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from datakit import __version__
from datakit.store.atomic import atomic_write, atomic_write_json, atomic_write_parquet, atomic_write_text
from datakit.store.images import ImageStore, encode_png
from datakit.store.manifest import MANIFEST_COLUMNS, REJECTED_COLUMNS, conform

__all__ = ["DatasetWriter", "write_dataset", "versions"]


def versions() -> dict[str, str]:
    """Versions of datakit and the libraries whose behaviour shapes the data."""
    import PIL
    import pyarrow

    out = {"datakit": __version__, "python": platform.python_version(), "numpy": np.__version__,
           "pandas": pd.__version__, "pyarrow": pyarrow.__version__, "pillow": PIL.__version__}
    return out


class DatasetWriter:
    """Writes the files of one dataset directory, each atomically.

    Parameters
    ----------
    root : path
        The dataset directory (created if missing).
    """

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.store = ImageStore(self.root)

    def put_image(self, array: np.ndarray) -> tuple[str, str]:
        """Encode ``array`` as PNG into the store; return ``(id, relative path)``."""
        return self.store.put(encode_png(array))

    def write_manifest(self, frames: pd.DataFrame | Iterable[pd.DataFrame], row_group_size: int = 65536,
                       checksum=None) -> int:
        """Write ``manifest.parquet`` from one frame or a stream of frames.

        Each frame is written as it comes (Parquet row groups), so a stream
        never has to be held in memory at once. Returns the number of rows.
        ``checksum``: a :class:`datakit.store.manifest.ManifestChecksum` fed
        every row written (the file's checksum, without reading it back).
        """
        if isinstance(frames, pd.DataFrame):
            frames = [frames]
        n = 0
        target = self.root / "manifest.parquet"
        with atomic_write(target, "wb") as fh:
            writer = None
            for frame in frames:
                frame = conform(frame, MANIFEST_COLUMNS)
                table = pa.Table.from_pandas(frame, preserve_index=False)
                if writer is None:
                    writer = pq.ParquetWriter(fh, table.schema)
                elif table.schema != writer.schema:
                    table = table.cast(writer.schema)
                writer.write_table(table, row_group_size=row_group_size)
                if checksum is not None:
                    checksum.update(table)  # the rows as the file will hold them
                n += len(frame)
            if writer is None:
                table = pa.Table.from_pandas(conform(pd.DataFrame(), MANIFEST_COLUMNS), preserve_index=False)
                writer = pq.ParquetWriter(fh, table.schema)
                writer.write_table(table)
            writer.close()
        return n

    def write_rejected(self, frame: pd.DataFrame) -> None:
        atomic_write_parquet(self.root / "rejected.parquet", conform(frame, REJECTED_COLUMNS))

    def write_categories(self, frame: pd.DataFrame) -> None:
        from datakit.store.dataset import CATEGORY_COLUMNS

        frame = frame.copy()
        for col in CATEGORY_COLUMNS:
            if col not in frame.columns:
                frame[col] = ""
        extra = [c for c in frame.columns if c not in CATEGORY_COLUMNS]
        with atomic_write(self.root / "categories.csv", "w") as fh:
            frame[CATEGORY_COLUMNS + extra].to_csv(fh, index=False)

    def write_info(self, info: dict) -> None:
        atomic_write_json(self.root / "datakit.json", info)

    def write_datasheet(self, text: str) -> None:
        atomic_write_text(self.root / "DATASHEET.md", text)


def write_dataset(root: str | os.PathLike, images: np.ndarray, labels: Sequence, splits: Sequence[str] | str = "train",
                  source: Sequence[str] | str = "arrays", classes: Sequence[str] | None = None,
                  name: str | None = None, class_names: Sequence[str] | None = None) -> Path:
    """Write a complete dataset directory from arrays (fixtures, imports, tests).

    Parameters
    ----------
    images : ndarray, shape (N, H, W) or (N, H, W, 3), uint8
    labels : sequence of length N
        Class ids (converted to ``str``); ``None`` for unlabeled images.
    splits, source : str or sequence of length N
    classes : sequence of str, optional
        Class order (default: sorted labels).
    class_names : sequence of str, optional
        Readable names, aligned with ``classes``.

    Returns
    -------
    Path of the dataset directory.

    Examples
    --------
    >>> import numpy as np, tempfile
    >>> from datakit import open_dataset
    >>> x = np.zeros((4, 8, 8), np.uint8); x[:, 2:6, 2:6] = np.arange(4)[:, None, None] * 60
    >>> root = write_dataset(tempfile.mkdtemp(), x, [0, 1, 0, 1], ["train", "train", "test", "test"])
    >>> ds = open_dataset(root)
    >>> ds.classes, len(ds.split("train"))
    (['0', '1'], 2)
    """
    from datakit.hashing import phash

    n = len(images)
    as_list = lambda v: [v] * n if isinstance(v, str) else list(v)  # noqa: E731
    labels = [None if l is None else str(l) for l in labels]
    splits, source = as_list(splits), as_list(source)
    if not (len(labels) == len(splits) == len(source) == n):
        raise ValueError(f"images, labels, splits and source must have the same length ({n})")
    writer = DatasetWriter(root)
    rows = []
    names = dict(zip(classes, class_names)) if classes is not None and class_names is not None else {}
    for i in range(n):
        image_id, rel = writer.put_image(images[i])
        rows.append({
            "id": image_id, "path": rel, "label": labels[i], "label_name": names.get(labels[i], labels[i]),
            "split": splits[i], "source": source[i], "source_ref": f"{source[i]}#{i}",
            "width": images[i].shape[1], "height": images[i].shape[0], "phash": phash(images[i]),
        })
    manifest = pd.DataFrame(rows)
    writer.write_manifest(manifest)
    writer.write_rejected(pd.DataFrame())
    if classes is None:
        classes = sorted({l for l in labels if l is not None})
    classes = [str(c) for c in classes]
    writer.write_categories(pd.DataFrame({"label": classes, "name": [names.get(c, c) for c in classes]}))
    counts = manifest.groupby("split").size().to_dict() if n else {}
    writer.write_info({"name": name or Path(root).name, "created": _dt.datetime.now(_dt.timezone.utc).isoformat(),
                       "versions": versions(), "counts": {"images": n, "by_split": counts},
                       "recipe": None})
    return Path(root)
