"""Thumbnails for the pixel check: 32x32 grayscale rows, normalized to zero mean and unit norm.

The dot product of two normalized thumbnails is the Pearson correlation of
the images at 32x32 (:func:`thumbnail`), which ignores brightness and
contrast changes. The build stages the uint8 pixels (:func:`thumbnail_pixels`,
1 KiB an image); :class:`_ThumbnailRows` holds the rows of the images being
checked (in memory, or in a temporary file when they do not fit one batch)
and :class:`_Normalized` normalizes one block of them once, so that each
candidate pair is then a single dot product.
"""
from __future__ import annotations

import os
from typing import Callable

import numpy as np

from datakit.dedup import _limits

__all__ = ["thumbnail", "thumbnail_pixels"]


def thumbnail_pixels(image: np.ndarray) -> np.ndarray:
    """The 32x32 grayscale copy of an image that :func:`thumbnail` normalizes: uint8, shape (1024,).

    A quarter of the float thumbnail's size; :func:`~datakit.dedup.confirmed_duplicate_groups`
    takes either (it normalizes uint8 rows itself, as :func:`thumbnail` does).
    """
    from PIL import Image

    array = np.asarray(image)
    if array.ndim == 3:
        array = array[..., :3].astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    im = Image.fromarray(np.clip(array, 0, 255).astype(np.uint8))
    if im.size != (32, 32):
        im = im.resize((32, 32), Image.BILINEAR)
    return np.asarray(im, dtype=np.uint8).ravel()


def _unit_rows(rows: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """Zero-mean, unit-norm float32 copies of uint8 pixel rows (a flat row: all zero); float rows as given.

    ``out``: a float32 array of the rows' shape to write them into (uint8 rows only).
    """
    if rows.dtype != np.uint8:
        return np.asarray(rows, dtype=np.float32)
    if out is None:
        t = rows.astype(np.float32)
    else:
        t = out
        np.copyto(t, rows, casting="unsafe")
    t -= t.mean(axis=1, keepdims=True)
    norm = np.sqrt(np.einsum("ij,ij->i", t, t))
    flat = norm <= 1e-3
    t /= np.where(flat, np.float32(1), norm)[:, None]
    t[flat] = 0.0
    return t


def thumbnail(image: np.ndarray) -> np.ndarray:
    """Zero-mean, unit-norm 32x32 grayscale thumbnail, shape (1024,), float32.

    The dot product of two thumbnails is the Pearson correlation of the images
    at 32x32, which ignores brightness and contrast changes. A flat image (no
    structure) gives an all-zero thumbnail. :func:`thumbnail_pixels` gives the
    same thumbnail before normalization, as uint8.
    """
    return _unit_rows(thumbnail_pixels(image)[None])[0]


class _Normalized:
    """One block of thumbnail rows normalized once, so each pair of them is one dot product.

    ``unit`` (float32, shape (B, D)) holds :func:`_unit_rows` of the block
    (row ``k`` is bit for bit the row that normalizing any gathered subset
    holding row ``k`` gives) and ``flat`` (bool, shape (B,)) marks all-zero
    rows (flat images). For B uint8 rows of 1,024 pixels this is 4 KiB a row.
    """

    def __init__(self, rows: np.ndarray, n_jobs: int = 1) -> None:
        if n_jobs > 1 and rows.dtype == np.uint8 and len(rows) >= 256:
            # row by row, so the same rows in parts on threads (numpy lets go of the GIL)
            unit = np.empty(rows.shape, dtype=np.float32)

            def part(lo: int, hi: int) -> None:
                _unit_rows(rows[lo:hi], out=unit[lo:hi])

            _on_threads(len(rows), n_jobs, part)
            self.unit = unit
        else:
            self.unit = _unit_rows(rows)
        self.flat = ~self.unit.any(1)


def _on_threads(n: int, n_jobs: int, part: Callable[[int, int], None], align: int = 1) -> None:
    """``part(lo, hi)`` over ``n_jobs`` contiguous ranges of ``range(n)``, cut at multiples of ``align``, on threads."""
    step = -(-n // n_jobs)
    step = -(-step // align) * align
    cuts = [(lo, min(lo + step, n)) for lo in range(0, n, step)]
    if len(cuts) == 1:
        part(*cuts[0])
        return
    from concurrent.futures import ThreadPoolExecutor

    # the calling thread takes the first range itself: one thread fewer to start per call
    with ThreadPoolExecutor(max_workers=len(cuts) - 1, thread_name_prefix="datakit-pixels") as pool:
        futures = [pool.submit(part, lo, hi) for lo, hi in cuts[1:]]
        try:
            part(*cuts[0])
        finally:
            errors = [fut.exception() for fut in futures]  # waits for every range (an error here goes first)
    for exc in errors:
        if exc is not None:
            raise exc


class _ThumbnailRows:
    """The thumbnails of ``nodes``, in that order, each asked for once and read back by row range.

    ``thumbnails`` is called on at most ``_limits.MAX_THUMBNAILS`` nodes at a
    time (sorted, distinct). When all the rows fit in that cap they stay in
    memory; otherwise they go to an unnamed temporary file in ``workdir`` as
    they come (1 KiB a row for uint8 pixels) and only the ranges being compared
    are in memory.
    """

    def __init__(self, nodes: np.ndarray, thumbnails: Callable[[np.ndarray], np.ndarray],
                 workdir: str | os.PathLike | None) -> None:
        import tempfile

        self.memory: np.ndarray | None = None
        self.file = None
        self.dtype = self.width = None
        try:
            for lo in range(0, len(nodes), _limits.MAX_THUMBNAILS):
                chunk = nodes[lo:lo + _limits.MAX_THUMBNAILS]
                sort = np.argsort(chunk, kind="stable")
                got = np.asarray(thumbnails(chunk[sort]))
                if got.ndim != 2 or len(got) != len(chunk):
                    raise ValueError(f"thumbnails(indices) must return an array of shape (len(indices), D); "
                                     f"got shape {got.shape} for {len(chunk)} indices")
                if self.dtype is None:
                    self.dtype = np.dtype(np.uint8) if got.dtype == np.uint8 else np.dtype(np.float32)
                    self.width = got.shape[1]
                elif got.shape[1] != self.width:
                    raise ValueError(f"thumbnails(indices) returned rows of {got.shape[1]} values, "
                                     f"then {self.width}; every row must have the same length")
                rows = np.empty((len(chunk), self.width), dtype=self.dtype)
                rows[sort] = got
                del got
                if len(nodes) <= _limits.MAX_THUMBNAILS:
                    self.memory = rows
                    break
                if self.file is None:
                    self.file = tempfile.TemporaryFile(prefix="datakit-thumbnails-", dir=workdir)
                self.file.write(rows.tobytes())
            if self.file is not None:
                self.file.flush()
        except BaseException:
            self.close()
            raise

    def read(self, lo: int, hi: int) -> np.ndarray:
        """Rows ``lo:hi`` (positions in ``nodes``)."""
        if self.memory is not None:
            return self.memory[lo:hi]
        out = np.empty((hi - lo, self.width), dtype=self.dtype)
        self.file.seek(lo * out.itemsize * self.width)
        got = self.file.readinto(memoryview(out).cast("B"))
        if got != out.nbytes:
            raise OSError(f"short read from the thumbnail file: {got} of {out.nbytes} bytes")
        return out

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None
