"""Content-addressed image store: ``images/<first two hex chars>/<sha256>.<ext>``.

Storing the same bytes twice is free (the path already exists), which makes
re-runs idempotent and exact duplicates collapse to one file.
"""
from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path

import numpy as np
from PIL import Image

from datakit.store.atomic import atomic_write_bytes

__all__ = ["ImageStore", "content_id", "encode_png", "decode_png"]


def content_id(data: bytes) -> str:
    """The sha256 hex digest of ``data`` (the id every table is keyed by)."""
    return hashlib.sha256(data).hexdigest()


def encode_png(array: np.ndarray) -> bytes:
    """Encode a uint8 array, shape (H, W) or (H, W, 3), as PNG deterministically."""
    if array.dtype != np.uint8:
        raise TypeError(f"encode_png expects uint8, got {array.dtype}")
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG", optimize=False, compress_level=6)
    return buf.getvalue()


def decode_png(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(im)


class ImageStore:
    """The ``images/`` folder of a dataset directory.

    Parameters
    ----------
    root : path
        The dataset directory (the store lives in ``root/images``).
    """

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)

    @staticmethod
    def relpath(image_id: str, ext: str = "png") -> str:
        """Path of an image relative to the dataset root, e.g. ``images/ab/ab12....png``."""
        return f"images/{image_id[:2]}/{image_id}.{ext}"

    def path(self, image_id: str, ext: str = "png") -> Path:
        return self.root / self.relpath(image_id, ext)

    def put(self, data: bytes, ext: str = "png") -> tuple[str, str]:
        """Store ``data``; return ``(id, relative path)``. Idempotent."""
        image_id = content_id(data)
        rel = self.relpath(image_id, ext)
        target = self.root / rel
        if not target.exists():
            atomic_write_bytes(target, data)
        return image_id, rel

    def __contains__(self, image_id: str) -> bool:
        return self.path(image_id).exists()
