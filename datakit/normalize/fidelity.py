"""Fidelity check for digit normalizers: distort real digits, normalize back, correlate.

Used by the fidelity test and ``bench/normalize_speed.py``: each 28x28 digit is
scaled by a random factor (0.5x-3x), pasted at a random position on a larger
blank canvas, and optionally inverted (dark ink on light paper). A good
normalizer maps it back close to the original; the score is the Pearson
correlation of the pixels.
"""
from __future__ import annotations

import numpy as np
from PIL import Image

__all__ = ["distort_digits", "pearson_rows", "shift_tolerant_pearson"]


_RESAMPLE = {"nearest": Image.Resampling.NEAREST, "bilinear": Image.Resampling.BILINEAR,
             "bicubic": Image.Resampling.BICUBIC, "lanczos": Image.Resampling.LANCZOS}


def distort_digits(digits: np.ndarray, seed: int = 0, *, min_scale: float = 0.5, max_scale: float = 3.0,
                   canvas: int = 96, invert_prob: float = 0.5, resample: str = "bicubic") -> np.ndarray:
    """Randomly rescale, shift and (maybe) invert digits onto a larger canvas.

    Parameters
    ----------
    digits : ndarray of uint8, shape (N, H, W)
        Light-on-dark digits (MNIST: (N, 28, 28)).
    seed : int
        Seed of the random generator (the output is a function of it).
    min_scale, max_scale : float
        Range of the uniform random scale factor.
    canvas : int
        Side of the square output; must hold ``max_scale * max(H, W)``.
    invert_prob : float
        Probability that an image is inverted (dark ink on white).
    resample : {"bicubic", "bilinear", "lanczos", "nearest"}
        Pillow filter for the rescaling (``"bicubic"`` is ``Image.resize``'s default).

    Returns
    -------
    ndarray of uint8, shape (N, canvas, canvas)
    """
    digits = np.asarray(digits)
    if digits.ndim != 3 or digits.dtype != np.uint8:
        raise ValueError(f"digits must be uint8 of shape (N, H, W), got {digits.dtype} {digits.shape}")
    n, h, w = digits.shape
    if int(round(max(h, w) * max_scale)) > canvas:
        raise ValueError(f"canvas {canvas} cannot hold a {h}x{w} digit scaled by {max_scale}")
    if resample not in _RESAMPLE:
        raise ValueError(f"Unknown value {resample!r} for resample. Valid values are {set(_RESAMPLE)}.")
    rng = np.random.default_rng(seed)
    out = np.zeros((n, canvas, canvas), np.uint8)
    scales = rng.uniform(min_scale, max_scale, n)
    inverts = rng.random(n) < invert_prob
    for i in range(n):
        nh, nw = max(1, int(round(h * scales[i]))), max(1, int(round(w * scales[i])))
        small = np.asarray(Image.fromarray(digits[i]).resize((nw, nh), _RESAMPLE[resample]))
        y = int(rng.integers(0, canvas - nh + 1))
        x = int(rng.integers(0, canvas - nw + 1))
        out[i, y:y + nh, x:x + nw] = small
        if inverts[i]:
            out[i] = 255 - out[i]
    return out


def pearson_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson correlation of each pair of images.

    Parameters
    ----------
    a, b : ndarray, shape (N, ...)
        Same shape.

    Returns
    -------
    ndarray of float64, shape (N,)
        NaN where an image is constant.
    """
    a = np.asarray(a, np.float64).reshape(len(a), -1)
    b = np.asarray(b, np.float64).reshape(len(b), -1)
    if a.shape != b.shape:
        raise ValueError(f"shapes differ: {a.shape} vs {b.shape}")
    a = a - a.mean(axis=1, keepdims=True)
    b = b - b.mean(axis=1, keepdims=True)
    den = np.sqrt((a * a).sum(axis=1) * (b * b).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return (a * b).sum(axis=1) / den


def shift_tolerant_pearson(a: np.ndarray, b: np.ndarray, max_shift: int = 1) -> np.ndarray:
    """Per-image Pearson correlation, maximized over whole-pixel shifts of ``a``.

    MNIST's centering fixes a digit's position only to within half a pixel
    (the center of mass is rounded to a pixel), so a re-normalized digit may
    sit one pixel off its original while satisfying the same rule. This
    measures shape fidelity apart from that ambiguity.

    Parameters
    ----------
    a, b : ndarray, shape (N, H, W)
    max_shift : int
        Shifts of ``-max_shift..max_shift`` pixels along each axis (wrapping
        around, which only moves background for centered digits).

    Returns
    -------
    ndarray of float64, shape (N,)
    """
    best = pearson_rows(a, b)
    for dy in range(-max_shift, max_shift + 1):
        for dx in range(-max_shift, max_shift + 1):
            if dy or dx:
                best = np.fmax(best, pearson_rows(np.roll(a, (dy, dx), axis=(1, 2)), b))
    return best
