"""Separable resampling as matrix products: ``out = Wy @ image @ Wx.T``.

Each weight matrix maps output pixels to input pixels through an affine map
(scale and sub-pixel offset) with an anti-aliasing filter whose support widens
when shrinking (as Pillow's ``resize`` does), so cropping, scaling and
re-centering happen in one product. Filter values come from a lookup table
(1/256 pixel steps), which keeps building the matrices cheap.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np

__all__ = ["KERNELS", "axis_weights", "weights_pair", "centers"]

_STEPS = 256  # table samples per pixel


def _triangle(x: np.ndarray) -> np.ndarray:
    return np.maximum(0.0, 1.0 - np.abs(x))


def _box(x: np.ndarray) -> np.ndarray:
    return ((x >= -0.5) & (x < 0.5)).astype(np.float64)


def _lanczos3(x: np.ndarray) -> np.ndarray:
    out = np.sinc(x) * np.sinc(x / 3.0)
    out[np.abs(x) >= 3.0] = 0.0
    return out


def _bicubic(x: np.ndarray) -> np.ndarray:
    a = -0.5
    ax = np.abs(x)
    ax2 = ax * ax
    ax3 = ax2 * ax
    return np.where(ax <= 1, (a + 2) * ax3 - (a + 3) * ax2 + 1,
                    np.where(ax < 2, a * ax3 - 5 * a * ax2 + 8 * a * ax - 4 * a, 0.0))


#: name -> (filter function, support radius at scale 1)
KERNELS = {"box": (_box, 0.5), "triangle": (_triangle, 1.0), "bicubic": (_bicubic, 2.0), "lanczos": (_lanczos3, 3.0)}


@lru_cache(maxsize=None)
def _table(kernel: str) -> tuple[np.ndarray, float]:
    """Filter sampled every 1/_STEPS pixel over [-R-1, R+1] (zero at both ends)."""
    fn, radius = KERNELS[kernel]
    r = radius + 1.0
    x = np.arange(-r * _STEPS, r * _STEPS + 1) / _STEPS
    t = fn(x).astype(np.float32)
    t[0] = t[-1] = 0.0
    t.setflags(write=False)
    return t, r


def axis_weights(n_in: int, n_out: int, scale: np.ndarray | float, center_in: np.ndarray | float,
                 center_out: np.ndarray | float, kernel: str = "triangle", widen: bool = True) -> np.ndarray:
    """Weights mapping ``n_in`` input pixels to ``n_out`` output pixels along one axis, for N images.

    Output pixel ``i`` (center ``i + 0.5``) samples the input at
    ``(i + 0.5 - center_out) / scale + center_in`` (continuous coordinates:
    pixel ``k`` covers ``[k, k + 1)``). When ``scale < 1`` the filter is
    stretched by ``1 / scale`` (anti-aliasing). Only the band of inputs under
    the filter is evaluated, then scattered into the dense matrix.

    Parameters
    ----------
    n_in, n_out : int
    scale, center_in, center_out : float or ndarray of shape (N,)
        ``scale`` > 0.
    kernel : {"box", "triangle", "bicubic", "lanczos"}
    widen : bool, default True
        False: never stretch the filter (point-sample the input through the
        interpolating filter, also when shrinking).

    Returns
    -------
    ndarray of float32, shape (N, n_out, n_in) (N = 1 for scalar arguments)
        Rows sum to 1, or are all zero where the output lies outside the input.
    """
    table, r = _table(kernel)
    scale, center_in, center_out = np.broadcast_arrays(np.asarray(scale, np.float32).ravel(),
                                                       np.asarray(center_in, np.float32).ravel(),
                                                       np.asarray(center_out, np.float32).ravel())
    n = scale.shape[0]
    fs = np.minimum(scale, np.float32(1.0)) if widen else np.ones_like(scale)
    y = ((np.arange(n_out, dtype=np.float32)[None, :] + np.float32(0.5) - center_out[:, None]) / scale[:, None]
         + center_in[:, None])  # (n, n_out): input coordinate each output pixel samples
    reach = np.float32(r - 1.0) / fs  # filter radius in input pixels
    taps = int(np.ceil(2.0 * float(reach.max()))) + 2
    start = np.floor(y - np.float32(0.5) - reach[:, None]).astype(np.int32) + 1
    k = start[:, :, None] + np.arange(taps, dtype=np.int32)  # (n, n_out, taps) input pixel indices
    x = (k.astype(np.float32) + np.float32(0.5) - y[:, :, None]) * (fs * np.float32(_STEPS))[:, None, None]
    x += np.float32(r * _STEPS + 0.5)
    np.clip(x, 0, len(table) - 1, out=x)
    w = table.take(x.astype(np.int32))
    # normalize over all taps, inside the image or not: outside pixels count as 0 (background),
    # so an output pixel beyond the input's edge fades out instead of copying the edge pixel
    s = w.sum(axis=2, keepdims=True)
    w /= np.where(s > 1e-6, s, np.float32(np.inf))
    w *= (k >= 0) & (k < n_in)
    pad = taps + 1  # out-of-range taps (weight 0) land in padding columns, sliced off below
    np.clip(k, -pad, n_in + pad - 1, out=k)
    k += pad
    full = np.zeros((n, n_out, n_in + 2 * pad), np.float32)
    np.put_along_axis(full, k, w, axis=2)
    return np.ascontiguousarray(full[:, :, pad:pad + n_in])


@lru_cache(maxsize=1024)
def centers(n: int) -> np.ndarray:
    """Pixel centers ``0.5, 1.5, ..., n - 0.5`` as float32 (cached, read-only)."""
    c = np.arange(n, dtype=np.float32) + np.float32(0.5)
    c.setflags(write=False)
    return c


@lru_cache(maxsize=64)
def _wide_table(kernel: str, half: int) -> np.ndarray:
    """The filter sampled every 1/_STEPS pixel over [-half, half] (zero outside its support), read-only."""
    fn, radius = KERNELS[kernel]
    x = np.arange(-half * _STEPS, half * _STEPS + 1) / _STEPS
    t = fn(x).astype(np.float32)
    t[np.abs(x) >= radius] = 0.0
    t.setflags(write=False)
    return t


def weights_pair(n_rows: int, n_cols: int, n_out: int, scale: float, center_rows: float, out_rows: float,
                 center_cols: float, out_cols: float, kernel: str = "triangle",
                 widen: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """:func:`axis_weights` for both axes of one image, with as few numpy calls as possible.

    The filter is symmetric, so the table is indexed by ``(y_i - k - 0.5) * fs``
    directly; the table is made wide enough for every index that can occur,
    so nothing needs clipping. Outside pixels count as 0 (see :func:`axis_weights`).

    ``widen=False``: the filter is not stretched when shrinking (as :func:`axis_weights`).
    Returns ``(wy, wx)``: (n_out, n_rows) and (n_out, n_cols) float32.
    """
    radius = KERNELS[kernel][1]
    fs = min(scale, 1.0) if widen else 1.0
    pad = int(radius / fs) + 2  # virtual zero pixels beyond each edge
    n_in = max(n_rows, n_cols)
    inv = 1.0 / scale
    # input coordinate sampled by the first and last output pixel, both axes
    y_first = min(center_rows - out_rows * inv, center_cols - out_cols * inv) + 0.5 * inv
    y_last = max(center_rows - out_rows * inv, center_cols - out_cols * inv) + (n_out - 0.5) * inv
    reach = max(abs(y_last + pad), abs(n_in + pad - y_first)) * fs + 2  # largest |y_i - c_k| * fs
    half = 1 << max(4, int(reach).bit_length())
    if half > 8192:  # a huge image: fall back to the clipped, small-table path
        wy = axis_weights(n_rows, n_out, scale, center_rows, out_rows, kernel, widen)[0]
        wx = axis_weights(n_cols, n_out, scale, center_cols, out_cols, kernel, widen)[0]
        return wy, wx
    table = _wide_table(kernel, half)
    f = fs * _STEPS
    # table index of (y_i - c_k) * fs, shifted by half * _STEPS, + 0.5 to round
    first = np.float32(f * inv) * centers(n_out)
    rows = np.add.outer(np.array([f * (center_rows - out_rows * inv), f * (center_cols - out_cols * inv)],
                                 np.float32) + np.float32(half * _STEPS + 0.5), first).ravel()
    cols = centers(n_in + 2 * pad) * np.float32(f)
    cols -= np.float32(pad * f)
    w = table.take(np.subtract.outer(rows, cols).astype(np.int32))
    s = w.sum(axis=1, keepdims=True)
    s += np.float32(1e-12)  # rows outside the input sum to exactly 0 and stay 0
    w /= s
    return w[:n_out, pad:pad + n_rows], w[n_out:, pad:pad + n_cols]
