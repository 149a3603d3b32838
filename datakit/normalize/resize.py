"""Caltech-101 style: scale to a target width keeping the aspect ratio; and ``none``.

:func:`resize` is registered as the ``caltech`` normalizer, and as ``resize``
(its earlier name, kept so existing recipes still build).
"""
from __future__ import annotations

import numpy as np
from PIL import Image

from datakit.sources.decode import to_array

__all__ = ["resize", "identity", "check_resize_options"]

_MODES = ("RGB", "L")


def check_resize_options(width: int, mode: str) -> None:
    """Raise ValueError naming a bad option value and the valid ones."""
    if isinstance(width, bool) or not isinstance(width, (int, np.integer)) or width < 1:
        raise ValueError(f"width must be a positive integer, got {width!r}")
    if mode not in _MODES:
        raise ValueError(f"Unknown value {mode!r} for mode. Valid values are {{'RGB', 'L'}}.")


def resize(image: Image.Image | np.ndarray, *, width: int = 300, mode: str = "RGB") -> np.ndarray:
    """Scale to ``width`` pixels wide, height by the aspect ratio (Caltech-101 used 300).

    Parameters
    ----------
    image : PIL image or ndarray
        Any mode :func:`datakit.sources.decode.to_array` accepts.
    width : int, default 300
        Output width in pixels.
    mode : {"RGB", "L"}, default "RGB"
        Output color mode.

    Returns
    -------
    ndarray of uint8
        Shape (round(H * width / W), width, 3) for ``"RGB"``, without the last
        axis for ``"L"`` (height at least 1). Resampled with Pillow's Lanczos
        filter (anti-aliased when shrinking).

    Examples
    --------
    >>> resize(np.zeros((100, 200, 3), np.uint8), width=50).shape
    (25, 50, 3)
    """
    a = to_array(image, mode)
    h, w = a.shape[:2]
    height = max(1, int(round(h * width / w)))
    if (height, width) == (h, w):
        return a
    return np.asarray(Image.fromarray(a).resize((width, height), Image.Resampling.LANCZOS))


def identity(image: Image.Image | np.ndarray, *, mode: str = "RGB") -> np.ndarray:
    """The pixels unchanged in size, as uint8 (H, W) for ``"L"`` or (H, W, 3) for ``"RGB"``."""
    return to_array(image, mode)
