"""USPS style: digits fitted into 16x16, as in the USPS database (Hull, 1994).

The same fit-and-center procedure as :func:`datakit.normalize.mnist.mnist`,
at USPS scale: the ink's bounding box is scaled so its longer side fills the
16x16 frame (``box = 16``), centered by the bounding box (USPS digits are
size-normalized to the frame, not mass-centered). Output is uint8 0..255;
:func:`to_usps_range` gives the [-1, 1] float range USPS files use.
"""
from __future__ import annotations

import numpy as np
from PIL import Image

from datakit.normalize.mnist import mnist

__all__ = ["usps", "to_usps_range"]


def usps(image: Image.Image | np.ndarray, *, size: int = 16, box: int | None = None, center: str = "box",
         polarity: str = "auto", threshold: float = 32, resample: str = "lanczos", stretch: bool = True,
         range: str = "uint8") -> np.ndarray:
    """Normalize one digit to USPS's 16x16 format.

    Parameters
    ----------
    image : PIL image or ndarray
        Any size and mode.
    size : int, default 16
        Output side.
    box : int, optional
        Longer side of the scaled ink; default ``size`` (fills the frame).
    center : {"box", "mass"}, default "box"
    polarity, threshold, resample, stretch
        As :func:`datakit.normalize.mnist.mnist`.
    range : {"uint8", "pm1"}, default "uint8"
        ``"uint8"``: the stored dataset image, 0..255. ``"pm1"`` is for arrays
        handed to models that expect USPS's [-1, 1] floats; the dataset stores
        uint8 either way, so this returns uint8 too and records the intent: apply
        :func:`to_usps_range` to the loaded arrays.

    Returns
    -------
    ndarray of uint8, shape (size, size)

    Raises
    ------
    ImageRejected
        ``"blank"`` when no pixel is ink.
    """
    if range not in ("uint8", "pm1"):
        raise ValueError(f"Unknown value {range!r} for range. Valid values are {{'uint8', 'pm1'}}.")
    return mnist(image, box=size if box is None else box, canvas=size, center=center, polarity=polarity,
                 threshold=threshold, resample=resample, stretch=stretch)


def to_usps_range(array: np.ndarray) -> np.ndarray:
    """Map uint8 pixels 0..255 to float32 in [-1, 1] (0 -> -1, 255 -> 1), any shape.

    Examples
    --------
    >>> to_usps_range(np.array([0, 255], np.uint8)).tolist()
    [-1.0, 1.0]
    """
    a = np.asarray(array)
    if a.dtype != np.uint8:
        raise TypeError(f"expected uint8 pixels, got {a.dtype}")
    return a.astype(np.float32) * np.float32(2.0 / 255.0) - np.float32(1.0)
