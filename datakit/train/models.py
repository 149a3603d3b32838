"""Model registry: LeNet-5 (1998), the 1989 USPS LeNet, and torchvision families.

Every factory is called as ``factory(num_classes, in_channels, **cfg)`` and
returns an ``nn.Module`` with two extra attributes that the training code reads:

``input_size`` : (H, W)
    The spatial size the network expects; :mod:`datakit.train.data` pads or
    resizes images to it (see :func:`datakit.train.data.input_plan`).
``config`` : dict
    The keyword options it was built with (plain types; stored in checkpoints
    so :func:`get_model` can rebuild it).

Examples
--------
>>> from datakit.train.models import get_model, list_models
>>> "lenet5" in list_models()
True
>>> net = get_model("lenet5", num_classes=10, in_channels=1)
>>> net.input_size
(32, 32)
"""
from __future__ import annotations

import inspect
import logging
from typing import Callable

import torch
from torch import nn

from datakit.errors import DatakitError
from datakit.registry import Registry

__all__ = [
    "ModelConfigError", "MODELS", "register_model", "get_model", "list_models", "LeNet5", "LeNet1989", "MaskedConv2d",
    "LocallyBiasedMaskedConv2d", "ScaledTanh", "LECUN_C3_TABLE", "LENET1989_H2_TABLE", "ConvNet4",
]

logger = logging.getLogger(__name__)

class ModelConfigError(DatakitError, ValueError):
    """A model option that the model does not take, or a bad value for one."""


#: name -> factory(num_classes, in_channels, **cfg) -> nn.Module
MODELS: Registry[Callable[..., nn.Module]] = Registry("model")


def register_model(name: str) -> Callable:
    """Decorator registering a model factory under ``name`` (torchvision style)."""
    return MODELS.register(name)


def list_models() -> list[str]:
    """Names of the registered models, sorted."""
    return MODELS.names()


def get_model(name: str, num_classes: int = 10, in_channels: int = 1, **cfg) -> nn.Module:
    """Build a registered model.

    Parameters
    ----------
    name : str
        One of :func:`list_models`; an unknown name raises
        :class:`datakit.registry.UnknownNameError` listing the valid ones.
    num_classes : int
        Size of the output layer (>= 2).
    in_channels : int
        Channels of the input images (1 for greyscale, 3 for RGB).
    **cfg
        Model options (e.g. ``c3="lecun"`` for ``lenet5``; ``input_size=(H, W)``
        for the torchvision families).

    Returns
    -------
    torch.nn.Module
        With attributes ``input_size`` (H, W), ``config`` (dict) and ``model_name``.
    """
    factory = MODELS.get(name)
    accepted = [p for p in inspect.signature(factory).parameters if p not in ("num_classes", "in_channels")]
    unknown = sorted(set(cfg) - set(accepted))
    if unknown:
        raise ModelConfigError(f"Unknown option {unknown[0]!r} for model {name!r}. "
                               f"Valid values are {{{', '.join(accepted)}}}.")
    if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 2:
        raise ValueError(f"num_classes must be an integer >= 2, got {num_classes!r}")
    if not isinstance(in_channels, int) or isinstance(in_channels, bool) or in_channels < 1:
        raise ValueError(f"in_channels must be a positive integer, got {in_channels!r}")
    try:
        model = factory(num_classes=num_classes, in_channels=in_channels, **cfg)
    except ValueError as exc:
        raise ModelConfigError(f"{name}: {exc}") from None
    model.model_name = name
    return model


# --------------------------------------------------------------------------- building blocks


class ScaledTanh(nn.Module):
    """LeCun's squashing function ``f(a) = A tanh(S a)`` with A = 1.7159, S = 2/3.

    Chosen so that f(1) = 1 and f(-1) = -1 (LeCun et al. 1998, appendix A).
    """

    A = 1.7159
    S = 2.0 / 3.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.A * torch.tanh(self.S * x)


class MaskedConv2d(nn.Conv2d):
    """A convolution whose input-map -> output-map connections follow a table.

    ``mask`` has shape (out_channels, in_channels) with 1 where output map ``o``
    reads input map ``i``. Masked weights are held at zero: they are multiplied
    by the mask in ``forward`` (so they receive zero gradient and are never
    trained) and are not counted by :mod:`datakit.train.accounting`.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, mask: torch.Tensor, **kwargs) -> None:
        super().__init__(in_channels, out_channels, kernel_size, **kwargs)
        mask = torch.as_tensor(mask, dtype=torch.float32)
        if mask.shape != (out_channels, in_channels):
            raise ValueError(f"mask must have shape ({out_channels}, {in_channels}), got {tuple(mask.shape)}")
        self.register_buffer("mask", mask[:, :, None, None].clone(), persistent=False)
        with torch.no_grad():
            self.weight.mul_(self.mask)
            # re-scale the init to the true fan-in of each output map
            fan_in = mask.sum(1).clamp(min=1) * self.kernel_size[0] * self.kernel_size[1]
            full = in_channels * self.kernel_size[0] * self.kernel_size[1]
            self.weight.mul_(torch.sqrt(full / fan_in)[:, None, None, None])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, self.weight * self.mask, self.bias)

    def connected_weights(self) -> int:
        """Number of weights that exist (unmasked), biases excluded."""
        return int(self.mask.sum().item()) * self.kernel_size[0] * self.kernel_size[1]


class LocallyBiasedMaskedConv2d(MaskedConv2d):
    """A masked convolution with one bias per output *unit* (not per map).

    LeCun et al. (1989) gave every unit of H1 and H2 its own bias while the
    kernel weights are shared; ``unit_bias`` has shape (C_out, H_out, W_out).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, mask: torch.Tensor,
                 out_size: tuple[int, int], **kwargs) -> None:
        super().__init__(in_channels, out_channels, kernel_size, mask, bias=False, **kwargs)
        self.unit_bias = nn.Parameter(torch.zeros(out_channels, *out_size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x) + self.unit_bias


#: LeCun et al. 1998, Table I: which S2 maps (rows 0-5) each C3 map (0-15) reads.
#: Maps 0-5 read 3 contiguous maps, 6-11 four contiguous, 12-14 four
#: discontinuous, 15 all six: 60 of the 96 pairs.
LECUN_C3_TABLE: tuple[tuple[int, ...], ...] = (
    (0, 1, 2), (1, 2, 3), (2, 3, 4), (3, 4, 5), (4, 5, 0), (5, 0, 1),
    (0, 1, 2, 3), (1, 2, 3, 4), (2, 3, 4, 5), (3, 4, 5, 0), (4, 5, 0, 1), (5, 0, 1, 2),
    (0, 1, 3, 4), (1, 2, 4, 5), (0, 2, 3, 5),
    (0, 1, 2, 3, 4, 5),
)

#: The 1989 network's H2 maps each read 8 of the 12 H1 maps "according to a
#: scheme that will not be described here" (LeCun et al. 1989). We use map j
#: reading H1 maps j, j+1, ..., j+7 (mod 12): the counts match the paper, the
#: exact choice of maps is ours.
LENET1989_H2_TABLE: tuple[tuple[int, ...], ...] = tuple(tuple((j + k) % 12 for k in range(8)) for j in range(12))


def _table_mask(table, n_in: int) -> torch.Tensor:
    mask = torch.zeros(len(table), n_in)
    for o, ins in enumerate(table):
        mask[o, list(ins)] = 1.0
    return mask


# --------------------------------------------------------------------------- LeNet-5


class LeNet5(nn.Module):
    """LeNet-5 (LeCun, Bottou, Bengio, Haffner 1998) as described in the lecture.

    Layers (input (N, C, 32, 32)): C1 6@5x5 valid conv -> 6x28x28; S2 2x2 mean
    pooling, stride 2 -> 6x14x14; C3 16@5x5 -> 16x10x10; S4 mean pooling ->
    16x5x5; F5 120; F6 84; ``output`` linear 10 (softmax in the loss).

    Activations: LeCun's scaled tanh ``1.7159 tanh(2x/3)`` after C1, C3, F5 and
    F6. Differences from the 1998 paper, to follow the lecture's Table 1: S2/S4
    are plain mean pooling (the paper's trainable coefficient and bias per map,
    12 + 32 parameters, are left out, so pooling has 0 weights), and the output
    is linear + softmax instead of Euclidean RBF units.

    Parameters
    ----------
    num_classes : int
    in_channels : int
    c3 : {"full", "lecun"}
        "full": every C3 map reads all 6 S2 maps (2,400 weights); "lecun": the
        1998 connection table :data:`LECUN_C3_TABLE` (60 of 96 pairs, 1,500 weights).
    """

    input_size = (32, 32)

    def __init__(self, num_classes: int = 10, in_channels: int = 1, c3: str = "full") -> None:
        super().__init__()
        if c3 not in ("full", "lecun"):
            raise ValueError(f"Unknown value {c3!r} for c3. Valid values are {{full, lecun}}.")
        if c3 == "lecun" and in_channels < 1:
            raise ValueError("in_channels must be >= 1")
        self.config = {"c3": c3}
        self.C1 = nn.Conv2d(in_channels, 6, 5)
        self.S2 = nn.AvgPool2d(2, 2)
        if c3 == "lecun":
            self.C3 = MaskedConv2d(6, 16, 5, _table_mask(LECUN_C3_TABLE, 6))
        else:
            self.C3 = nn.Conv2d(6, 16, 5)
        self.S4 = nn.AvgPool2d(2, 2)
        self.F5 = nn.Linear(16 * 5 * 5, 120)
        self.F6 = nn.Linear(120, 84)
        self.output = nn.Linear(84, num_classes)
        self.act = ScaledTanh()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (N, C, 32, 32) float -> logits (N, num_classes)."""
        x = self.S2(self.act(self.C1(x)))
        x = self.S4(self.act(self.C3(x)))
        x = torch.flatten(x, 1)
        x = self.act(self.F5(x))
        x = self.act(self.F6(x))
        return self.output(x)


@register_model("lenet5")
def lenet5(num_classes: int = 10, in_channels: int = 1, c3: str = "full") -> nn.Module:
    """LeNet-5 of 1998 (32x32 input); see :class:`LeNet5`."""
    return LeNet5(num_classes, in_channels, c3=c3)


# --------------------------------------------------------------------------- LeNet 1989


class LeNet1989(nn.Module):
    """The USPS zip-code network of LeCun et al. (1989), the lecture's "LeNet (1989)".

    Input (N, C, 16, 16). H1: 12 maps 8x8, 5x5 kernels, stride 2 (the input is
    padded by 2, as the paper's "virtual" border); H2: 12 maps 4x4, 5x5 kernels
    stride 2, each reading 8 of the 12 H1 maps (:data:`LENET1989_H2_TABLE`);
    H3: 30 units fully connected; output 10 units. Weights are shared within a
    map but every unit of H1 and H2 has its own bias, as in the paper, which
    gives its 1,256 units (input included), 64,660 connections and 9,760 free
    parameters (the lecture's Table 2: 1,256 / 65,000 / 9,760). Activation:
    scaled tanh. The output is linear + softmax (the paper used tanh outputs
    with a squared error).
    """

    input_size = (16, 16)

    def __init__(self, num_classes: int = 10, in_channels: int = 1) -> None:
        super().__init__()
        self.config = {}
        self.H1 = LocallyBiasedMaskedConv2d(in_channels, 12, 5, torch.ones(12, in_channels), (8, 8),
                                            stride=2, padding=2)
        self.H2 = LocallyBiasedMaskedConv2d(12, 12, 5, _table_mask(LENET1989_H2_TABLE, 12), (4, 4),
                                            stride=2, padding=2)
        self.H3 = nn.Linear(12 * 4 * 4, 30)
        self.output = nn.Linear(30, num_classes)
        self.act = ScaledTanh()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (N, C, 16, 16) float -> logits (N, num_classes)."""
        x = self.act(self.H1(x))
        x = self.act(self.H2(x))
        x = self.act(self.H3(torch.flatten(x, 1)))
        return self.output(x)


@register_model("lenet1989")
def lenet1989(num_classes: int = 10, in_channels: int = 1) -> nn.Module:
    """LeNet of 1989 (16x16 input, USPS); see :class:`LeNet1989`."""
    return LeNet1989(num_classes, in_channels)


# --------------------------------------------------------------------------- torchvision families


def _as_size(input_size) -> tuple[int, int]:
    if isinstance(input_size, int):
        return (input_size, input_size)
    try:
        h, w = (int(v) for v in input_size)
    except (TypeError, ValueError):
        raise ValueError(f"input_size must be an int or (H, W), got {input_size!r}") from None
    return (h, w)


def _replace_conv(conv: nn.Conv2d, in_channels: int, small: bool) -> nn.Conv2d:
    """A new first conv: same out channels; 3x3 stride 1 padding 1 when ``small``."""
    if small:
        return nn.Conv2d(in_channels, conv.out_channels, 3, stride=1, padding=1, bias=conv.bias is not None)
    return nn.Conv2d(in_channels, conv.out_channels, conv.kernel_size, stride=conv.stride, padding=conv.padding,
                     bias=conv.bias is not None)


def _torchvision(name: str, num_classes: int, in_channels: int, input_size, small_input) -> nn.Module:
    """Build a torchvision classifier (``weights=None``) adapted to the data.

    Adaptations (only where needed):

    * ``in_channels != 3``: the first convolution is replaced by one with
      ``in_channels`` inputs (same kernel, stride, padding, out channels).
    * small inputs (``small_input=True``, by default when min(input_size) < 64):
      the stem is made CIFAR-style so 32x32 images keep spatial resolution:
      alexnet's 11x11/4 conv and resnet's 7x7/2 conv become 3x3/1 (resnet's
      stem max-pool is removed), googlenet's 7x7/2 conv becomes 3x3/1 and its
      first max-pool is removed; vgg is unchanged (its adaptive average pool
      copes with the 1x1 map left by five poolings).
    * inputs smaller than 32x32 are resized up to 32x32 (:attr:`input_size`).
    """
    import torchvision.models as tvm

    h, w = _as_size(input_size)
    if h < 1 or w < 1:
        raise ValueError(f"input_size must be positive, got {input_size!r}")
    small = bool(min(h, w) < 64) if small_input is None else bool(small_input)
    size = (max(h, 32), max(w, 32))
    kwargs = {"weights": None, "num_classes": num_classes}
    if name == "googlenet":
        kwargs.update(aux_logits=False, init_weights=True, transform_input=False)
    model = getattr(tvm, name)(**kwargs)
    if name == "alexnet":
        if small or in_channels != 3:
            model.features[0] = _replace_conv(model.features[0], in_channels, small)
    elif name.startswith("vgg"):
        if in_channels != 3:
            model.features[0] = _replace_conv(model.features[0], in_channels, False)
    elif name.startswith("resnet"):
        if small or in_channels != 3:
            model.conv1 = _replace_conv(model.conv1, in_channels, small)
        if small:
            model.maxpool = nn.Identity()
    elif name == "googlenet":
        if small or in_channels != 3:
            model.conv1.conv = _replace_conv(model.conv1.conv, in_channels, small)
        if small:
            model.maxpool1 = nn.Identity()
    model.input_size = size
    model.config = {"input_size": [int(size[0]), int(size[1])], "small_input": small}
    return model


def _register_torchvision(name: str) -> None:
    def factory(num_classes: int = 10, in_channels: int = 3, input_size=(224, 224), small_input=None) -> nn.Module:
        return _torchvision(name, num_classes, in_channels, input_size, small_input)

    factory.__name__ = name
    factory.__doc__ = f"torchvision ``{name}`` (weights=None), adapted; see :func:`_torchvision`."
    register_model(name)(factory)


for _name in ("alexnet", "vgg11", "vgg16", "googlenet", "resnet18", "resnet50"):
    _register_torchvision(_name)


# --------------------------------------------------------------------------- a small conv net for photos


class ConvNet4(nn.Module):
    """A small conv net for small photos (e.g. 64x64 RGB), fast enough to train on a CPU.

    Four blocks of 3x3 convolution (no bias) -> batch norm -> ReLU -> 2x2
    max-pooling, with ``width``, 2, 4 and 8 x ``width`` maps, then global
    average pooling and one linear layer. The pooled vector (8 x ``width``
    values, 128 by default) is the penultimate layer, returned by
    :meth:`forward_features`. Any input of at least 16x16 works (the global
    pooling absorbs the size); ``input_size`` is the size the data is resized to.

    Parameters
    ----------
    num_classes : int
    in_channels : int
    input_size : (H, W)
    width : int
        Maps of the first block (>= 1).
    """

    def __init__(self, num_classes: int = 10, in_channels: int = 3, input_size=(64, 64), width: int = 16) -> None:
        super().__init__()
        h, w = _as_size(input_size)
        if min(h, w) < 16:
            raise ValueError(f"input_size must be at least 16x16 (four 2x2 poolings), got {input_size!r}")
        if isinstance(width, bool) or not isinstance(width, int) or width < 1:
            raise ValueError(f"width must be a positive integer, got {width!r}")
        self.input_size = (h, w)
        self.config = {"input_size": [h, w], "width": width}
        chans = [in_channels, width, 2 * width, 4 * width, 8 * width]
        self.features = nn.Sequential(*[
            nn.Sequential(nn.Conv2d(chans[i], chans[i + 1], 3, padding=1, bias=False), nn.BatchNorm2d(chans[i + 1]),
                          nn.ReLU(inplace=True), nn.MaxPool2d(2))
            for i in range(4)])
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(chans[-1], num_classes)
        self.num_features = chans[-1]

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """x: (N, C, H, W) float -> penultimate features (N, 8 * width)."""
        return torch.flatten(self.pool(self.features(x)), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (N, C, H, W) float -> logits (N, num_classes)."""
        return self.fc(self.forward_features(x))


@register_model("convnet4")
def convnet4(num_classes: int = 10, in_channels: int = 3, input_size=(64, 64), width: int = 16) -> nn.Module:
    """Small 4-block conv net for 64x64 photos (penultimate 8 x width); see :class:`ConvNet4`."""
    return ConvNet4(num_classes, in_channels, input_size=input_size, width=width)
