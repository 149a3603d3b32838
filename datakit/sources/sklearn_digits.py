"""scikit-learn's bundled digits (``load_digits``): 1,797 real 8x8 handwritten digits.

They ship with scikit-learn, so this source always works offline. Values are
integers 0..16 (ink counts in 4x4 blocks of the original 32x32 bitmaps).
"""
from __future__ import annotations

import os
from typing import Any, Iterator

import numpy as np

from datakit.sources._paths import check_options
from datakit.sources.base import Source, SourceItem, register_source

__all__ = ["SklearnDigitsSource"]


@register_source("sklearn-digits")
class SklearnDigitsSource(Source):
    """The 1,797 digits of :func:`sklearn.datasets.load_digits`.

    Options: none (``data_root`` is accepted and ignored).

    Items carry ``array`` (8, 8) float64 with ``meta["value_range"] = (0, 16)``,
    label ``"0"``..``"9"``, ``split`` None, ``source_ref = "sklearn-digits#<index>"``.
    """

    OPTIONS: tuple[str, ...] = ()

    def __init__(self, name: str | None = None, data_root: str | os.PathLike | None = None, **options: Any) -> None:
        super().__init__(name=name, **options)
        check_options(self.kind, name, options, self.OPTIONS)
        self.data_root = data_root

    def validate(self) -> None:
        """Check that scikit-learn (which ships the data) is installed, without importing it."""
        import importlib.util

        if importlib.util.find_spec("sklearn") is None:
            from datakit.errors import DatakitError

            raise DatakitError("source kind 'sklearn-digits' needs scikit-learn: pip install scikit-learn")

    def __len__(self) -> int:
        return 1797

    def labels(self) -> list[str]:
        return [str(d) for d in range(10)]

    def _load(self) -> tuple[np.ndarray, np.ndarray]:
        # the CSV that load_digits reads, read the same way (np.loadtxt), without importing scikit-learn
        # (about a second of a build's start-up); load_digits itself where the file is not found
        path = _bundled_file()
        if path is None:
            from sklearn.datasets import load_digits

            bunch = load_digits()
            return bunch.images, bunch.target
        import gzip

        with gzip.open(path, "rt") as fh:
            data = np.loadtxt(fh, delimiter=",")
        return data[:, :-1].reshape(-1, 8, 8), data[:, -1].astype(int)

    def iter_items(self) -> Iterator[SourceItem]:
        images, target = self._load()
        for i in range(len(target)):
            yield SourceItem(source_ref=f"sklearn-digits#{i}", label=str(int(target[i])), split=None,
                             array=images[i].copy(), meta={"index": i, "value_range": (0.0, 16.0)})


def _bundled_file():
    """scikit-learn's ``datasets/data/digits.csv.gz``, found without importing scikit-learn (None: not there)."""
    import importlib.util
    from pathlib import Path

    spec = importlib.util.find_spec("sklearn")
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        path = Path(folder) / "datasets" / "data" / "digits.csv.gz"
        if path.is_file():
            return path
    return None
