"""64-bit hashes: popcount and the checks every search entry point makes.

:func:`popcount64` counts the set bits of uint64 values (the Hamming
distance of two hashes is ``popcount64(a ^ b)``); the ``_check_*`` helpers
validate hash arrays, radii and ``n_jobs`` with the errors the public
functions document, and :func:`_index_dtype` picks int32 indices below
2**31 items.
"""
from __future__ import annotations

import os

import numpy as np

__all__ = ["MAX_DISTANCE", "popcount64"]

#: Largest supported search radius (bits out of 64).
MAX_DISTANCE = 32

_BYTE_POP = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)


def popcount64(x: np.ndarray) -> np.ndarray:
    """Number of set bits of each element.

    Parameters
    ----------
    x : ndarray of uint64, any shape

    Returns
    -------
    ndarray of uint8, same shape as ``x``

    Examples
    --------
    >>> popcount64(np.array([0, 7, 2**63], dtype=np.uint64))
    array([0, 3, 1], dtype=uint8)
    """
    x = np.asarray(x, dtype=np.uint64)
    if hasattr(np, "bitwise_count"):  # numpy >= 2.0
        return np.bitwise_count(x)
    return _BYTE_POP[np.ascontiguousarray(x).view(np.uint8).reshape(*x.shape, 8)].sum(-1, dtype=np.uint8)


def _check_hashes(hashes, name: str) -> np.ndarray:
    array = np.asarray(hashes)
    if array.dtype != np.uint64:
        if array.size == 0 and array.ndim == 1:
            return np.zeros(0, dtype=np.uint64)
        raise TypeError(
            f"{name} must be a 1-D uint64 array of 64-bit hashes, got dtype {array.dtype}. "
            "Convert with np.asarray(values, dtype=np.uint64) (a manifest's `phash` column is uint64)."
        )
    if array.ndim != 1:
        raise ValueError(f"{name} must be 1-D (one hash per item), got shape {array.shape}")
    return np.ascontiguousarray(array)


def _check_distance(max_distance) -> int:
    if isinstance(max_distance, (bool, np.bool_)) or not isinstance(max_distance, (int, np.integer)):
        raise TypeError(f"max_distance must be an int in 0..{MAX_DISTANCE}, got {max_distance!r}")
    if not 0 <= int(max_distance) <= MAX_DISTANCE:
        raise ValueError(f"max_distance must be in 0..{MAX_DISTANCE} (bits out of 64), got {max_distance}")
    return int(max_distance)


def _check_jobs(n_jobs) -> int:
    """scikit-learn's convention: None = 1, -1 = every core, k > 0 = k threads."""
    if n_jobs is None:
        return 1
    if isinstance(n_jobs, bool) or not isinstance(n_jobs, (int, np.integer)) or n_jobs == 0 or n_jobs < -1:
        raise ValueError(f"n_jobs must be None, -1 or a positive int, got {n_jobs!r}")
    return (os.cpu_count() or 1) if n_jobs == -1 else int(n_jobs)


def _index_dtype(*sizes: int):
    return np.int32 if max(sizes) < 2**31 else np.int64
