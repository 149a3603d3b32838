"""Perceptual hashing of images (64-bit DCT pHash).

The hash of an image: convert to grayscale (ITU-R 601 luma), resize to 32x32
(Pillow bilinear), take the orthonormal 2-D DCT, keep the top-left 8x8
(lowest) frequencies and set one bit per coefficient that is above the median
of the 63 non-DC coefficients. Bit 63 (the most significant) is the DC term,
then row-major order. Near-identical images (re-encoded, slightly brightened,
resized) get hashes a few bits apart; search them with :mod:`datakit.dedup`.

Examples
--------
>>> import numpy as np
>>> x = np.tile(np.arange(28, dtype=np.uint8) * 9, (28, 1))
>>> hamming(phash(x), phash(np.clip(x.astype(int) + 10, 0, 255).astype(np.uint8))) <= 2
True
>>> phash_many(np.stack([x, x.T])).dtype
dtype('uint64')
"""
from __future__ import annotations

from typing import Iterable

import numpy as np
from PIL import Image
from scipy.fft import dctn

__all__ = ["phash", "phash_many", "hamming"]

_LUMA = np.array([0.299, 0.587, 0.114])
_BATCH = 4096  # images per DCT batch (bounded memory for long iterables)


def _check_image(array: np.ndarray) -> np.ndarray:
    array = np.asarray(array)
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (3, 4)):
        raise ValueError(f"phash expects an image of shape (H, W), (H, W, 1), (H, W, 3) or (H, W, 4), "
                         f"got shape {array.shape}")
    if array.size == 0:
        raise ValueError(f"phash got an empty image (shape {array.shape})")
    if not (np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)
            or array.dtype == bool):
        raise TypeError(f"phash expects a numeric image (uint8 0..255), got dtype {array.dtype}")
    return array


def _to_gray32(array: np.ndarray) -> np.ndarray:
    """Grayscale 32x32 copy, float64, shape (32, 32)."""
    array = _check_image(array)
    if array.ndim == 3:
        array = array[..., :3].astype(np.float64) @ _LUMA
    image = Image.fromarray(np.clip(array, 0, 255).astype(np.uint8))
    if image.size != (32, 32):
        image = image.resize((32, 32), Image.BILINEAR)
    return np.asarray(image, dtype=np.float64)


def _hash_gray32(stack: np.ndarray) -> np.ndarray:
    """pHash of a stack of 32x32 grayscale images, shape (N, 32, 32) -> (N,) uint64."""
    coeffs = dctn(stack, axes=(1, 2), norm="ortho")[:, :8, :8].reshape(len(stack), 64)
    median = np.median(coeffs[:, 1:], axis=1)
    bits = coeffs > median[:, None]
    return np.packbits(bits.astype(np.uint8), axis=1).view(">u8").ravel().astype(np.uint64)


def phash(array: np.ndarray) -> int:
    """64-bit perceptual hash (DCT of a 32x32 grayscale copy, top-left 8x8 vs. median).

    Parameters
    ----------
    array : ndarray, shape (H, W), (H, W, 1), (H, W, 3) or (H, W, 4), uint8
        Values outside 0..255 are clipped; an alpha channel is ignored.

    Returns
    -------
    int in [0, 2**64)

    Raises
    ------
    ValueError
        If the array is not an image shape, or empty.
    """
    return int(_hash_gray32(_to_gray32(array)[None])[0])


def phash_many(arrays: np.ndarray | Iterable[np.ndarray]) -> np.ndarray:
    """:func:`phash` of each image, as a uint64 array (batched DCT).

    Parameters
    ----------
    arrays : ndarray, shape (N, H, W) or (N, H, W, C), or an iterable of images
        Images of one size can come as one stack; an iterable may mix sizes
        and is consumed in batches (memory stays bounded).

    Returns
    -------
    ndarray, shape (N,), uint64
        Bit-identical to ``[phash(a) for a in arrays]``.
    """
    out = []
    if isinstance(arrays, np.ndarray):
        if arrays.ndim not in (3, 4):
            raise ValueError(f"phash_many expects a stack of shape (N, H, W) or (N, H, W, C), got {arrays.shape}")
        for lo in range(0, len(arrays), _BATCH):
            chunk = arrays[lo:lo + _BATCH]
            if chunk.ndim == 4 and chunk.shape[3] in (3, 4):  # grayscale of the whole batch at once
                chunk = chunk[..., :3].astype(np.float64) @ _LUMA
            out.append(_hash_gray32(np.stack([_to_gray32(a) for a in chunk])))
    else:
        batch = []
        for a in arrays:
            batch.append(_to_gray32(a))
            if len(batch) == _BATCH:
                out.append(_hash_gray32(np.stack(batch)))
                batch = []
        if batch:
            out.append(_hash_gray32(np.stack(batch)))
    return np.concatenate(out) if out else np.zeros(0, dtype=np.uint64)


def hamming(a: int, b: int) -> int:
    """Number of differing bits between two 64-bit hashes."""
    return int(int(a) ^ int(b)).bit_count()
