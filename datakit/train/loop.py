"""The training and evaluation loops (single process or DDP, CPU or CUDA).

Batches arrive as uint8 (B, C, H, W) tensors (:mod:`datakit.train.data`) and
are normalised on the device; on CUDA the forward pass runs under float16
autocast with a gradient scaler. The learning rate follows a cosine schedule
computed from the global step, so a resumed run continues exactly where the
interrupted one stopped.
"""
from __future__ import annotations

import logging
import math
from typing import Callable, Iterable

import numpy as np
import torch
import torch.distributed as _dist
import torch.nn.functional as F
from torch import nn

from datakit.errors import DatakitError

__all__ = [
    "TrainingDiverged", "resolve_device", "make_optimizer", "default_lr", "lr_at", "train_epochs",
    "evaluate_batches", "evaluate_tensors", "OPTIMIZERS", "SCHEDULES",
]

logger = logging.getLogger(__name__)

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("cosine", "constant")


class TrainingDiverged(DatakitError):
    """The loss became NaN or infinite; ``epoch`` and ``batch`` say where (0-based)."""

    def __init__(self, epoch: int, batch: int, loss: float, note: str = "") -> None:
        self.epoch, self.batch, self.loss, self.note = int(epoch), int(batch), float(loss), note
        super().__init__(
            f"Training diverged: loss is {loss} at epoch {epoch + 1}, batch {batch + 1} (1-based). "
            "Lower --lr or check the data." + (f" {note}" if note else "")
        )

    def __reduce__(self):
        return (type(self), (self.epoch, self.batch, self.loss, self.note))


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU; ``"cpu"``/``"cuda"``/``"cuda:N"`` as given.

    Raises
    ------
    DatakitError
        ``"cuda"`` requested but no CUDA device is available.
    ValueError
        Unknown device string.
    """
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cpu":
        return torch.device("cpu")
    if isinstance(device, str) and device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise DatakitError(f"--device {device} requested but CUDA is not available here; use --device cpu or auto.")
        return torch.device(device)
    raise ValueError(f"Unknown value {device!r} for device. Valid values are {{auto, cpu, cuda, cuda:N}}.")


def default_lr(optimizer: str) -> float:
    """Default learning rate: 0.05 for SGD (momentum 0.9), 1e-3 for Adam/AdamW."""
    return 0.05 if optimizer == "sgd" else 1e-3


def make_optimizer(model: nn.Module, name: str = "sgd", lr: float | None = None,
                   weight_decay: float = 5e-4) -> torch.optim.Optimizer:
    """SGD (momentum 0.9, Nesterov), Adam or AdamW over the trainable parameters.

    Weight decay is applied to weights only (not to biases).
    """
    if name not in OPTIMIZERS:
        raise ValueError(f"Unknown value {name!r} for optimizer. Valid values are {{{', '.join(OPTIMIZERS)}}}.")
    lr = default_lr(name) if lr is None else float(lr)
    if not lr > 0:
        raise ValueError(f"lr must be > 0, got {lr}")
    decay, no_decay = [], []
    for pname, p in model.named_parameters():
        if p.requires_grad:
            (no_decay if p.ndim <= 1 or pname.endswith("bias") else decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=0.9, nesterov=True)
    if name == "adam":
        return torch.optim.Adam(groups, lr=lr)
    return torch.optim.AdamW(groups, lr=lr)


def lr_at(base_lr: float, step: int, total_steps: int, schedule: str = "cosine") -> float:
    """Learning rate at global ``step`` (0-based) of ``total_steps``."""
    if schedule == "constant" or total_steps <= 0:
        return base_lr
    return 0.5 * base_lr * (1.0 + math.cos(math.pi * min(step, total_steps) / total_steps))


def _check_losses(losses: list, epoch: int, first_batch: int, distributed: bool = False) -> None:
    """Raise at the first non-finite loss; under DDP every rank raises at the same batch."""
    if not losses:
        return
    values = torch.stack(losses).float()
    bad = ~torch.isfinite(values)
    first = int(bad.nonzero()[0, 0]) if bool(bad.any()) else len(losses)
    if distributed:  # agree on the earliest bad batch, so no rank is left waiting in an all-reduce
        flag = torch.tensor([first], dtype=torch.int64, device=values.device)
        _dist.all_reduce(flag, op=_dist.ReduceOp.MIN)
        first = int(flag.item())
    if first < len(losses):
        raise TrainingDiverged(epoch, first_batch + first, float(values[first]))


def train_epochs(model: nn.Module, batches, normalize: Callable[[torch.Tensor], torch.Tensor], *,
                 epochs: int, optimizer: torch.optim.Optimizer, device: torch.device, seed: int = 0,
                 start_epoch: int = 0, schedule: str = "cosine", base_lr: float | None = None,
                 amp: bool | None = None, on_epoch_end: Callable[[int, dict], None] | None = None,
                 progress: Callable[[int], None] | None = None, check_every: int | None = None,
                 augment: Callable[[torch.Tensor], torch.Tensor] | None = None) -> list[dict]:
    """Train ``model`` for epochs ``start_epoch .. epochs-1``.

    Parameters
    ----------
    model : nn.Module
        Already on ``device`` (and wrapped in DDP when distributed).
    batches : TensorBatches or LoaderBatches
        ``batches.epoch(e)`` yields (uint8 (B, C, H, W), int64 (B,)) pairs.
    normalize : callable
        uint8 batch on the device -> float input.
    epochs : int
        Total number of epochs (not the number left).
    optimizer : torch.optim.Optimizer
    seed : int
        Global RNG is re-seeded with ``seed`` and the epoch at the start of
        each epoch (dropout), so runs and resumed runs are reproducible on CPU.
    on_epoch_end : callable(epoch, record), optional
        Called after each epoch with ``{"epoch", "train_loss", "train_acc", "lr", "images"}``.
    progress : callable(n_images), optional
    augment : callable, optional
        uint8 batch -> uint8 batch on the device, training only (e.g.
        :class:`datakit.train.data.RandomShift`); ``set_epoch`` is called if present.

    Returns
    -------
    list of dict
        One record per epoch trained.

    Raises
    ------
    TrainingDiverged
        The loss became NaN/inf; raised at the first such batch (checked every
        batch on CPU, every ``check_every`` batches on CUDA to avoid syncs).
    """
    if schedule not in SCHEDULES:
        raise ValueError(f"Unknown value {schedule!r} for schedule. Valid values are {{{', '.join(SCHEDULES)}}}.")
    cuda = device.type == "cuda"
    amp = cuda if amp is None else (amp and cuda)
    scaler = torch.amp.GradScaler("cuda", enabled=amp)
    check_every = check_every or (50 if cuda else 1)
    if base_lr is None:
        base_lr = optimizer.param_groups[0]["lr"]
    distributed = _dist.is_available() and _dist.is_initialized()
    steps_per_epoch = len(batches)
    total = steps_per_epoch * epochs
    history = []
    for epoch in range(start_epoch, epochs):
        torch.manual_seed(seed * 100003 + epoch + 1)
        if augment is not None and hasattr(augment, "set_epoch"):
            augment.set_epoch(epoch)
        model.train()
        loss_sum = torch.zeros((), device=device, dtype=torch.float64)
        correct = torch.zeros((), device=device, dtype=torch.int64)
        seen = 0
        pending: list[torch.Tensor] = []
        pending_start = 0
        lr = base_lr
        for b, (xb, yb) in enumerate(batches.epoch(epoch)):
            step = epoch * steps_per_epoch + b
            lr = lr_at(base_lr, step, total, schedule)
            for group in optimizer.param_groups:
                group["lr"] = lr
            xb = xb.to(device, non_blocking=True)
            yb = yb.to(device, non_blocking=True)
            if augment is not None:
                xb = augment(xb)
            with torch.autocast(device_type=device.type, dtype=torch.float16, enabled=amp):
                logits = model(normalize(xb))
                loss = F.cross_entropy(logits.float(), yb)
            pending.append(loss.detach())
            if len(pending) >= check_every:
                _check_losses(pending, epoch, pending_start, distributed)
                pending, pending_start = [], b + 1
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            n = yb.shape[0]
            loss_sum += loss.detach().double() * n
            correct += (logits.detach().argmax(1) == yb).sum()
            seen += n
            if progress is not None:
                progress(n)
        _check_losses(pending, epoch, pending_start, distributed)
        record = {
            "epoch": epoch + 1,
            "train_loss": float(loss_sum) / max(seen, 1),
            "train_acc": float(correct) / max(seen, 1),
            "lr": float(lr),
            "images": seen,
        }
        history.append(record)
        if on_epoch_end is not None:
            on_epoch_end(epoch, record)
    return history


@torch.no_grad()
def evaluate_batches(model: nn.Module, batches: Iterable, normalize: Callable[[torch.Tensor], torch.Tensor],
                     num_classes: int, device: torch.device, amp: bool | None = None,
                     return_outputs: bool = False) -> dict:
    """Top-1/top-5 accuracy, loss, per-class accuracy and confusion matrix.

    Parameters
    ----------
    batches : iterable of (uint8 (B, C, H, W), int64 (B,))
        Targets outside ``0..num_classes-1`` are not allowed here (map them first).

    Returns
    -------
    dict
        ``n``, ``loss``, ``top1``, ``top5`` (top-k with k = ``top5_k`` = min(5, K)),
        ``per_class_accuracy`` (list of K floats, None for absent classes),
        ``confusion`` (K x K nested list, rows = true class, columns = predicted);
        with ``return_outputs`` also ``probs`` (N, K) float32 ndarray.
    """
    model.eval()
    cuda = device.type == "cuda"
    amp = cuda if amp is None else (amp and cuda)
    k = min(5, num_classes)
    confusion = torch.zeros((num_classes, num_classes), dtype=torch.int64, device=device)
    loss_sum = 0.0
    top5 = 0
    n = 0
    outputs = []
    for xb, yb in batches:
        xb = xb.to(device, non_blocking=True)
        yb = yb.to(device, non_blocking=True)
        with torch.autocast(device_type=device.type, dtype=torch.float16, enabled=amp):
            logits = model(normalize(xb)).float()
        loss_sum += float(F.cross_entropy(logits, yb, reduction="sum"))
        pred = logits.argmax(1)
        confusion += torch.bincount(yb * num_classes + pred, minlength=num_classes ** 2).view(num_classes, num_classes)
        top5 += int((logits.topk(k, dim=1).indices == yb[:, None]).any(1).sum())
        n += yb.shape[0]
        if return_outputs:
            outputs.append(torch.softmax(logits, 1).cpu())
    conf = confusion.cpu().numpy()
    support = conf.sum(1)
    per_class = [float(conf[i, i] / support[i]) if support[i] else None for i in range(num_classes)]
    result = {
        "n": int(n),
        "loss": loss_sum / max(n, 1),
        "top1": float(np.trace(conf) / max(n, 1)),
        "top5": top5 / max(n, 1),
        "top5_k": k,
        "per_class_accuracy": per_class,
        "confusion": conf.tolist(),
    }
    if return_outputs:
        result["probs"] = (torch.cat(outputs).numpy() if outputs else np.zeros((0, num_classes), np.float32))
    return result


def evaluate_tensors(model: nn.Module, x: torch.Tensor, y: torch.Tensor, normalize, num_classes: int,
                     device: torch.device, batch_size: int = 1024, **kwargs) -> dict:
    """:func:`evaluate_batches` over an in-memory uint8 tensor ``x`` (N, C, H, W) and targets ``y`` (N,)."""
    batches = ((x[s:s + batch_size], y[s:s + batch_size]) for s in range(0, x.shape[0], batch_size))
    return evaluate_batches(model, batches, normalize, num_classes, device, **kwargs)
