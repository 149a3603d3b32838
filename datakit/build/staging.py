"""The ``.build`` staging folder: chunk files per source, their thumbnails, and reading them back."""
from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from PIL import Image

from datakit.build.labels import _keeps_split
from datakit.recipe import SourceSpec
from datakit.store.atomic import atomic_write_bytes, atomic_write_json, atomic_write_parquet

if TYPE_CHECKING:
    from datakit.build.plan import BuildPlan

__all__ = [
    "_Staging", "_stage_frame", "_stage_columns_frame", "_read_chunk", "_Chunks", "STAGING_DIR", "_STAGING_VERSION", "_THUMB_BYTES",
    "_STAGE_COLUMNS", "_COMPACT_COLUMNS",
]

logger = logging.getLogger(__name__)


#: Staging folder inside the output directory (removed when the build completes).
STAGING_DIR = ".build"
#: Bump when the staging layout or the per-item work changes meaning.
#: 2: pHashes of chunks holding failed rows are no longer rounded through float64.
#: 3: the batch normalizer (BatchWork) makes the images of styles that have one.
_STAGING_VERSION = 3

#: Bytes of one staged thumbnail (32x32 uint8 grayscale, :func:`datakit.dedup.thumbnail_pixels`).
_THUMB_BYTES = 1024

_STAGE_COLUMNS = {
    "seq": "int64", "source": "string", "source_ref": "string", "source_label": "string",
    "source_split": "string", "query": "string", "rank": "Int64", "license": "string",
    "ok": "bool", "id": "string", "path": "string", "width": "Int64", "height": "Int64",
    "phash": "UInt64", "stage": "string", "reason": "string", "detail": "string",
    # the candidates source's content id of the image as found (crowd tasks are keyed by it); chunks staged
    # before this column existed read it as null
    "candidate_id": "string",
    # the decoded image's size before normalization; null in chunks staged before these columns existed
    "original_width": "Int64", "original_height": "Int64",
}


class _Staging:
    """The ``.build`` folder: chunk files per source, resumable."""

    def __init__(self, out: Path, key: str, chunk_size: int) -> None:
        self.dir = out / STAGING_DIR
        state = {"key": key, "chunk_size": chunk_size, "version": _STAGING_VERSION}
        state_path = self.dir / "state.json"
        if self.dir.exists():
            try:
                old = json.loads(state_path.read_text())
            except (OSError, ValueError):
                old = None
            if old != state:
                logger.info("discarding staged chunks of a different build in %s", self.dir)
                shutil.rmtree(self.dir)
        if not self.dir.exists():
            self.dir.mkdir(parents=True)
            atomic_write_json(state_path, state)
        self.chunk_size = chunk_size

    def source_dir(self, name: str) -> Path:
        return self.dir / name

    def chunk_path(self, name: str, index: int) -> Path:
        return self.source_dir(name) / f"chunk-{index:06d}.parquet"

    def complete_chunks(self, name: str) -> int:
        """Number of consecutive complete chunks from chunk 0."""
        n = 0
        while self.chunk_path(name, n).exists():
            n += 1
        return n

    def done(self, name: str) -> dict | None:
        path = self.source_dir(name) / "done.json"
        if path.exists():
            try:
                return json.loads(path.read_text())
            except (OSError, ValueError):
                return None
        return None

    def mark_done(self, name: str, items: int, chunks: int) -> None:
        atomic_write_json(self.source_dir(name) / "done.json", {"items": items, "chunks": chunks})

    @staticmethod
    def thumbs_path(chunk: Path) -> Path:
        """The chunk's thumbnails: 1,024 bytes per ok row, in row order (see :func:`process_item`)."""
        return chunk.with_suffix(".thumbs")

    def write_chunk(self, name: str, index: int, columns: dict[str, list], thumbs: list) -> None:
        """Commit chunk ``index``: ``columns`` (name -> values, one per row) and each row's thumbnail (or None).

        The thumbnails of the ok rows go to :meth:`thumbs_path` when every ok row has one of
        :data:`_THUMB_BYTES` bytes (otherwise the finalize makes them from the stored images).
        """
        path = self.chunk_path(name, index)
        ok = [bool(v) for v in columns.get("ok", [])]
        kept = [t for t, o in zip(thumbs, ok) if o]
        if kept and all(t is not None and memoryview(t).nbytes == _THUMB_BYTES for t in kept):
            atomic_write_bytes(self.thumbs_path(path), b"".join(kept))
        if hasattr(os, "sync"):
            os.sync()  # the images (and thumbnails) this chunk refers to reach the disk before the chunk does
        atomic_write_parquet(path, _stage_columns_frame(columns, len(ok)))

    def read(self, name: str) -> pd.DataFrame:
        n = self.complete_chunks(name)
        frames = [pd.read_parquet(self.chunk_path(name, i)) for i in range(n)]
        frame = pd.concat(frames, ignore_index=True) if frames else _stage_frame([])
        for col, dtype in _STAGE_COLUMNS.items():
            if col not in frame.columns:  # staged by an older datakit
                frame[col] = pd.Series([None] * len(frame), dtype=dtype)
        return frame

    def remove(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


def _stage_frame(rows: list[dict]) -> pd.DataFrame:
    """The staged frame of rows given as dicts (a missing key is a null)."""
    return _stage_columns_frame({c: [r.get(c) for r in rows] for c in _STAGE_COLUMNS}, len(rows))


def _stage_columns_frame(columns: dict[str, list], n: int) -> pd.DataFrame:
    """The staged frame (the :data:`_STAGE_COLUMNS`, with their dtypes) of ``n`` rows given as columns.

    A column not given is all null; ``ok`` missing or null is False. Each
    column is made with its dtype at once: no object column first, so a
    64-bit pHash is never rounded through float64.
    """
    data = {}
    for col, dtype in _STAGE_COLUMNS.items():
        values = columns.get(col)
        if values is None:
            values = [None] * n
        elif len(values) != n:
            raise ValueError(f"staged column {col!r} has {len(values)} values for {n} rows")
        if col == "ok":
            data[col] = np.fromiter((bool(v) for v in values), dtype=bool, count=n)
        elif dtype == "int64":
            data[col] = np.asarray(values, dtype=np.int64).reshape(n)
        else:
            data[col] = pd.array(values, dtype=dtype)
    return pd.DataFrame(data)


def _read_chunk(path: Path, columns: list[str] | None = None) -> pd.DataFrame:
    """One staged chunk (all columns, or ``columns``), with columns staged by an older datakit filled null."""
    if columns is None:
        frame = pd.read_parquet(path)
        for col, dtype in _STAGE_COLUMNS.items():
            if col not in frame.columns:
                frame[col] = pd.Series([None] * len(frame), dtype=dtype)
        return frame
    import pyarrow.parquet as pq

    have = set(pq.read_schema(path).names)
    frame = pd.read_parquet(path, columns=[c for c in columns if c in have])
    for col in columns:
        if col not in frame.columns:
            frame[col] = pd.Series([None] * len(frame), dtype=_STAGE_COLUMNS[col])
    return frame


#: The staged columns the first finalize pass needs (the rest is read again only to write the manifest).
_COMPACT_COLUMNS = ["ok", "id", "source_label", "source_split", "phash", "candidate_id"]


class _Chunks:
    """The staged chunks in build order, with the number of ok rows of each (for gathering rows by ok index)."""

    def __init__(self) -> None:
        self.entries: list[tuple[SourceSpec, Path, bool]] = []
        self.ok_counts: list[int] = []

    @classmethod
    def of(cls, plan: BuildPlan, staging: _Staging) -> "_Chunks":
        """Every staged chunk of the plan's sources (reads only their ``ok`` column)."""
        chunks = cls()
        for spec, _ in plan.sources:
            keep = _keeps_split(spec, plan.recipe)
            for i in range(staging.complete_chunks(spec.name)):
                path = staging.chunk_path(spec.name, i)
                chunks.entries.append((spec, path, keep))
                chunks.ok_counts.append(int(_read_chunk(path, ["ok"])["ok"].to_numpy(dtype=bool).sum()))
        return chunks

    def thumbnails(self, ok_indices: np.ndarray, out: Path) -> np.ndarray:
        """The staged thumbnails (uint8, shape (k, 1024)) of the ok rows at sorted ``ok_indices``.

        Rows of a chunk staged without thumbnails (by an older datakit) are made
        from their stored images instead.
        """
        from datakit.dedup import thumbnail_pixels

        result = np.empty((len(ok_indices), _THUMB_BYTES), dtype=np.uint8)
        bounds = np.r_[0, np.cumsum(self.ok_counts)]
        for k, (_, path, _) in enumerate(self.entries):
            lo, hi = np.searchsorted(ok_indices, [bounds[k], bounds[k + 1]])
            if hi <= lo:
                continue
            local = ok_indices[lo:hi] - bounds[k]
            try:
                with open(_Staging.thumbs_path(path), "rb") as fh:
                    if os.fstat(fh.fileno()).st_size != self.ok_counts[k] * _THUMB_BYTES:
                        raise OSError("size does not match the chunk")
                    if len(local) * 16 >= self.ok_counts[k]:  # many rows: one read
                        whole = np.frombuffer(fh.read(), dtype=np.uint8).reshape(-1, _THUMB_BYTES)
                        result[lo:hi] = whole[local]
                        del whole
                    else:
                        fd = fh.fileno()
                        for r, row in enumerate(local.tolist(), start=int(lo)):
                            result[r] = np.frombuffer(os.pread(fd, _THUMB_BYTES, row * _THUMB_BYTES), dtype=np.uint8)
                continue
            except OSError as exc:
                logger.debug("no usable staged thumbnails for %s (%s): reading its images", path, exc)
            frame = _read_chunk(path, ["ok", "path"])
            paths = frame.loc[frame["ok"].to_numpy(dtype=bool), "path"].to_numpy()[local]
            for r, rel in enumerate(paths, start=int(lo)):
                with Image.open(out / rel) as im:
                    result[r] = thumbnail_pixels(np.asarray(im))
        return result

    def gather(self, ok_indices: np.ndarray, columns: list[str]) -> pd.DataFrame:
        """Columns of the ok rows at sorted ``ok_indices`` (reads only the chunks holding them)."""
        bounds = np.r_[0, np.cumsum(self.ok_counts)]
        parts = []
        for k, (_, path, _) in enumerate(self.entries):
            lo, hi = np.searchsorted(ok_indices, [bounds[k], bounds[k + 1]])
            if hi <= lo:
                continue
            frame = _read_chunk(path, ["ok"] + columns)
            frame = frame[frame["ok"].to_numpy(dtype=bool)]
            parts.append(frame.iloc[ok_indices[lo:hi] - bounds[k]][columns])
        if not parts:
            return pd.DataFrame({c: pd.Series([], dtype=_STAGE_COLUMNS[c]) for c in columns})
        return pd.concat(parts, ignore_index=True)
