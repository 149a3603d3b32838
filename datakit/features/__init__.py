"""Feature spaces for the audits: classic descriptors, learned and pretrained conv nets.

Each extractor is registered by name (``datakit audit --features NAME``,
:func:`list_features`) and turns a dataset's images into an (n, d) float32
matrix in manifest order through :func:`extract_features`, which computes in
batches through the executor and caches the result in the dataset directory.

Examples
--------
>>> from datakit.features import list_features
>>> "hog" in list_features()
True
"""
from __future__ import annotations

import importlib
import pkgutil

from datakit.features.base import (CACHE_DIR, FEATURES, FeatureError, FeatureExtractor, FeatureMatrix,
                                   decode_for_features, extract_features, get_extractor, list_features,
                                   register_feature)

__all__ = ["CACHE_DIR", "FEATURES", "FeatureError", "FeatureExtractor", "FeatureMatrix", "decode_for_features",
           "extract_features", "get_extractor", "list_features", "register_feature"]

# every public module of this package registers its extractors on import
for _mod in pkgutil.iter_modules(__path__):
    if not _mod.name.startswith("_") and _mod.name != "base":
        importlib.import_module(f"{__name__}.{_mod.name}")
