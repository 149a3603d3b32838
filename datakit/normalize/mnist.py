"""MNIST-style normalization (LeCun et al., 1998), as pure functions on arrays.

LeCun's procedure: take the digit as light ink on black; find the bounding box
of the ink; scale it so it fits a ``box`` x ``box`` square (20 for MNIST)
preserving its aspect ratio, with anti-aliasing; place that box in a
``canvas`` x ``canvas`` image (28) so that the center of mass of the pixels
is at the center (the box moved by whole pixels, so the center of mass lands
within half a pixel of pixel ``canvas // 2``, as in MNIST).

How it is done here:

* The bounding box is measured with sub-pixel precision on the row and column
  profiles (the brightest pixel of each row / column), by linear interpolation
  where the profile crosses a fraction of the peak ink: 40 % for the size
  (so the scale does not depend on faint anti-aliasing fringes) and 10 % for
  the position. Pixels count as ink above ``threshold`` (after the
  background, the lower quartile of the border, is subtracted); an image whose peak
  does not exceed it is blank and rejected.
* Cropping, scaling and placing are one separable linear map,
  ``out = Wy @ image @ Wx.T`` (:mod:`datakit.normalize._resample`), with a
  Lanczos (default) or other anti-aliasing filter; no intermediate image is
  made. :func:`mnist_batch` does the same for many same-size images with
  batched matrix products.

On 2,000 real MNIST test digits, each randomly rescaled (0.5x-3x), shifted and
half of them inverted, the result correlates with the original at about 0.96
(Pearson, mean); see ``bench/normalize_speed.py``.
"""
from __future__ import annotations

from functools import lru_cache
from typing import Any

import numpy as np
from PIL import Image

from datakit.errors import ImageRejected
from datakit.normalize._resample import KERNELS, axis_weights, centers as _centers, weights_pair as _weights_pair
from datakit.sources.decode import to_array

__all__ = ["mnist", "mnist_batch", "prepare_ink", "MNIST_DEFAULTS", "check_mnist_options"]

#: Default options of :func:`mnist`.
MNIST_DEFAULTS: dict[str, Any] = {"box": 20, "canvas": 28, "center": "mass", "polarity": "auto",
                                  "threshold": 32, "resample": "lanczos", "stretch": True}

_CENTERS = ("mass", "box")
_POLARITIES = ("auto", "light-on-dark", "dark-on-light")
_SIZE_LEVEL = np.float32(0.4)  # profile level (fraction of peak) where the box size is measured
_EDGE_LEVEL = np.float32(0.02)  # outer edge of the ink (fraction of peak), where the edge search starts
_EDGE_DEPTH = 1.0  # the edge is where the profile reaches half its value this many output pixels inside
_SOFT = 0.04  # a center of mass this close to a rounding boundary (pixels) is placed half-way


def check_mnist_options(box: int, canvas: int, center: str, polarity: str, threshold: float, resample: str,
                        stretch: bool) -> None:
    """Raise ValueError/TypeError naming a bad option value and the valid ones."""
    for name, v in (("box", box), ("canvas", canvas)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise ValueError(f"{name} must be a positive integer, got {v!r}")
    if box > canvas:
        raise ValueError(f"box ({box}) must not exceed canvas ({canvas})")
    if center not in _CENTERS:
        raise ValueError(f"Unknown value {center!r} for center. Valid values are {{'mass', 'box'}}.")
    if polarity not in _POLARITIES:
        raise ValueError(f"Unknown value {polarity!r} for polarity. "
                         "Valid values are {'auto', 'light-on-dark', 'dark-on-light'}.")
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float, np.number)) or not 0 <= threshold < 255:
        raise ValueError(f"threshold must be a number in [0, 255), got {threshold!r}")
    if resample not in KERNELS:
        raise ValueError(f"Unknown value {resample!r} for resample. Valid values are {{{', '.join(sorted(KERNELS))}}}.")
    if not isinstance(stretch, (bool, np.bool_)):
        raise TypeError(f"stretch must be true or false, got {stretch!r}")


@lru_cache(maxsize=256)
def _checked(box: int, canvas: int, center: str, polarity: str, threshold: float, resample: str,
             stretch: bool) -> bool:
    check_mnist_options(box, canvas, center, polarity, threshold, resample, stretch)
    return True


def _check(*options: Any) -> None:
    """:func:`check_mnist_options`, remembered for option sets already seen (one call per image is cheap)."""
    try:
        _checked(*options)
    except TypeError as exc:
        if "unhashable" not in str(exc):
            raise
        check_mnist_options(*options)


def prepare_ink(image: Image.Image | np.ndarray, polarity: str = "auto") -> np.ndarray:
    """Grayscale pixels as light ink on a zero background.

    Parameters
    ----------
    image : PIL image or ndarray
        Any mode :func:`datakit.sources.decode.to_array` accepts.
    polarity : {"auto", "light-on-dark", "dark-on-light"}
        ``"auto"`` inverts when the border is mostly light (dark ink on paper).

    Returns
    -------
    ndarray of uint8, shape (H, W)
        With the background level (the lower quartile of the border pixels)
        subtracted, clipped at 0.
    """
    a = to_array(image, "L")
    if a.size == 0:
        raise ImageRejected("unreadable", f"image of shape {a.shape} has no pixels")
    if min(a.shape) <= 2:  # every pixel is on the border: no background to measure
        if polarity == "dark-on-light" or (polarity == "auto" and int(a.sum()) > 127.5 * a.size):
            return 255 - a
        return a.copy() if a is image else a
    border = np.concatenate((a[0], a[-1], a[1:-1, 0], a[1:-1, -1]))
    if polarity == "dark-on-light" or (polarity == "auto" and int(border.sum()) > 127.5 * border.size):
        a = 255 - a
        border = 255 - border
    if border.max() == 0:
        return a.copy() if a is image else a
    k = border.size // 4
    bg = np.partition(border, k)[k]  # background: the border's lower quartile
    if bg == 0:
        return a.copy() if a is image else a
    a = np.maximum(a, bg)
    a -= bg
    return a


def _prepare_batch(imgs: np.ndarray, polarity: str) -> np.ndarray:
    """(N, H, W) uint8 -> light-on-dark, background-subtracted uint8 (a new array)."""
    n, h, w = imgs.shape
    tiny = min(h, w) <= 2  # every pixel is on the border: no background to measure
    if tiny:
        border = imgs.reshape(n, -1)
    else:
        border = np.concatenate((imgs[:, 0, :], imgs[:, -1, :], imgs[:, 1:-1, 0], imgs[:, 1:-1, -1]), axis=1)
    if polarity == "dark-on-light":
        invert = np.ones(n, bool)
    elif polarity == "auto":
        invert = border.mean(axis=1) > 127.5
    else:
        invert = np.zeros(n, bool)
    flip = np.where(invert, np.uint8(255), np.uint8(0))  # x ^ 255 == 255 - x for uint8
    a = imgs ^ flip[:, None, None]
    border = border ^ flip[:, None]
    if tiny:
        return a
    k = border.shape[1] // 4
    bg = np.partition(border, k, axis=1)[:, k]  # background: the border's lower quartile
    for i in np.flatnonzero(bg):
        np.maximum(a[i], bg[i], out=a[i])
        a[i] -= bg[i]
    return a


def _edges(p: np.ndarray, level: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sub-pixel positions where each profile first rises above / last falls below ``level``.

    ``p`` (M, L) >= 0, ``level`` (M,) with ``0 < level < p.max(axis=1)``.
    Returns ``(lo, hi)``, each (M,), in continuous pixel coordinates.
    """
    m, n = p.shape
    above = p > level[:, None]
    i0 = above.argmax(axis=1)
    i1 = (n - 1) - above[:, ::-1].argmax(axis=1)
    rows = np.arange(m)
    v0 = p[rows, i0]
    v1 = p[rows, i1]
    pl = p[rows, i0 - 1] * (i0 > 0)
    pr = p[rows, np.minimum(i1 + 1, n - 1)] * (i1 < n - 1)
    lo = i0 - np.float32(0.5) + (level - pl) / (v0 - pl)
    hi = i1 + np.float32(0.5) + (v1 - level) / (v1 - pr)
    return lo, hi


_CHUNK = 64  # images per batched matrix product (grouped by crop size)


def _normalize(a: np.ndarray, box: int, canvas: int, center: str, threshold: float, resample: str,
               stretch: bool) -> tuple[np.ndarray, np.ndarray]:
    """Core on ink images ``a`` (N, H, W) uint8 -> (uint8 (N, canvas, canvas), blank (N,)).

    Each image is cut to the crop holding its nonzero pixels (the rest is 0,
    so nothing changes); crops are sorted by size and processed in chunks of
    similar size with batched matrix products.
    """
    n, h, w = a.shape
    py8 = a.max(axis=2)
    px8 = a.max(axis=1)
    peak = py8.max(axis=1).astype(np.float32)
    blank = peak <= threshold
    py = py8.astype(np.float32)
    px = px8.astype(np.float32)
    if blank.any():
        peak[blank] = 1.0
        py[blank, 0] = 1.0  # a dummy profile, so the edge search is defined; masked out below
        px[blank, 0] = 1.0
    length = max(h, w)
    prof = np.zeros((2 * n, length), np.float32)
    prof[:n, :h] = py
    prof[n:, :w] = px
    prof = np.concatenate((prof, prof))
    peak2 = np.concatenate((peak, peak))
    levels = np.concatenate((peak2 * _SIZE_LEVEL, peak2 * _PLACE_LEVEL))
    lo, hi = _edges(prof, levels)
    size = hi[: 2 * n] - lo[: 2 * n]
    scale = np.float32(box) / np.maximum(np.maximum(size[:n], size[n:]), np.float32(1e-3))
    mid = (lo[2 * n:] + hi[2 * n:]) * np.float32(0.5)  # box centers: rows then columns
    my, mx = mid[:n], mid[n:]
    # crops holding every nonzero pixel
    nzr = py > 0
    nzc = px > 0
    r0 = nzr.argmax(axis=1)
    r1 = h - nzr[:, ::-1].argmax(axis=1)
    c0 = nzc.argmax(axis=1)
    c1 = w - nzc[:, ::-1].argmax(axis=1)
    hc = r1 - r0
    wc = c1 - c0
    out = np.zeros((n, canvas, canvas), np.uint8)
    half = np.float32(box / 2.0)
    target = np.float32(canvas // 2 + 0.5)
    order = np.argsort(np.maximum(hc, wc), kind="stable")
    order = order[~blank[order]]
    for start in range(0, len(order), _CHUNK):
        idx = order[start:start + _CHUNK]
        hb, wb = int(hc[idx].max()), int(wc[idx].max())
        buf = np.zeros((len(idx), hb, wb), np.float32)
        for j, i in enumerate(idx.tolist()):
            buf[j, :hc[i], :wc[i]] = a[i, r0[i]:r1[i], c0[i]:c1[i]]
        cy = my[idx] - r0[idx]  # box centers in crop coordinates
        cx = mx[idx] - c0[idx]
        sc = scale[idx]
        if center == "mass":
            sy = buf @ np.ones(wb, np.float32)  # (k, hb) row sums
            sx = np.ones(hb, np.float32) @ buf  # (k, wb) column sums
            total = sy.sum(axis=1)
            gy = (sy @ _centers(hb)) / total
            gx = (sx @ _centers(wb)) / total
            # the box's origin moves by whole pixels so the mass center lands nearest pixel canvas // 2
            out_y = half + np.rint(target - (half + (gy - cy) * sc))
            out_x = half + np.rint(target - (half + (gx - cx) * sc))
        else:
            out_y = out_x = np.float32(canvas / 2.0)
        wy = axis_weights(hb, canvas, sc, cy, out_y, resample)
        wx = axis_weights(wb, canvas, sc, cx, out_x, resample)
        res = np.matmul(np.matmul(wy, buf), wx.transpose(0, 2, 1))
        if stretch:
            top = res.max(axis=(1, 2))
            res *= (np.float32(255.0) / np.where(top > 0, top, np.float32(1)))[:, None, None]
        else:
            np.minimum(res, 255, out=res)
        np.maximum(res, 0, out=res)
        res += np.float32(0.5)  # round half up, then truncate
        out[idx] = res.astype(np.uint8)
    return out, blank


def _cross(p: list, level: float) -> tuple[float, float]:
    """Scalar :func:`_edges` on a Python list (faster for one image)."""
    n = len(p)
    i0 = 0
    while p[i0] <= level:
        i0 += 1
    i1 = n - 1
    while p[i1] <= level:
        i1 -= 1
    pl = p[i0 - 1] if i0 > 0 else 0.0
    pr = p[i1 + 1] if i1 < n - 1 else 0.0
    return i0 - 0.5 + (level - pl) / (p[i0] - pl), i1 + 0.5 + (p[i1] - level) / (p[i1] - pr)


def _normalize_one(a: np.ndarray, box: int, canvas: int, center: str, threshold: float, resample: str,
                   stretch: bool) -> np.ndarray | None:
    """:func:`_normalize` for one (H, W) uint8 ink image; None when blank.

    Works on the crop holding all nonzero pixels (the rest is exactly 0, so
    the result is the same) and with scalar arithmetic where numpy calls
    would cost more than they save.
    """
    py = a.max(axis=1)
    peak = int(py.max())
    if peak <= threshold:
        return None
    px = a.max(axis=0)
    nzr = np.flatnonzero(py)
    nzc = np.flatnonzero(px)
    r0, r1 = int(nzr[0]), int(nzr[-1]) + 1
    c0, c1 = int(nzc[0]), int(nzc[-1]) + 1
    ry = py[r0:r1].tolist()
    rx = px[c0:c1].tolist()
    size_level = float(_SIZE_LEVEL) * peak
    place_level = float(_PLACE_LEVEL) * peak
    ylo, yhi = _cross(ry, size_level)
    xlo, xhi = _cross(rx, size_level)
    scale = box / max(yhi - ylo, xhi - xlo, 1e-3)
    ylo, yhi = _cross(ry, place_level)
    xlo, xhi = _cross(rx, place_level)
    my, mx = (ylo + yhi) * 0.5, (xlo + xhi) * 0.5  # in crop coordinates
    crop = a[r0:r1, c0:c1].astype(np.float32)
    h, w = crop.shape
    if center == "mass":
        sy = crop.sum(axis=1)
        sx = crop.sum(axis=0)
        total = float(sy.sum())
        gy = float(sy @ _centers(h)) / total
        gx = float(sx @ _centers(w)) / total
        half = box / 2.0
        target = canvas // 2 + 0.5
        out_y = half + round(target - (half + (gy - my) * scale))
        out_x = half + round(target - (half + (gx - mx) * scale))
    else:
        out_y = out_x = canvas / 2.0
    wy, wx = _weights_pair(h, w, canvas, scale, my, out_y, mx, out_x, resample)
    out = wy @ crop @ wx.T
    if stretch:
        top = float(out.max())
        if top > 0:
            out *= 255.0 / top
    else:
        np.minimum(out, 255, out=out)
    np.maximum(out, 0, out=out)
    out += 0.5  # round half up, then truncate
    return out.astype(np.uint8)


def mnist(image: Image.Image | np.ndarray, *, box: int = 20, canvas: int = 28, center: str = "mass",
          polarity: str = "auto", threshold: float = 32, resample: str = "lanczos",
          stretch: bool = True) -> np.ndarray:
    """Normalize one digit the way MNIST was made.

    Parameters
    ----------
    image : PIL image or ndarray
        Any size and mode (grayscale, RGB, RGBA, palette, 16-bit, CMYK, ...).
    box : int, default 20
        The ink's bounding box is scaled so its longer side is ``box`` pixels.
    canvas : int, default 28
        Output size.
    center : {"mass", "box"}, default "mass"
        ``"mass"``: move the box by whole pixels so the center of mass is
        nearest pixel ``canvas // 2`` (MNIST). ``"box"``: center the bounding
        box in the canvas (USPS).
    polarity : {"auto", "light-on-dark", "dark-on-light"}, default "auto"
        Input polarity; ``"auto"`` inverts inputs whose border is mostly light.
        The output is always light ink on black.
    threshold : float, default 32
        Ink must exceed the background by more than this (0..255 scale);
        otherwise the image is blank.
    resample : {"lanczos", "bicubic", "triangle", "box"}, default "lanczos"
        Anti-aliasing filter (its support widens when shrinking).
    stretch : bool, default True
        Scale the result so its brightest pixel is 255.

    Returns
    -------
    ndarray of uint8, shape (canvas, canvas)

    Raises
    ------
    ImageRejected
        ``"blank"`` when no pixel is ink.

    Examples
    --------
    >>> digit = np.zeros((60, 40), np.uint8); digit[10:50, 15:25] = 255
    >>> out = mnist(digit)
    >>> out.shape, out.dtype, int(out.max())
    ((28, 28), dtype('uint8'), 255)
    >>> [int(i) for i in np.nonzero(out.max(axis=1) > 127)[0][[0, -1]]]  # 20 rows of ink
    [4, 23]
    """
    _check(box, canvas, center, polarity, threshold, resample, stretch)
    a = prepare_ink(image, polarity)
    out = _normalize_one(a, box, canvas, center, threshold, resample, stretch)
    if out is None:
        raise ImageRejected("blank", f"no ink: no pixel exceeds the background by more than {threshold}")
    return out


def mnist_batch(images: np.ndarray, *, box: int = 20, canvas: int = 28, center: str = "mass",
                polarity: str = "auto", threshold: float = 32, resample: str = "lanczos",
                stretch: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """:func:`mnist` for many same-size grayscale images at once (vectorized).

    Gives the same result as calling :func:`mnist` on each image (up to
    float rounding: at most 1 gray level apart).

    Parameters
    ----------
    images : ndarray of uint8, shape (N, H, W)
        Grayscale images of one size.
    box, canvas, center, polarity, threshold, resample, stretch
        As :func:`mnist`.

    Returns
    -------
    out : ndarray of uint8, shape (N, canvas, canvas)
        Normalized digits; all zero where ``blank``.
    blank : ndarray of bool, shape (N,)
        True for images with no ink (:func:`mnist` raises
        ``ImageRejected("blank")`` for them).
    """
    _check(box, canvas, center, polarity, threshold, resample, stretch)
    imgs = np.asarray(images)
    if imgs.ndim != 3:
        raise ValueError(f"images must have shape (N, H, W), got {imgs.shape}")
    if imgs.dtype != np.uint8:
        raise TypeError(f"images must be uint8, got {imgs.dtype}")
    n, h, w = imgs.shape
    if n == 0 or h == 0 or w == 0:
        return np.zeros((n, canvas, canvas), np.uint8), np.ones(n, bool)
    a = _prepare_batch(imgs, polarity)
    return _normalize(a, box, canvas, center, threshold, resample, stretch)
