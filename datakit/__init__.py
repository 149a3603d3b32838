"""datakit: build image-classification datasets the way the classic benchmarks
were built, train conv nets on them, and audit them for dataset bias."""
from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__", "build_dataset", "open_dataset", "DatakitError"]

from datakit.errors import DatakitError


def open_dataset(path):
    """Open a dataset directory written by ``datakit build``.

    See :func:`datakit.store.dataset.open_dataset`.
    """
    from datakit.store.dataset import open_dataset as _open

    return _open(path)


def build_dataset(recipe, out, **kwargs):
    """Build (or resume, or confirm) the dataset a recipe describes.

    See :func:`datakit.build.build_dataset`.
    """
    from datakit.build import build_dataset as _build

    return _build(recipe, out, **kwargs)
