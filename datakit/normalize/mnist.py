"""MNIST-style normalization (LeCun et al., 1998), as pure functions on arrays.

LeCun's procedure: take the digit as light ink on black; find the bounding box
of the ink; scale it so it fits a ``box`` x ``box`` square (20 for MNIST)
preserving its aspect ratio, with anti-aliasing; place that box in a
``canvas`` x ``canvas`` image (28) so that the center of mass of the pixels
is at the center (the box moved by whole pixels, so the center of mass lands
within half a pixel of pixel ``canvas // 2``, as in MNIST).

How it is done here:

* Size: the bounding box is measured with sub-pixel precision on the row and
  column profiles (the brightest pixel of each row / column), by linear
  interpolation where the profile crosses 40 % of the peak ink, so the scale
  does not depend on faint anti-aliasing fringes. Pixels count as ink above
  ``threshold`` (after the background, the lower quartile of the border, is
  subtracted); an image whose peak does not exceed it is blank and rejected.
* Position: each edge of the box is where the profile reaches half of its
  height just inside the edge (the largest value within 0.75 output pixels
  of where the profile first exceeds 5 % of the peak). For an edge pixel of
  any brightness next to background that is the pixel's boundary, and a
  symmetric blur (an anti-aliased rescale of the digit) keeps it there.
* Placement: MNIST's digits have their ink box on whole pixels and their
  center of mass rounded to pixel ``canvas // 2``. The long side of the box
  spans ``box`` pixels; the short side's extent is rounded to whole pixels,
  and its parity decides whether the box center sits on a pixel boundary
  (even) or a pixel center (odd). For inputs at least 1.3 times larger than
  the box (a digit drawn on a pixel grid and enlarged keeps that grid), the
  short side's sub-pixel position is instead taken from that grid: the one
  at which sampling the input through the (not widened) Lanczos filter gives
  the most contrast (:func:`_short_phase`). The box is then moved by whole
  pixels so the center of mass lands in pixel ``canvas // 2``.
* Cropping, scaling and placing are one separable linear map,
  ``out = Wy @ image @ Wx.T`` (:mod:`datakit.normalize._resample`), with a
  Lanczos (default) or other anti-aliasing filter; no intermediate image is
  made. :func:`mnist_batch` does the same for many same-size images with
  batched matrix products.

On 1,000 real MNIST test digits, each randomly rescaled (0.5x-3x), shifted and
half of them inverted, the result correlates with the original at 0.975
(Pearson, mean; median 0.995), and real MNIST digits come back at 0.986
(median 0.999); see ``bench/normalize_speed.py`` and bench/results/normalize.md.
"""
from __future__ import annotations

import math
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
_EDGE_LEVEL = np.float32(0.05)  # outer edge of the ink (fraction of peak), where the edge search starts
_EDGE_DEPTH = 0.75  # the edge is where the profile reaches half its value this many output pixels inside
_PHASE_ZOOM = 1.3  # search the short side's sub-pixel phase when the ink is at least this much larger than the box
_PHASES = np.arange(3, dtype=np.float32) / np.float32(3)  # phases sampled (output pixels)
_COS = np.cos(2 * np.pi * _PHASES).astype(np.float32)
_SIN = np.sin(2 * np.pi * _PHASES).astype(np.float32)


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


def _edges(p: np.ndarray, level: np.ndarray, level_hi: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Sub-pixel positions where each profile first rises above ``level`` / last falls below ``level_hi``.

    ``p`` (M, L) >= 0, ``level`` and ``level_hi`` (M,) with ``0 < level < p.max(axis=1)``
    (``level_hi`` defaults to ``level``). The profile is linear between pixel
    centers. Returns ``(lo, hi)``, each (M,), in continuous pixel coordinates.
    """
    if level_hi is None:
        level_hi = level
    m, n = p.shape
    i0 = (p > level[:, None]).argmax(axis=1)
    i1 = (n - 1) - (p[:, ::-1] > level_hi[:, None]).argmax(axis=1)
    rows = np.arange(m)
    v0 = p[rows, i0]
    v1 = p[rows, i1]
    pl = p[rows, i0 - 1] * (i0 > 0)
    pr = p[rows, np.minimum(i1 + 1, n - 1)] * (i1 < n - 1)
    lo = i0 - np.float32(0.5) + (level - pl) / (v0 - pl)
    hi = i1 + np.float32(0.5) + (v1 - level_hi) / (v1 - pr)
    return lo, hi


def _interp(p: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Each profile of ``p`` (M, L), linear between pixel centers and 0 outside, at position ``x`` (M,)."""
    m, n = p.shape
    t = np.clip(x - np.float32(0.5), -1, n).astype(np.float32)
    i = np.floor(t).astype(np.int64)
    fr = t - i
    rows = np.arange(m)
    v0 = np.where((i >= 0) & (i < n), p[rows, np.clip(i, 0, n - 1)], np.float32(0))
    v1 = np.where((i + 1 >= 0) & (i + 1 < n), p[rows, np.clip(i + 1, 0, n - 1)], np.float32(0))
    return v0 * (1 - fr) + v1 * fr


def _rim(p: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Largest value of each profile ``p`` (M, L) (linear between pixel centers, 0 outside) on ``[a, b]``."""
    c = _centers(p.shape[1])
    inside = (c >= a[:, None]) & (c <= b[:, None])
    return np.maximum(np.maximum(_interp(p, a), _interp(p, b)), np.where(inside, p, np.float32(0)).max(axis=1))


def _ink_edges(p: np.ndarray, peak: np.ndarray, scale: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Edges of the ink along each profile ``p`` (M, L): see :func:`_ink_edges_one`."""
    base = np.maximum(peak * _EDGE_LEVEL, np.float32(0.5))
    lo, hi = _edges(p, base)
    depth = np.float32(_EDGE_DEPTH) / scale
    half = np.float32(0.5)
    return _edges(p, np.maximum(_rim(p, lo, lo + depth) * half, base),
                  np.maximum(_rim(p, hi - depth, hi) * half, base))


_CHUNK = 128  # images per batched matrix product (grouped by crop size)


def _best_phase(energy: np.ndarray) -> np.ndarray:
    """Where the first harmonic fitted to ``energy`` peaks.

    ``energy`` (G, len(_PHASES)) is sampled at ``_PHASES`` (equally spaced over
    one pixel); returns the phase (G,), in (-0.5, 0.5] pixels.
    """
    return (np.arctan2(energy @ _SIN, energy @ _COS) / np.float32(2 * np.pi)).astype(np.float32)


def _short_phase(buf: np.ndarray, scale: np.ndarray, cy: np.ndarray, cx: np.ndarray, fy: np.ndarray,
                 fx: np.ndarray, short_x: np.ndarray, box: int) -> tuple[np.ndarray, np.ndarray]:
    """Sub-pixel phase of the short side's placement, from the grid the digit was drawn on.

    A digit drawn on a pixel grid and then enlarged keeps that grid: sampling
    it through an interpolating (Lanczos, not widened) filter at points
    aligned with the original pixel centers reproduces the original pixels,
    while samples in between are interpolations and have less contrast. So,
    for inputs at least ``_PHASE_ZOOM`` times larger than the output box, the
    short side's fractional position is the one whose point-sampled output
    has the most energy (sum of squares): the energy is sampled at the
    ``_PHASES`` and its first harmonic (period one pixel) fitted, whose peak
    gives the phase. The long side keeps its placement (its box spans exactly
    ``box`` pixels, so its edges already fall on pixel boundaries).

    Parameters
    ----------
    buf : ndarray of float32, shape (K, H, W)
        Crops (zero-padded to one size).
    scale, cy, cx, fy, fx : ndarray of float32, shape (K,)
        Scale, box centers (crop coordinates) and fractional placements.
    short_x : ndarray of bool, shape (K,)
        True where the short side is horizontal.
    box : int
        The box size; the energy is measured on a ``box`` x ``box`` square around the box center.

    Returns
    -------
    fy, fx : ndarray of float32, shape (K,)
        The fractional placements, the short side's replaced where searched.
    """
    fy = fy.copy()
    fx = fx.copy()
    zoom = np.float32(1.0) / scale >= np.float32(_PHASE_ZOOM)
    k = len(_PHASES)
    canvas = box
    base = np.float32(canvas // 2)
    _, hb, wb = buf.shape
    for along_x in (True, False):
        sel = np.flatnonzero(zoom & (short_x == along_x))
        if not len(sel):
            continue
        g = len(sel)
        sc = scale[sel]
        if along_x:
            w0 = axis_weights(hb, canvas, sc, cy[sel], base + fy[sel], "lanczos", widen=False)
            f = fx[sel]
            wc = axis_weights(wb, canvas, np.repeat(sc, k), np.repeat(cx[sel], k),
                              ((base + f)[:, None] + _PHASES).ravel(), "lanczos", widen=False)
            rows = np.ascontiguousarray(np.matmul(w0, buf[sel]).transpose(0, 2, 1))  # (g, wb, canvas)
            t = np.matmul(wc.reshape(g, k * canvas, wb), rows)  # contiguous operands: BLAS, not a slow loop
            energy = np.square(t).reshape(g, k, canvas, canvas).sum(axis=(2, 3))
            fx[sel] = (f + _best_phase(energy)) % np.float32(1)
        else:
            w0 = axis_weights(wb, canvas, sc, cx[sel], base + fx[sel], "lanczos", widen=False)
            f = fy[sel]
            wc = axis_weights(hb, canvas, np.repeat(sc, k), np.repeat(cy[sel], k),
                              ((base + f)[:, None] + _PHASES).ravel(), "lanczos", widen=False)
            cols = np.matmul(buf[sel], np.ascontiguousarray(w0.transpose(0, 2, 1)))  # (g, hb, canvas)
            t = np.matmul(wc.reshape(g, k * canvas, hb), cols)
            energy = np.square(t).reshape(g, k, canvas, canvas).sum(axis=(2, 3))
            fy[sel] = (f + _best_phase(energy)) % np.float32(1)
    return fy, fx


def _place_batch(g: np.ndarray, c: np.ndarray, scale: np.ndarray, frac: np.ndarray, target: float) -> np.ndarray:
    """Vectorized :func:`_place` (all arguments (K,))."""
    return frac + np.ceil(np.float32(target - 0.5) - (g - c) * scale - frac)


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
    peak2 = np.concatenate((peak, peak))
    lo, hi = _edges(prof, peak2 * _SIZE_LEVEL)
    size = hi - lo
    long_y = size[:n] >= size[n:]
    scale = np.float32(box) / np.maximum(np.maximum(size[:n], size[n:]), np.float32(1e-3))
    lo, hi = _ink_edges(prof, peak2, np.concatenate((scale, scale)))
    mid = (lo + hi) * np.float32(0.5)  # box centers: rows then columns
    my, mx = mid[:n], mid[n:]
    # parity of the box extents in output pixels (see _normalize_one)
    ext = np.floor(np.minimum((hi - lo) * np.concatenate((scale, scale)), np.float32(box)) + np.float32(0.5))
    odd = np.float32((box % 2) * 0.5)
    fy = np.where(long_y, odd, (ext[:n] % 2) * np.float32(0.5)).astype(np.float32)
    fx = np.where(long_y, (ext[n:] % 2) * np.float32(0.5), odd).astype(np.float32)
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
            py_, px_ = _short_phase(buf, sc, cy, cx, fy[idx], fx[idx], long_y[idx], box)
            out_y = _place_batch(gy, cy, sc, py_, target)
            out_x = _place_batch(gx, cx, sc, px_, target)
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


def _cross(p: list, level: float, level_hi: float | None = None) -> tuple[float, float]:
    """Scalar :func:`_edges` on a Python list (faster for one image)."""
    if level_hi is None:
        level_hi = level
    n = len(p)
    i0 = 0
    while p[i0] <= level:
        i0 += 1
    i1 = n - 1
    while p[i1] <= level_hi:
        i1 -= 1
    pl = p[i0 - 1] if i0 > 0 else 0.0
    pr = p[i1 + 1] if i1 < n - 1 else 0.0
    return i0 - 0.5 + (level - pl) / (p[i0] - pl), i1 + 0.5 + (p[i1] - level_hi) / (p[i1] - pr)


def _nonzero_span(p: list) -> tuple[int, int]:
    """``(first, last + 1)`` of the nonzero entries of a list holding at least one."""
    i0 = 0
    while not p[i0]:
        i0 += 1
    i1 = len(p)
    while not p[i1 - 1]:
        i1 -= 1
    return i0, i1


@lru_cache(maxsize=1024)
def _moment_rows(n: int) -> np.ndarray:
    """``[ones(n), centers(n)]`` as a (2, n) float32 array (cached, read-only)."""
    m = np.stack((np.ones(n, np.float32), _centers(n)))
    m.setflags(write=False)
    return m


def _interp_one(p: list, x: float) -> float:
    """Scalar :func:`_interp` on a Python list (0 outside it)."""
    n = len(p)
    t = x - 0.5
    i = math.floor(t)
    fr = t - i
    v0 = p[i] if 0 <= i < n else 0.0
    v1 = p[i + 1] if 0 <= i + 1 < n else 0.0
    return v0 * (1.0 - fr) + v1 * fr


def _rim_one(p: list, a: float, b: float) -> float:
    """Scalar :func:`_rim` on a Python list."""
    v = max(_interp_one(p, a), _interp_one(p, b))
    i0 = max(math.ceil(a - 0.5), 0)
    i1 = min(math.floor(b - 0.5), len(p) - 1)
    if i1 >= i0:
        v = max(v, max(p[i0:i1 + 1]))
    return v


def _ink_edges_one(p: list, peak: float, scale: float) -> tuple[float, float]:
    """Sub-pixel edges of the ink along a profile (list of the brightest pixel per row or column).

    The outer edge is first found where the profile exceeds ``_EDGE_LEVEL``
    of the peak; each edge is then placed where the profile reaches half of
    its largest value within ``_EDGE_DEPTH`` output pixels (``_EDGE_DEPTH / scale``
    input pixels) further in. For an edge pixel of any brightness next to
    background this is the pixel's boundary, and it stays there when the
    image has been blurred or resampled (a symmetric blur keeps the
    half-height point), so the position does not depend on how faint the
    anti-aliased rim is.
    """
    base = max(float(_EDGE_LEVEL) * peak, 0.5)
    lo, hi = _cross(p, base)
    depth = _EDGE_DEPTH / scale
    return _cross(p, max(0.5 * _rim_one(p, lo, lo + depth), base), max(0.5 * _rim_one(p, hi - depth, hi), base))


def _short_phase_one(crop: np.ndarray, scale: float, c_long: float, c_short: float, f_long: float,
                     f_short: float, box: int) -> float:
    """:func:`_short_phase` for one crop whose short side is horizontal (pass ``crop.T`` otherwise).

    Returns the short side's fractional placement. Two :func:`weights_pair`
    calls give the long side's weights and the three candidate phases'.
    """
    base = box // 2
    p0, p1, p2 = (base + f_short + float(p) for p in _PHASES)  # _PHASES has 3 entries
    h, w = crop.shape
    w_long, w0 = _weights_pair(h, w, box, scale, c_long, base + f_long, c_short, p0, "lanczos", widen=False)
    w1, w2 = _weights_pair(w, w, box, scale, c_short, p1, c_short, p2, "lanczos", widen=False)
    rows = w_long @ crop  # (box, w)
    energy = np.array([float(np.square(rows @ wk.T).sum()) for wk in (w0, w1, w2)], np.float32)
    return float((f_short + _best_phase(energy[None])[0]) % np.float32(1))


def _place(g: float, c: float, scale: float, frac: float, target: float) -> float:
    """Output position of box center ``c`` so the center of mass ``g`` lands in the target pixel.

    The box center goes to ``frac`` + a whole number (``frac`` = 0 for an
    even box extent, 0.5 for an odd one, so the box edges fall on pixel
    boundaries, as in MNIST), chosen so the mass center is nearest
    ``target`` (the middle of pixel ``canvas // 2``); on a tie it lands on
    that pixel's upper-left boundary (pixels are half-open, ``[k, k + 1)``).
    """
    return frac + math.ceil(target - (g - c) * scale - frac - 0.5)


def _normalize_one(a: np.ndarray, box: int, canvas: int, center: str, threshold: float, resample: str,
                   stretch: bool) -> np.ndarray | None:
    """:func:`_normalize` for one (H, W) uint8 ink image; None when blank.

    Works on the crop holding all nonzero pixels (the rest is exactly 0, so
    the result is the same) and with scalar arithmetic where numpy calls
    would cost more than they save.
    """
    ry = a.max(axis=1).tolist()
    peak = max(ry)
    if peak <= threshold:
        return None
    rx = a.max(axis=0).tolist()
    r0, r1 = _nonzero_span(ry)
    c0, c1 = _nonzero_span(rx)
    ry = ry[r0:r1]
    rx = rx[c0:c1]
    size_level = float(_SIZE_LEVEL) * peak
    ylo, yhi = _cross(ry, size_level)
    xlo, xhi = _cross(rx, size_level)
    size_y, size_x = yhi - ylo, xhi - xlo
    scale = box / max(size_y, size_x, 1e-3)
    ylo, yhi = _ink_edges_one(ry, peak, scale)
    xlo, xhi = _ink_edges_one(rx, peak, scale)
    my, mx = (ylo + yhi) * 0.5, (xlo + xhi) * 0.5  # in crop coordinates
    crop = a[r0:r1, c0:c1].astype(np.float32)
    h, w = crop.shape
    if center == "mass":
        # [[sum, sum x], [sum y, sum xy]] in two small products
        (total, sum_x), (sum_y, _) = (_moment_rows(h) @ (crop @ _moment_rows(w).T)).tolist()
        gy = sum_y / total
        gx = sum_x / total
        # box extents in output pixels: the long side is ``box``; the short side's parity
        # decides whether its center sits on a pixel center or a pixel boundary
        odd = (box % 2) * 0.5
        if size_y >= size_x:
            fy, fx = odd, (math.floor(min((xhi - xlo) * scale, box) + 0.5) % 2) * 0.5
        else:
            fy, fx = (math.floor(min((yhi - ylo) * scale, box) + 0.5) % 2) * 0.5, odd
        if 1.0 / scale >= _PHASE_ZOOM:  # the ink is at least _PHASE_ZOOM times the box: see _short_phase
            if size_y >= size_x:
                fx = _short_phase_one(crop, scale, my, mx, fy, fx, box)
            else:
                fy = _short_phase_one(crop.T, scale, mx, my, fx, fy, box)
        target = canvas // 2 + 0.5
        out_y = _place(gy, my, scale, fy, target)
        out_x = _place(gx, mx, scale, fx, target)
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

    Gives the same result as calling :func:`mnist` on each image up to
    float rounding: 97% of the digits recipe's 81,095 images come out
    identical, nearly all others 1 gray level apart, a few 2; faint digits
    upscaled from 40x40 were seen 4 levels apart (the final stretch to 255
    magnifies a rounding step). ``tests/build/test_build_batch.py`` measures it.

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
