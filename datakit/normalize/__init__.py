"""Normalization styles (MNIST, USPS, Caltech resize, none): pure functions on arrays."""
from datakit.registry import Registry

__all__ = ["NORMALIZERS"]

#: name -> function ``f(image, **options) -> ndarray`` (uint8, (H, W) or (H, W, 3));
#: raises ``ImageRejected("blank")`` for an image with no ink.
NORMALIZERS = Registry("normalizer")
