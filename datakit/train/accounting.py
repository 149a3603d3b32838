"""Architecture accounting: units, connections and weights per layer.

Computed from the model itself by running one input through it with forward
hooks on every convolution, pooling and linear layer, never from constants.
Conventions (as in the LeNet lecture, Table 1):

* units: output activations of the layer (per example);
* connections: units x fan-in. Convolution fan-in = kernel area x input maps
  the output map actually reads (grouped and masked convolutions, e.g.
  LeNet-5's C3 with ``c3="lecun"``, count only existing connections);
  pooling fan-in = window area (adaptive pooling: the exact window sizes);
  linear fan-in = in_features;
* weights: trainable weights excluding biases (pooling layers: 0).

``with_biases=True`` adds the paper's convention: one more connection per unit
with a bias, and the biases counted as parameters.
"""
from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import torch
from torch import nn

__all__ = ["LayerCount", "summarize", "format_count", "SUMMARY_COLUMNS"]

SUMMARY_COLUMNS = ["layer", "type", "output", "units", "connections", "weights"]

_POOL = (nn.AvgPool2d, nn.MaxPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d, nn.AvgPool1d, nn.MaxPool1d)


@dataclass
class LayerCount:
    """One row of the summary (per example)."""

    layer: str
    type: str
    output: str
    units: int
    connections: int
    weights: int


def _pair(v) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))


def _adaptive_window_sum(in_size: int, out_size: int) -> int:
    """Sum over output positions of the adaptive pooling window length."""
    total = 0
    for i in range(out_size):
        start = (i * in_size) // out_size
        end = -((-(i + 1) * in_size) // out_size)
        total += end - start
    return total


def _conv_count(m: nn.Conv2d, out: torch.Tensor, with_biases: bool) -> tuple[int, int, int, str]:
    c_out, h, w = out.shape[1:]
    area = m.kernel_size[0] * m.kernel_size[1]
    mask = getattr(m, "mask", None)
    if mask is not None:
        per_map = mask.reshape(mask.shape[0], -1).sum(1)  # input maps read by each output map
        reads = int(per_map.sum().item())
        connections = h * w * reads * area
        weights = reads * area
    else:
        fan_in = (m.in_channels // m.groups) * area
        connections = c_out * h * w * fan_in
        weights = m.weight.numel()
    units = c_out * h * w
    if with_biases:
        unit_bias = getattr(m, "unit_bias", None)
        if unit_bias is not None:
            connections += units
            weights += unit_bias.numel()
        elif m.bias is not None:
            connections += units
            weights += m.bias.numel()
    return units, connections, weights, "convolution"


def _pool_count(m: nn.Module, inp: torch.Tensor, out: torch.Tensor) -> tuple[int, int, int, str]:
    units = out[0].numel()
    kind = "subsampling" if isinstance(m, (nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AvgPool1d)) else "max pooling"
    if isinstance(m, (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)):
        hi, wi = inp.shape[-2:]
        ho, wo = out.shape[-2:]
        connections = out.shape[1] * _adaptive_window_sum(hi, ho) * _adaptive_window_sum(wi, wo)
    elif isinstance(m, (nn.AvgPool1d, nn.MaxPool1d)):
        connections = units * _pair(m.kernel_size)[0]
    else:
        kh, kw = _pair(m.kernel_size)
        connections = units * kh * kw
    return units, connections, 0, kind


def summarize(model: nn.Module, input_shape: tuple[int, ...], with_biases: bool = False,
              totals: bool = True) -> pd.DataFrame:
    """Units, connections and weights of every conv / pooling / linear layer.

    Parameters
    ----------
    model : nn.Module
    input_shape : (C, H, W)
        One example's shape (no batch dimension).
    with_biases : bool
        Count biases as connections and parameters (LeCun et al.'s convention).
    totals : bool
        Append a ``total`` row.

    Returns
    -------
    pandas.DataFrame
        Columns :data:`SUMMARY_COLUMNS`; ``output`` is the layer's output shape
        as ``"CxHxW"``; counts are per example, integers.

    Examples
    --------
    >>> from datakit.train.models import get_model
    >>> df = summarize(get_model("lenet5", 10, 1), (1, 32, 32))
    >>> df.set_index("layer").loc["C3", ["units", "connections", "weights"]].tolist()
    [1600, 240000, 2400]
    """
    rows: list[LayerCount] = []
    handles = []
    names = {m: n for n, m in model.named_modules()}

    def hook(m, inputs, output):
        inp = inputs[0]
        if isinstance(m, nn.Conv2d):
            units, conn, weights, kind = _conv_count(m, output, with_biases)
        elif isinstance(m, nn.Linear):
            units = m.out_features
            conn = m.in_features * m.out_features
            weights = m.weight.numel()
            if with_biases and m.bias is not None:
                conn += units
                weights += m.bias.numel()
            kind = "fully connected"
        else:
            units, conn, weights, kind = _pool_count(m, inp, output)
        shape = "x".join(str(int(s)) for s in output.shape[1:])
        rows.append(LayerCount(names.get(m, type(m).__name__), kind, shape, int(units), int(conn), int(weights)))

    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear) + _POOL):
            handles.append(m.register_forward_hook(hook))
    was_training = model.training
    model.eval()
    try:
        device = next((p.device for p in model.parameters()), torch.device("cpu"))
        with torch.no_grad():
            model(torch.zeros((1, *input_shape), device=device))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    frame = pd.DataFrame([r.__dict__ for r in rows], columns=SUMMARY_COLUMNS)
    if totals:
        total = {"layer": "total", "type": "", "output": "", "units": int(frame["units"].sum()),
                 "connections": int(frame["connections"].sum()), "weights": int(frame["weights"].sum())}
        frame = pd.concat([frame, pd.DataFrame([total])], ignore_index=True)
    for col in ("units", "connections", "weights"):
        frame[col] = frame[col].astype("int64")
    return frame


def format_count(n: int) -> str:
    """Thousands separators from 10,000 up, as the lecture prints them (4704, 117,600)."""
    n = int(n)
    return f"{n:,}" if abs(n) >= 10000 else str(n)
