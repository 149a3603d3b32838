"""Perceptual hash (datakit.hashing): stability under re-encoding, separation of different images."""
from __future__ import annotations

import gzip
import io

import numpy as np
import pytest
from PIL import Image
from sklearn.datasets import load_digits

from datakit.dedup import popcount64
from datakit.hashing import hamming, phash, phash_many


@pytest.fixture(scope="module")
def mnist_test(shared_data) -> np.ndarray:
    """The first 400 real MNIST test digits, shape (400, 28, 28), uint8."""
    with gzip.open(shared_data / "mnist" / "t10k-images-idx3-ubyte.gz") as fh:
        return np.frombuffer(fh.read(), np.uint8, offset=16).reshape(-1, 28, 28)[:400].copy()


def _jpeg(a: np.ndarray, quality: int) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, "JPEG", quality=quality)
    with Image.open(buf) as im:
        return np.asarray(im)


def test_phash_many_is_bit_identical_to_phash():
    rng = np.random.default_rng(0)
    gray = rng.integers(0, 256, (20, 28, 28), dtype=np.uint8)
    rgb = rng.integers(0, 256, (10, 40, 30, 3), dtype=np.uint8)
    for stack in (gray, rgb):
        want = np.array([phash(a) for a in stack], dtype=np.uint64)
        np.testing.assert_array_equal(phash_many(stack), want)
    mixed = [gray[0], rgb[0], rgb[1][..., :1], np.dstack([rgb[2], np.full((40, 30), 255, np.uint8)])]
    got = phash_many(iter(mixed))
    assert got.dtype == np.uint64 and got.shape == (4,)
    assert got[0] == phash(gray[0]) and got[1] == phash(rgb[0])
    assert got[2] == phash(rgb[1][..., 0])  # (H, W, 1) is grayscale
    assert got[3] == phash(rgb[2])  # alpha ignored
    assert phash_many([]).shape == (0,)


def test_phash_stable_under_reencoding_on_real_mnist(mnist_test):
    h = phash_many(mnist_test)
    variants = {
        "jpeg q90": [_jpeg(a, 90) for a in mnist_test],
        "brightened +10": [np.clip(a.astype(int) + 10, 0, 255).astype(np.uint8) for a in mnist_test],
        "upscaled 2x": [np.asarray(Image.fromarray(a).resize((56, 56), Image.BICUBIC)) for a in mnist_test],
        "png round trip": [np.asarray(Image.open(io.BytesIO(_png(a)))) for a in mnist_test],
    }
    for name, images in variants.items():
        d = popcount64(h ^ phash_many(images))
        assert np.median(d) <= 2, name
        assert np.mean(d <= 4) >= 0.9, name
    np.testing.assert_array_equal(popcount64(h ^ phash_many(variants["png round trip"])), 0)


def _png(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, "PNG")
    return buf.getvalue()


def test_different_real_digits_are_far_apart(mnist_test):
    h = phash_many(mnist_test)
    rng = np.random.default_rng(1)
    i, j = rng.integers(0, len(h), 2000), rng.integers(0, len(h), 2000)
    keep = i != j
    d = popcount64(h[i[keep]] ^ h[j[keep]])
    assert np.median(d) >= 20
    assert np.mean(d <= 4) < 0.01  # distinct test digits almost never look like copies at the default threshold


def test_sklearn_digits_stable_and_separated():
    """Offline real data (scikit-learn's 8x8 digits), no skip."""
    x = (load_digits().images[:300] * 16).clip(0, 255).astype(np.uint8)
    h = phash_many(x)
    bright = phash_many(np.clip(x.astype(int) + 8, 0, 255).astype(np.uint8))
    assert np.median(popcount64(h ^ bright)) <= 2
    d = popcount64(h[:150] ^ h[150:])
    assert np.median(d) >= 16


def test_hamming_and_errors():
    assert hamming(0, 2**64 - 1) == 64
    assert hamming(0b1010, 0b0110) == 2
    with pytest.raises(ValueError, match="shape"):
        phash(np.zeros((4, 4, 2), np.uint8))
    with pytest.raises(ValueError, match="empty"):
        phash(np.zeros((0, 5), np.uint8))
    with pytest.raises(ValueError, match=r"stack of shape \(N, H, W\)"):
        phash_many(np.zeros((5, 5), np.uint8))
    with pytest.raises(TypeError, match="numeric image"):
        phash(np.array([["a", "b"], ["c", "d"]]))
