"""Perceptual hashing of images (64-bit DCT pHash)."""
from __future__ import annotations

import numpy as np
from PIL import Image
from scipy.fft import dctn

__all__ = ["phash", "phash_many", "hamming"]


def _to_gray32(array: np.ndarray) -> np.ndarray:
    if array.ndim == 3:
        array = array[..., :3].astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    image = Image.fromarray(np.clip(array, 0, 255).astype(np.uint8))
    return np.asarray(image.resize((32, 32), Image.BILINEAR), dtype=np.float64)


def phash(array: np.ndarray) -> int:
    """64-bit perceptual hash (DCT of a 32x32 grayscale copy, top-left 8x8 vs. median).

    Parameters
    ----------
    array : ndarray, shape (H, W) or (H, W, C), uint8

    Returns
    -------
    int in [0, 2**64)
    """
    coeffs = dctn(_to_gray32(array), norm="ortho")[:8, :8].ravel()
    median = np.median(coeffs[1:])
    bits = coeffs > median
    return int(np.packbits(bits.astype(np.uint8)).view(">u8")[0])


def phash_many(arrays) -> np.ndarray:
    """:func:`phash` of each array, as a uint64 array."""
    return np.fromiter((phash(a) for a in arrays), dtype=np.uint64)


def hamming(a: int, b: int) -> int:
    """Number of differing bits between two 64-bit hashes."""
    return int(int(a) ^ int(b)).bit_count()
