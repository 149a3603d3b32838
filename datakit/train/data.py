"""Getting images into a network: size plans, uint8 tensors, batch sources.

The training loop never decodes or transforms single images. Images are
brought once to the network's input size as a uint8 tensor of shape
(N, C, H, W); every batch is then converted to float and normalised on the
device in one vectorised step (:class:`Normalizer`).

Size rules (:func:`input_plan`):

* ``lenet5`` expects 32x32: 28x28 images are zero-padded by 2 on each side
  (LeCun's MNIST setup: the 20x20 digit centred in 28x28, then 32x32), other
  sizes are first resized to 28x28 (bilinear, antialiased) and then padded.
* every other model: images whose size differs from ``model.input_size`` are
  resized to it (bilinear, antialiased).
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "InputPlan", "input_plan", "as_uint8_nchw", "prepare_images", "channel_stats", "Normalizer",
    "TensorBatches", "LoaderBatches", "RandomShift", "AUGMENTATIONS", "make_augment",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class InputPlan:
    """How images of one size become network inputs.

    Attributes
    ----------
    resize : (H, W) or None
        Resize to this size first (bilinear, antialiased), or keep the size.
    pad : int
        Zero padding added on every side after resizing.
    output_size : (H, W)
        Size of what the network receives.
    """

    resize: tuple[int, int] | None
    pad: int
    output_size: tuple[int, int]

    def describe(self) -> str:
        parts = []
        if self.resize is not None:
            parts.append(f"resize to {self.resize[0]}x{self.resize[1]}")
        if self.pad:
            parts.append(f"pad by {self.pad}")
        return ", then ".join(parts) or "as is"


def input_plan(model_name: str, image_size: tuple[int, int], model_input_size: tuple[int, int]) -> InputPlan:
    """The size plan for images of ``image_size`` fed to a model (see module doc).

    Examples
    --------
    >>> input_plan("lenet5", (28, 28), (32, 32))
    InputPlan(resize=None, pad=2, output_size=(32, 32))
    >>> input_plan("lenet5", (16, 16), (32, 32)).describe()
    'resize to 28x28, then pad by 2'
    """
    image_size = (int(image_size[0]), int(image_size[1]))
    target = (int(model_input_size[0]), int(model_input_size[1]))
    if model_name == "lenet5" and target == (32, 32):
        if image_size == (32, 32):
            return InputPlan(None, 0, target)
        return InputPlan(None if image_size == (28, 28) else (28, 28), 2, target)
    return InputPlan(None if image_size == target else target, 0, target)


def as_uint8_nchw(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    """(N, H, W) or (N, H, W, C) uint8 -> contiguous (N, C, H, W) uint8 tensor."""
    if isinstance(images, torch.Tensor):
        images = images.cpu().numpy()
    images = np.asarray(images)
    if images.dtype != np.uint8:
        raise TypeError(f"images must be uint8 (values 0-255), got dtype {images.dtype}")
    if images.ndim == 3:
        images = images[:, None]
    elif images.ndim == 4:
        images = images.transpose(0, 3, 1, 2)
    else:
        raise ValueError(f"images must have shape (N, H, W) or (N, H, W, C), got {images.shape}")
    images = np.ascontiguousarray(images)
    if not images.flags.writeable:  # e.g. np.frombuffer; torch wants writable memory
        images = images.copy()
    return torch.from_numpy(images)


def prepare_images(images: np.ndarray | torch.Tensor, plan: InputPlan, chunk: int = 4096) -> torch.Tensor:
    """Apply ``plan`` to uint8 images once.

    Parameters
    ----------
    images : array (N, H, W) or (N, H, W, C) uint8, or tensor (N, C, H, W) uint8
    plan : InputPlan

    Returns
    -------
    torch.Tensor, shape (N, C, H', W'), uint8
    """
    x = images if isinstance(images, torch.Tensor) and images.ndim == 4 else as_uint8_nchw(images)
    if x.dtype != torch.uint8:
        raise TypeError(f"images must be uint8, got {x.dtype}")
    if plan.resize is not None and tuple(x.shape[-2:]) != plan.resize:
        out = torch.empty((x.shape[0], x.shape[1], *plan.resize), dtype=torch.uint8)
        for s in range(0, x.shape[0], chunk):
            part = x[s:s + chunk].float()
            part = F.interpolate(part, size=plan.resize, mode="bilinear", antialias=True, align_corners=False)
            out[s:s + chunk] = part.round_().clamp_(0, 255).to(torch.uint8)
        x = out
    if plan.pad:
        x = F.pad(x, (plan.pad,) * 4)
    return x.contiguous()


def channel_stats(x: torch.Tensor, chunk: int = 8192) -> tuple[list[float], list[float]]:
    """Per-channel mean and standard deviation of uint8 images, in [0, 1] units.

    Parameters
    ----------
    x : torch.Tensor, shape (N, C, H, W), uint8

    Returns
    -------
    mean, std : list of float, length C (std floored at 1e-3)
    """
    c = x.shape[1]
    total = torch.zeros(c, dtype=torch.float64)
    total_sq = torch.zeros(c, dtype=torch.float64)
    count = 0
    for s in range(0, x.shape[0], chunk):
        part = x[s:s + chunk].to(torch.float64).div_(255.0)
        total += part.sum(dim=(0, 2, 3))
        total_sq += part.pow(2).sum(dim=(0, 2, 3))
        count += part.shape[0] * part.shape[2] * part.shape[3]
    if count == 0:
        return [0.0] * c, [1.0] * c
    mean = total / count
    std = (total_sq / count - mean.pow(2)).clamp(min=0).sqrt().clamp(min=1e-3)
    return [float(v) for v in mean], [float(v) for v in std]


class Normalizer:
    """uint8 (N, C, H, W) -> float (N, C, H, W), ``(x / 255 - mean) / std``, on any device."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        self.mean = [float(v) for v in mean]
        self.std = [float(v) for v in std]
        self._cache: dict = {}

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        key = x.device
        if key not in self._cache:
            m = torch.tensor(self.mean, device=x.device).view(1, -1, 1, 1) * 255.0
            s = torch.tensor(self.std, device=x.device).view(1, -1, 1, 1) * 255.0
            self._cache[key] = (m, 1.0 / s)
        m, inv = self._cache[key]
        return (x.float() - m) * inv

    def to_dict(self) -> dict:
        return {"mean": list(self.mean), "std": list(self.std), "scale": "x/255"}


class TensorBatches:
    """Shuffled mini-batches cut from one in-memory uint8 tensor.

    The permutation of epoch ``e`` comes from ``seed + e``, so a resumed run
    sees the same batches as an uninterrupted one. Under DDP every rank draws
    the same permutation and takes every ``world_size``-th index (all ranks get
    the same number of batches; the remainder of N is dropped for that epoch).

    Parameters
    ----------
    x : torch.Tensor, shape (N, C, H, W), uint8
        Kept where it is; put it on the GPU beforehand to avoid copies.
    y : torch.Tensor, shape (N,), int64
    batch_size : int
        Per process.
    """

    def __init__(self, x: torch.Tensor, y: torch.Tensor, batch_size: int, seed: int = 0, shuffle: bool = True,
                 rank: int = 0, world_size: int = 1) -> None:
        self.x, self.y = x, y
        self.batch_size = int(batch_size)
        self.seed, self.shuffle = int(seed), shuffle
        self.rank, self.world_size = int(rank), int(world_size)

    @property
    def num_images(self) -> int:
        """Images seen per epoch by this process."""
        return self.x.shape[0] // self.world_size if self.world_size > 1 else self.x.shape[0]

    def __len__(self) -> int:
        return math.ceil(self.num_images / self.batch_size)

    def epoch(self, epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n = self.x.shape[0]
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 100003 + epoch)
            order = torch.randperm(n, generator=g)
        else:
            order = torch.arange(n)
        if self.world_size > 1:
            per = n // self.world_size
            order = order[self.rank::self.world_size][:per]
        order = order.to(self.x.device)
        for s in range(0, order.shape[0], self.batch_size):
            idx = order[s:s + self.batch_size]
            yield self.x.index_select(0, idx), self.y.index_select(0, idx)


class LoaderBatches:
    """Batches streamed from a torch Dataset whose items are (uint8 (C, H, W), int).

    Used for datasets too large to hold in memory. A ``DistributedSampler``
    shards the data under DDP; ``pin_memory`` is on when training on CUDA.
    """

    def __init__(self, dataset, batch_size: int, seed: int = 0, shuffle: bool = True, workers: int = 2,
                 pin_memory: bool = False, rank: int = 0, world_size: int = 1) -> None:
        from torch.utils.data import DataLoader, DistributedSampler, RandomSampler, SequentialSampler

        self.dataset = dataset
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        if world_size > 1:
            self.sampler = DistributedSampler(dataset, num_replicas=world_size, rank=rank, shuffle=shuffle,
                                              seed=seed, drop_last=True)
        elif shuffle:
            self.sampler = RandomSampler(dataset, generator=torch.Generator().manual_seed(seed))
        else:
            self.sampler = SequentialSampler(dataset)
        self.loader = DataLoader(dataset, batch_size=self.batch_size, sampler=self.sampler, num_workers=workers,
                                 pin_memory=pin_memory, persistent_workers=workers > 0)

    @property
    def num_images(self) -> int:
        return len(self.sampler)

    def __len__(self) -> int:
        return len(self.loader)

    def epoch(self, epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        if hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(epoch)
        elif getattr(self.sampler, "generator", None) is not None:
            self.sampler.generator.manual_seed(self.seed * 100003 + epoch)
        for xb, yb in self.loader:
            yield xb, torch.as_tensor(yb, dtype=torch.int64)


class RandomShift:
    """Translate every image of a uint8 batch by its own random offset, vectorised.

    Each image moves by (dy, dx) drawn uniformly from ``-max_shift .. max_shift``
    pixels, with zeros (the background of MNIST-style digits) shifted in. No
    Python loop over images; runs on the batch's device.

    Parameters
    ----------
    max_shift : int
    seed : int
        Offsets come from a generator seeded with ``seed`` and the epoch
        (:meth:`set_epoch`), so runs are reproducible and resumable.
    """

    def __init__(self, max_shift: int = 2, seed: int = 0) -> None:
        if max_shift < 0:
            raise ValueError(f"max_shift must be >= 0, got {max_shift}")
        self.max_shift = int(max_shift)
        self.seed = int(seed)
        self._gen = torch.Generator().manual_seed(self.seed)

    def set_epoch(self, epoch: int) -> None:
        self._gen.manual_seed(self.seed * 1000003 + 7919 * epoch + 17)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, C, H, W) -> (B, C, H, W), same dtype and device."""
        s = self.max_shift
        if s == 0:
            return x
        b, c, h, w = x.shape
        offsets = torch.randint(0, 2 * s + 1, (2, b), generator=self._gen).to(x.device)
        padded = F.pad(x, (s, s, s, s))
        rows = (offsets[0][:, None] + torch.arange(h, device=x.device)[None])  # (B, H)
        cols = (offsets[1][:, None] + torch.arange(w, device=x.device)[None])  # (B, W)
        bidx = torch.arange(b, device=x.device)[:, None, None]
        out = padded.permute(0, 2, 3, 1)[bidx, rows[:, :, None], cols[:, None, :]]  # (B, H, W, C)
        return out.permute(0, 3, 1, 2).contiguous()


#: names accepted by ``--augment``
AUGMENTATIONS = ("none", "shift")


def make_augment(name: str | None, seed: int = 0):
    """``"none"`` -> None; ``"shift"`` -> :class:`RandomShift` (±2 px); ``"shift:N"`` -> ±N px."""
    if name in (None, "none"):
        return None
    kind, _, arg = str(name).partition(":")
    if kind == "shift":
        try:
            n = int(arg) if arg else 2
        except ValueError:
            n = -1
        if n >= 0:
            return RandomShift(n, seed=seed)
    raise ValueError(f"Unknown value {name!r} for augment. Valid values are {{none, shift, shift:N}}.")
