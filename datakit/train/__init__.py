"""Training conv nets on datakit datasets, and accounting for their size.

Public API
----------
fit_arrays(images, targets, ...) -> FitResult
    Train a registered model on in-memory uint8 images (:mod:`datakit.train.fit`).
get_model(name, num_classes, in_channels, **cfg), list_models()
    The model registry (:mod:`datakit.train.models`).
summarize(model, input_shape) -> DataFrame
    Units, connections and weights per layer (:mod:`datakit.train.accounting`).
"""
from __future__ import annotations

from datakit.train.fit import FitResult, build_model, fit_arrays
from datakit.train.loop import TrainingDiverged
from datakit.train.models import MODELS, get_model, list_models, register_model

__all__ = [
    "fit_arrays", "FitResult", "build_model", "get_model", "list_models", "register_model", "MODELS",
    "TrainingDiverged", "summarize",
]


def __getattr__(name):
    if name == "summarize":
        from datakit.train.accounting import summarize

        return summarize
    raise AttributeError(f"module 'datakit.train' has no attribute {name!r}")
