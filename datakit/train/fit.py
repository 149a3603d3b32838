"""In-memory training: ``fit_arrays(images, targets) -> FitResult``.

The building block the audits use (cross-dataset generalisation, "name that
dataset" probes) and the same loop ``datakit train`` runs.
"""
from __future__ import annotations

import inspect
import logging
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
from torch import nn

from datakit.train.data import (Normalizer, TensorBatches, as_uint8_nchw, channel_stats, input_plan, make_augment,
                                prepare_images)
from datakit.train.loop import evaluate_tensors, make_optimizer, resolve_device, train_epochs
from datakit.train.models import MODELS, get_model

__all__ = ["FitResult", "fit_arrays", "build_model"]

logger = logging.getLogger(__name__)


def build_model(name: str, num_classes: int, in_channels: int, image_size: tuple[int, int],
                model_config: dict | None = None) -> nn.Module:
    """:func:`get_model` with ``input_size`` set from the data when the model takes one.

    Parameters
    ----------
    image_size : (H, W)
        Size of the images the model will see (before the input plan).
    """
    cfg = dict(model_config or {})
    factory = MODELS.get(name)
    if "input_size" in inspect.signature(factory).parameters and "input_size" not in cfg:
        cfg["input_size"] = [int(image_size[0]), int(image_size[1])]
    return get_model(name, num_classes=num_classes, in_channels=in_channels, **cfg)


def _check_images(images: np.ndarray, name: str = "images") -> np.ndarray:
    images = np.asarray(images)
    if images.dtype != np.uint8:
        raise TypeError(f"{name} must be a uint8 array (values 0-255), got dtype {images.dtype}")
    if images.ndim not in (3, 4) or images.shape[0] == 0:
        raise ValueError(f"{name} must have shape (N, H, W) or (N, H, W, C) with N > 0, got {images.shape}")
    return images


@dataclass
class FitResult:
    """A trained model with the preprocessing it was trained with.

    Attributes
    ----------
    model : torch.nn.Module
        In eval mode, on ``device``.
    model_name : str
    num_classes : int
    in_channels : int
    input_size : (H, W)
        Size the network receives (after the input plan).
    normalization : dict
        ``{"mean": [...], "std": [...]}`` per channel, in [0, 1] units.
    history : list of dict
        Per epoch: ``epoch``, ``train_loss``, ``train_acc``, ``lr``, ``images``.
    device : torch.device
    """

    model: nn.Module
    model_name: str
    num_classes: int
    in_channels: int
    input_size: tuple[int, int]
    normalization: dict
    history: list = field(default_factory=list)
    device: torch.device = torch.device("cpu")

    def _inputs(self, images: np.ndarray) -> torch.Tensor:
        images = _check_images(images)
        x = as_uint8_nchw(images)
        if x.shape[1] != self.in_channels:
            if x.shape[1] == 1 and self.in_channels == 3:
                x = x.expand(-1, 3, -1, -1)
            elif x.shape[1] == 3 and self.in_channels == 1:
                grey = 0.299 * x[:, 0:1].float() + 0.587 * x[:, 1:2].float() + 0.114 * x[:, 2:3].float()
                x = grey.round().clamp(0, 255).to(torch.uint8)  # ITU-R 601 luma, as PIL's "L"
            else:
                raise ValueError(f"images have {x.shape[1]} channels; the model was trained on {self.in_channels}")
        plan = input_plan(self.model_name, tuple(x.shape[-2:]), self.input_size)
        return prepare_images(x, plan)

    @torch.no_grad()
    def predict_proba(self, images: np.ndarray, batch_size: int = 1024) -> np.ndarray:
        """Class probabilities.

        Parameters
        ----------
        images : ndarray, shape (N, H, W) or (N, H, W, C), uint8
            Any size: they go through the same input plan as the training images.

        Returns
        -------
        ndarray, shape (N, K), float32, rows summing to 1
        """
        x = self._inputs(images)
        y = torch.zeros(x.shape[0], dtype=torch.int64)
        out = evaluate_tensors(self.model, x, y, Normalizer(**{k: self.normalization[k] for k in ("mean", "std")}),
                               self.num_classes, self.device, batch_size=batch_size, return_outputs=True)
        return out["probs"].astype(np.float32)

    def predict(self, images: np.ndarray, batch_size: int = 1024) -> np.ndarray:
        """Predicted class indices, ndarray of shape (N,), int64."""
        return self.predict_proba(images, batch_size=batch_size).argmax(1).astype(np.int64)

    def score(self, images: np.ndarray, targets: np.ndarray) -> float:
        """Top-1 accuracy on (images, targets)."""
        return float((self.predict(images) == np.asarray(targets)).mean())


def fit_arrays(images: np.ndarray, targets: np.ndarray, *, model: str = "lenet5", num_classes: int | None = None,
               epochs: int = 5, batch_size: int = 128, lr: float | None = None, seed: int = 0,
               device: str = "auto", progress: Callable[[int], None] | None = None,
               model_config: dict | None = None, optimizer: str = "sgd", schedule: str = "cosine",
               weight_decay: float = 5e-4, augment: str | None = None) -> FitResult:
    """Train a registered model on in-memory images.

    Parameters
    ----------
    images : ndarray, shape (N, H, W) or (N, H, W, C), uint8
        Resized/padded to the model's input as :func:`datakit.train.data.input_plan`
        says (``lenet5``: 28x28 padded by 2 to 32x32; other sizes resized to
        28x28 first; other models: resized to their ``input_size``, which for
        torchvision models is the data's own size, at least 32x32).
    targets : ndarray, shape (N,), int
        Class indices in ``0 .. num_classes-1``.
    model : str
        A name from :func:`datakit.train.list_models`.
    num_classes : int, optional
        Default ``targets.max() + 1`` (at least 2).
    epochs, batch_size, lr, seed : training options
        ``lr`` default: 0.05 for SGD (momentum 0.9, Nesterov, cosine schedule),
        1e-3 for Adam/AdamW.
    device : {"auto", "cpu", "cuda"}
    progress : callable(n_images), optional
        Called after every batch with the number of images in it.
    model_config : dict, optional
        Passed to the model factory (e.g. ``{"c3": "lecun"}``).
    optimizer : {"sgd", "adam", "adamw"}
    schedule : {"cosine", "constant"}
    augment : {None, "none", "shift", "shift:N"}
        Random translations of ±2 (or N) pixels, drawn per image and epoch.

    Returns
    -------
    FitResult

    Raises
    ------
    ValueError, TypeError
        Bad shapes, dtypes or targets out of range.
    datakit.train.loop.TrainingDiverged
        The loss became NaN/inf (the message gives epoch and batch).

    Notes
    -----
    Deterministic for a given seed on the CPU (same torch build and thread count).

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> x = rng.integers(0, 256, (64, 28, 28), dtype=np.uint8); y = np.arange(64) % 2
    >>> res = fit_arrays(x, y, epochs=1, batch_size=32, device="cpu")
    >>> res.predict(x[:3]).shape, res.predict_proba(x[:3]).shape
    ((3,), (3, 2))
    """
    images = _check_images(images)
    targets = np.asarray(targets)
    if targets.ndim != 1 or targets.shape[0] != images.shape[0]:
        raise ValueError(f"targets must have shape ({images.shape[0]},), got {targets.shape}")
    if not np.issubdtype(targets.dtype, np.integer):
        raise TypeError(f"targets must be integer class indices, got dtype {targets.dtype}")
    if targets.min() < 0:
        raise ValueError(f"targets must be >= 0 (got {targets.min()}); drop unlabeled images (-1) first")
    if num_classes is None:
        num_classes = max(int(targets.max()) + 1, 2)
    if targets.max() >= num_classes:
        raise ValueError(f"targets contain {int(targets.max())} but num_classes is {num_classes}")
    if epochs < 1 or batch_size < 1:
        raise ValueError(f"epochs and batch_size must be >= 1, got {epochs} and {batch_size}")
    dev = resolve_device(device)
    aug = make_augment(augment, seed)
    x = as_uint8_nchw(images)
    in_channels = int(x.shape[1])
    torch.manual_seed(seed)
    net = build_model(model, num_classes, in_channels, tuple(x.shape[-2:]), model_config)
    plan = input_plan(model, tuple(x.shape[-2:]), net.input_size)
    x = prepare_images(x, plan)
    mean, std = channel_stats(x)
    normalize = Normalizer(mean, std)
    y = torch.from_numpy(targets.astype(np.int64))
    net = net.to(dev)
    if dev.type == "cuda":
        x, y = x.to(dev), y.to(dev)
    batches = TensorBatches(x, y, batch_size, seed=seed)
    opt = make_optimizer(net, optimizer, lr, weight_decay)
    history = train_epochs(net, batches, normalize, epochs=epochs, optimizer=opt, device=dev, seed=seed,
                           schedule=schedule, progress=progress, augment=aug)
    net.eval()
    return FitResult(model=net, model_name=model, num_classes=int(num_classes), in_channels=in_channels,
                     input_size=tuple(int(v) for v in net.input_size), normalization=normalize.to_dict(),
                     history=history, device=dev)
