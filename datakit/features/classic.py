"""Classic descriptors, as Torralba & Efros ("Unbiased look at dataset bias", CVPR 2011) used them.

``hog``
    Histograms of oriented gradients (Dalal & Triggs 2005) of the greyscale
    image, computed by :func:`skimage.feature.hog`: 1,764 values at the
    default 64x64, 9 orientations, 8x8-pixel cells, 2x2-cell blocks, L2-Hys.
``color_hist``
    Joint colour histograms (HSV by default, or CIE Lab or RGB) of the whole
    image and of a 2x2 grid of it, each L1-normalized: 5 x 72 = 360 values.
``gist``
    A GIST-like descriptor (Oliva & Torralba 2001, after Torralba's ``LMgist``):
    the greyscale image, pre-filtered (whitened and locally contrast-normalized),
    filtered by a bank of Gabor transfer functions (4 scales x 8 orientations)
    in the frequency domain, the energy (magnitude) averaged over a 4x4 grid:
    512 values.
``tiny``
    Torralba's tiny images (Torralba, Fergus & Freeman 2008): the image at
    16x16 in colour, zero mean and unit L2 norm: 768 values.

Every extractor takes uint8 images of any content (blank, upsampled from 1x1,
greyscale) and returns finite float32 values. The batch is processed at once
with numpy and scipy.fft, except HOG: one :func:`skimage.feature.hog` call per
image, about 1,400 images per CPU-second at 64x64 on the 2-core development
machine (``bench/results/features.md``).

Examples
--------
>>> import numpy as np
>>> from datakit.features import get_extractor
>>> images = np.random.default_rng(0).integers(0, 256, (2, 64, 64, 3), dtype=np.uint8)
>>> [get_extractor(n).transform(images).shape for n in ("hog", "color_hist", "gist")]
[(2, 1764), (2, 360), (2, 512)]
>>> get_extractor("tiny").transform(images[:, :16, :16]).shape
(2, 768)
"""
from __future__ import annotations

import functools
import logging
from typing import Any, Sequence

import numpy as np

from datakit.features.base import FeatureError, FeatureExtractor, register_feature

__all__ = ["HOGFeatures", "ColorHistogram", "GistFeatures", "TinyImage", "gabor_bank", "HOG_BLOCK_NORMS",
           "COLOR_SPACES"]

logger = logging.getLogger(__name__)

#: ``block_norm`` values :func:`skimage.feature.hog` accepts
HOG_BLOCK_NORMS = ("L1", "L1-sqrt", "L2", "L2-Hys")
#: colour spaces of :class:`ColorHistogram`, with each channel's value range (the sRGB gamut for Lab)
COLOR_SPACES: dict[str, tuple[tuple[float, float], ...]] = {
    "hsv": ((0.0, 1.0), (0.0, 1.0), (0.0, 1.0)),
    "lab": ((0.0, 100.0), (-87.0, 99.0), (-108.0, 95.0)),
    "rgb": ((0.0, 256.0), (0.0, 256.0), (0.0, 256.0)),
}


# --------------------------------------------------------------------------- helpers

def _int_at_least(ext: FeatureExtractor, name: str, value: Any, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise FeatureError(f"{ext.name}: {name} must be an integer >= {low}, got {value!r}")


def _one_of(ext: FeatureExtractor, name: str, value: Any, valid: Sequence[str]) -> None:
    if not isinstance(value, str) or value not in valid:
        shown = ", ".join(repr(v) for v in valid)
        raise FeatureError(f"{ext.name}: unknown value {value!r} for {name}. Valid values are {{{shown}}}.")


def _int_tuple(ext: FeatureExtractor, name: str, value: Any, length: int | None, low: int) -> tuple[int, ...]:
    """``value`` as a tuple of ints >= ``low`` (an int is repeated ``length`` times)."""
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool) and length is not None:
        value = (value,) * length
    ok = isinstance(value, (tuple, list)) and len(value) > 0 and (length is None or len(value) == length)
    ok = ok and all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v >= low for v in value)
    if not ok:
        what = f"an integer or {length} integers" if length is not None else "a non-empty sequence of integers"
        raise FeatureError(f"{ext.name}: {name} must be {what} >= {low}, got {value!r}")
    return tuple(int(v) for v in value)


def _as_batch(ext: FeatureExtractor, images: np.ndarray) -> np.ndarray:
    """Check a batch: uint8, (N, H, W) or (N, H, W, 3)."""
    images = np.asarray(images)
    if images.ndim not in (3, 4) or (images.ndim == 4 and images.shape[3] != 3):
        raise FeatureError(f"{ext.name}: expected images of shape (N, H, W) or (N, H, W, 3), got {images.shape}")
    if images.dtype != np.uint8:
        raise FeatureError(f"{ext.name}: expected uint8 images (0..255), got dtype {images.dtype}; "
                           "decode them with datakit.features.decode_for_features")
    return images


def _grey(images: np.ndarray) -> np.ndarray:
    """(N, H, W[, 3]) uint8 -> (N, H, W) float32 in 0..255.

    RGB becomes ITU-R 601-2 luma rounded exactly as Pillow's ``convert("L")``
    does, so an RGB batch gives the same features as the same images decoded in mode L.
    """
    if images.ndim == 3:
        return images.astype(np.float32)
    r, g, b = (images[..., i].astype(np.uint32) for i in range(3))
    return ((r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16).astype(np.float32)


def _rgb(images: np.ndarray) -> np.ndarray:
    """(N, H, W[, 3]) -> (N, H, W, 3), greyscale repeated."""
    return images if images.ndim == 4 else np.repeat(images[..., None], 3, axis=3)


def _block_means(x: np.ndarray, grid: int) -> np.ndarray:
    """Mean of (N, H, W) over a ``grid`` x ``grid`` layout (``LMgist``'s ``downN`` boundaries) -> (N, grid, grid)."""
    _, h, w = x.shape
    ys = np.linspace(0, h, grid + 1).astype(int)
    xs = np.linspace(0, w, grid + 1).astype(int)
    s = np.add.reduceat(np.add.reduceat(x, ys[:-1], axis=1), xs[:-1], axis=2)
    return s / (np.diff(ys)[:, None] * np.diff(xs)[None, :])


# --------------------------------------------------------------------------- HOG

@register_feature("hog")
class HOGFeatures(FeatureExtractor):
    """HOG of the greyscale image (:func:`skimage.feature.hog`).

    Parameters
    ----------
    size : int, default 64
        Images are decoded to ``size`` x ``size`` greyscale first.
    orientations : int, default 9
        Unsigned gradient orientation bins over 0-180 degrees.
    pixels_per_cell : int, default 8
        Square cells of this many pixels on a side.
    cells_per_block : int, default 2
        Square blocks of this many cells on a side (blocks overlap by one cell).
    block_norm : {"L1", "L1-sqrt", "L2", "L2-Hys"}, default "L2-Hys"

    Notes
    -----
    The output has ``orientations * cells_per_block**2 * (c - cells_per_block + 1)**2``
    values, ``c = size // pixels_per_cell``: 1,764 at the defaults.

    Examples
    --------
    >>> import numpy as np
    >>> ext = HOGFeatures(orientations=6)
    >>> ext.transform(np.zeros((3, 64, 64), np.uint8)).shape   # blank images: zeros, never NaN
    (3, 1176)
    """

    parallel = True
    mode = "L"

    def __init__(self, *, size: int = 64, orientations: int = 9, pixels_per_cell: int = 8,
                 cells_per_block: int = 2, block_norm: str = "L2-Hys") -> None:
        self.size = size
        self.orientations = orientations
        self.pixels_per_cell = pixels_per_cell
        self.cells_per_block = cells_per_block
        self.block_norm = block_norm

    def check(self) -> None:
        super().check()
        _int_at_least(self, "orientations", self.orientations, 2)
        _int_at_least(self, "pixels_per_cell", self.pixels_per_cell, 1)
        _int_at_least(self, "cells_per_block", self.cells_per_block, 1)
        _one_of(self, "block_norm", self.block_norm, HOG_BLOCK_NORMS)
        block = self.pixels_per_cell * self.cells_per_block
        if self.size < block:
            raise FeatureError(f"{self.name}: size {self.size} is smaller than one block "
                               f"(pixels_per_cell * cells_per_block = {block} px); use size >= {block}")

    def dim(self, height: int, width: int) -> int:
        """Number of values for an ``height`` x ``width`` image."""
        by = height // self.pixels_per_cell - self.cells_per_block + 1
        bx = width // self.pixels_per_cell - self.cells_per_block + 1
        return max(by, 0) * max(bx, 0) * self.cells_per_block ** 2 * self.orientations

    def transform(self, images: np.ndarray) -> np.ndarray:
        """HOG of each image.

        Parameters
        ----------
        images : ndarray, shape (N, size, size) or (N, size, size, 3), uint8
            RGB images are turned to greyscale (luma) first.

        Returns
        -------
        ndarray, shape (N, d), float32
        """
        from skimage.feature import hog

        grey = _grey(_as_batch(self, images))
        out = np.empty((len(grey), self.dim(*grey.shape[1:])), np.float32)
        cell, block = (self.pixels_per_cell,) * 2, (self.cells_per_block,) * 2
        for i, image in enumerate(grey):
            out[i] = hog(image, orientations=self.orientations, pixels_per_cell=cell, cells_per_block=block,
                         block_norm=self.block_norm, feature_vector=True)
        return out


# --------------------------------------------------------------------------- colour histograms

@register_feature("color_hist")
class ColorHistogram(FeatureExtractor):
    """Joint colour histograms of the whole image and of coarser-to-finer grids, each L1-normalized.

    Parameters
    ----------
    size : int, default 64
        Images are decoded to ``size`` x ``size`` RGB first.
    space : {"hsv", "lab", "rgb"}, default "hsv"
        Colour space (scikit-image's ``rgb2hsv`` / ``rgb2lab``). Bins are equal
        parts of each channel's range (:data:`COLOR_SPACES`; for Lab, the sRGB gamut).
    bins : int or (int, int, int), default (8, 3, 3)
        Bins per channel (hue, saturation, value for HSV); the joint histogram
        has their product (72) bins. Achromatic pixels (greyscale images) fall
        in the lowest-saturation bins, with hue 0.
    grid : sequence of int, default (1, 2)
        Spatial layout: a ``g`` x ``g`` grid of blocks for each ``g`` (the
        default: the whole image, then its 4 quarters).

    Notes
    -----
    The output has ``prod(bins) * sum(g * g for g in grid)`` values (360 at the
    defaults), block by block (grids in order, blocks in row-major order), and
    each block's histogram sums to 1.

    Examples
    --------
    >>> import numpy as np
    >>> red = np.zeros((1, 64, 64, 3), np.uint8); red[..., 0] = 255
    >>> h = ColorHistogram(bins=4, grid=(1,)).transform(red)
    >>> h.shape, float(h.sum()), int(h.argmax())   # all in one bin: hue 0, saturation 1, value 1
    ((1, 64), 1.0, 15)
    """

    parallel = True

    def __init__(self, *, size: int = 64, space: str = "hsv", bins: int | Sequence[int] = (8, 3, 3),
                 grid: Sequence[int] = (1, 2)) -> None:
        self.size = size
        self.space = space
        self.bins = bins
        self.grid = grid

    def check(self) -> None:
        super().check()
        _one_of(self, "space", self.space, tuple(COLOR_SPACES))
        _int_tuple(self, "bins", self.bins, 3, 1)
        grid = _int_tuple(self, "grid", self.grid, None, 1)
        if self.size is not None and max(grid) > self.size:
            raise FeatureError(f"{self.name}: grid {max(grid)} is finer than the image ({self.size} px)")

    def transform(self, images: np.ndarray) -> np.ndarray:
        """Colour histograms of each image.

        Parameters
        ----------
        images : ndarray, shape (N, size, size, 3) or (N, size, size), uint8

        Returns
        -------
        ndarray, shape (N, prod(bins) * sum(g**2 for g in grid)), float32
            Each block of ``prod(bins)`` values sums to 1.
        """
        from skimage import color

        bins = _int_tuple(self, "bins", self.bins, 3, 1)
        grid = _int_tuple(self, "grid", self.grid, None, 1)
        rgb = _rgb(_as_batch(self, images))
        n, h, w = rgb.shape[:3]
        nbins, ncells = int(np.prod(bins)), sum(g * g for g in grid)
        if n == 0:
            return np.zeros((0, nbins * ncells), np.float32)
        if self.space == "hsv":
            x = color.rgb2hsv(rgb)
        elif self.space == "lab":
            x = color.rgb2lab(rgb)
        else:
            x = rgb.astype(np.float32)
        joint = np.zeros((n, h, w), np.int64)
        for c, (b, (lo, hi)) in enumerate(zip(bins, COLOR_SPACES[self.space])):
            idx = np.clip(np.floor((x[..., c] - lo) * (b / (hi - lo))), 0, b - 1).astype(np.int64)
            joint = joint * b + idx
        out = np.empty((n, ncells, nbins), np.float64)
        start = 0
        rows, cols = np.arange(h), np.arange(w)
        for g in grid:
            cell = (rows * g // h)[:, None] * g + (cols * g // w)[None, :]          # (H, W) block of each pixel
            key = (np.arange(n)[:, None, None] * (g * g) + cell[None]) * nbins + joint
            counts = np.bincount(key.ravel(), minlength=n * g * g * nbins).reshape(n, g * g, nbins)
            out[:, start:start + g * g] = counts / counts.sum(axis=2, keepdims=True)
            start += g * g
        return out.reshape(n, -1).astype(np.float32)


# --------------------------------------------------------------------------- GIST

def _prefilter(x: np.ndarray, fc: float) -> np.ndarray:
    """``LMgist``'s ``prefilt``: log, whitening and local contrast normalization of (N, H, W) in 0..255."""
    import scipy.fft

    w = 5
    n, h, wd = x.shape
    x = np.log1p(x.astype(np.float32))
    x = np.pad(x, ((0, 0), (w, w), (w, w)), mode="symmetric")
    side = max(h, wd) + 2 * w
    side += side % 2
    x = np.pad(x, ((0, 0), (0, side - x.shape[1]), (0, side - x.shape[2])), mode="symmetric")
    s1 = fc / np.sqrt(np.log(2))
    fy = np.fft.fftfreq(side)[:, None] * side
    fx = np.fft.rfftfreq(side)[None, :] * side
    gf = np.exp(-(fx ** 2 + fy ** 2) / s1 ** 2).astype(np.float32)
    gf[gf < 1e-10] = 0.0  # no float32 subnormals (slow)
    shape = (side, side)
    out = x - scipy.fft.irfft2(scipy.fft.rfft2(x) * gf, s=shape)
    local_std = np.sqrt(np.abs(scipy.fft.irfft2(scipy.fft.rfft2(out ** 2) * gf, s=shape)))
    out = out / (0.2 + local_std)
    return out[:, w:w + h, w:w + wd]


@functools.lru_cache(maxsize=8)
def gabor_bank(side: int, scales: int, orientations: int) -> np.ndarray:
    """``LMgist``'s ``createGabor``: Gabor transfer functions on a ``side`` x ``side`` FFT grid.

    Filter ``k = scale * orientations + j`` has peak frequency ``0.3 / 1.85**scale``
    cycles per pixel (scale 0 is the finest) at angle ``pi * j / orientations``
    from the horizontal frequency axis (j = 0 responds to vertical stripes).

    Returns
    -------
    ndarray, shape (scales * orientations, side, side), float32
        In unshifted FFT order (frequency 0 at [0, 0]); read-only (shared).
    """
    f = np.fft.fftfreq(side) * side
    fx, fy = f[None, :], f[:, None]
    fr = np.sqrt(fx ** 2 + fy ** 2)
    theta = np.arctan2(fy, fx)
    bank = np.empty((scales * orientations, side, side), np.float32)
    sharp = 16 * orientations ** 2 / 32 ** 2
    for s in range(scales):
        f0 = 0.3 / 1.85 ** s
        for j in range(orientations):
            tr = theta + np.pi * j / orientations
            tr = tr + 2 * np.pi * (tr < -np.pi) - 2 * np.pi * (tr > np.pi)
            bank[s * orientations + j] = np.exp(-10 * 0.35 * (fr / side / f0 - 1) ** 2 - 2 * sharp * np.pi * tr ** 2)
    bank[bank < 1e-10] = 0.0  # no float32 subnormals: they slow the products and FFTs several-fold
    bank.setflags(write=False)
    return bank


@register_feature("gist")
class GistFeatures(FeatureExtractor):
    """GIST-like Gabor energy descriptor of the greyscale image (after Torralba's ``LMgist``).

    Parameters
    ----------
    size : int, default 64
        Images are decoded to ``size`` x ``size`` greyscale first.
    scales : int, default 4
        Gabor scales, peak frequencies ``0.3 / 1.85**s`` cycles per pixel.
    orientations : int, default 8
        Orientations per scale, ``pi * j / orientations``.
    grid : int, default 4
        The filter energy is averaged over a ``grid`` x ``grid`` layout.
    prefilter : float or None, default 4.0
        ``LMgist``'s ``fc_prefilt`` (cycles per image) for the whitening and
        local contrast normalization; None turns pre-filtering off.

    Notes
    -----
    Each image is stretched to 0..255 (a blank image stays 0), pre-filtered,
    padded symmetrically by ``size // 4`` pixels (LMgist: a fixed 32 px),
    Fourier transformed once, and multiplied by each transfer function of
    :func:`gabor_bank`; the magnitude of the inverse transform, cropped to the
    image, is averaged per grid cell. The output has
    ``scales * orientations * grid**2`` values (512 at the defaults), ordered
    (scale, orientation, grid row, grid column).

    Examples
    --------
    >>> import numpy as np
    >>> x = np.arange(64)
    >>> vertical = np.tile(127 + 127 * np.sin(2 * np.pi * x / 8), (64, 1)).astype(np.uint8)
    >>> g = GistFeatures().transform(np.stack([vertical, vertical.T])).reshape(2, 4, 8, 16)
    >>> g.sum(axis=(1, 3)).argmax(axis=1).tolist()   # strongest orientation: 0 vs 90 degrees
    [0, 4]
    """

    parallel = True
    mode = "L"

    def __init__(self, *, size: int = 64, scales: int = 4, orientations: int = 8, grid: int = 4,
                 prefilter: float | None = 4.0) -> None:
        self.size = size
        self.scales = scales
        self.orientations = orientations
        self.grid = grid
        self.prefilter = prefilter

    def check(self) -> None:
        super().check()
        _int_at_least(self, "scales", self.scales, 1)
        _int_at_least(self, "orientations", self.orientations, 1)
        _int_at_least(self, "grid", self.grid, 1)
        if self.size is not None and self.grid > self.size:
            raise FeatureError(f"{self.name}: grid {self.grid} is finer than the image ({self.size} px)")
        p = self.prefilter
        if p is not None and (isinstance(p, bool) or not isinstance(p, (int, float, np.number))
                              or not np.isfinite(p) or p <= 0):
            raise FeatureError(f"{self.name}: prefilter must be a positive number (cycles per image) or None, "
                               f"got {p!r}")

    def transform(self, images: np.ndarray) -> np.ndarray:
        """GIST of each image.

        Parameters
        ----------
        images : ndarray, shape (N, size, size) or (N, size, size, 3), uint8
            RGB images are turned to greyscale (luma) first.

        Returns
        -------
        ndarray, shape (N, scales * orientations * grid**2), float32
        """
        import scipy.fft

        x = _grey(_as_batch(self, images))
        n, h, w = x.shape
        nf = self.scales * self.orientations
        if n == 0:
            return np.zeros((0, nf * self.grid ** 2), np.float32)
        lo = x.min(axis=(1, 2), keepdims=True)
        span = x.max(axis=(1, 2), keepdims=True) - lo
        x = np.where(span > 0, (x - lo) * (255.0 / np.where(span > 0, span, 1.0)), 0.0).astype(np.float32)
        if self.prefilter is not None:
            x = _prefilter(x, float(self.prefilter))
        pad = max(h, w) // 4
        side = max(h, w) + 2 * pad
        x = np.pad(x, ((0, 0), (pad, pad + side - 2 * pad - h), (pad, pad + side - 2 * pad - w)), mode="symmetric")
        spectrum = scipy.fft.fft2(x.astype(np.float32))
        out = np.empty((n, nf, self.grid, self.grid), np.float32)
        for k, g in enumerate(gabor_bank(side, self.scales, self.orientations)):
            energy = np.abs(scipy.fft.ifft2(spectrum * g, overwrite_x=True)[:, pad:pad + h, pad:pad + w])
            out[:, k] = _block_means(energy, self.grid)
        return out.reshape(n, -1)


# --------------------------------------------------------------------------- tiny images

@register_feature("tiny")
class TinyImage(FeatureExtractor):
    """Torralba's tiny images: the downsampled image, zero mean and unit L2 norm.

    Parameters
    ----------
    size : int, default 16
        Images are decoded to ``size`` x ``size`` (Pillow's anti-aliased
        bilinear filter); Torralba, Fergus & Freeman used 32.
    mode : {"RGB", "L"}, default "RGB"

    Notes
    -----
    ``size * size * 3`` values for RGB (768 at the default), in (row, column,
    channel) order. A blank image (no variation) gives zeros, not NaN.

    Examples
    --------
    >>> import numpy as np
    >>> v = TinyImage().transform(np.random.default_rng(0).integers(0, 256, (2, 16, 16, 3), dtype=np.uint8))
    >>> v.shape, np.round(np.linalg.norm(v, axis=1), 5).tolist(), bool(np.all(np.abs(v.mean(axis=1)) < 1e-6))
    ((2, 768), [1.0, 1.0], True)
    """

    parallel = True

    def __init__(self, *, size: int = 16, mode: str = "RGB") -> None:
        self.size = size
        self.mode = mode

    def check(self) -> None:
        super().check()  # size >= 8, mode in {"RGB", "L"}

    def transform(self, images: np.ndarray) -> np.ndarray:
        """Tiny-image vectors.

        Parameters
        ----------
        images : ndarray, shape (N, size, size, 3) for RGB or (N, size, size) for L, uint8

        Returns
        -------
        ndarray, shape (N, size * size * channels), float32
            Zero mean, unit L2 norm per row (zeros for a blank image).
        """
        images = _as_batch(self, images)
        if self.mode == "L" and images.ndim == 4:
            images = _grey(images)
        elif self.mode == "RGB":
            images = _rgb(images)
        x = images.reshape(len(images), int(np.prod(images.shape[1:]))).astype(np.float64)
        x -= x.mean(axis=1, keepdims=True)
        norm = np.linalg.norm(x, axis=1, keepdims=True)
        x = np.divide(x, norm, out=np.zeros_like(x), where=norm > 1e-9)
        return x.astype(np.float32)
