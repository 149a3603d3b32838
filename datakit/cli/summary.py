"""``datakit summary MODEL``: units, connections and weights per layer."""
from __future__ import annotations

import click

from datakit.cli._options import emit_table, format_option
from datakit.errors import DatakitError

__all__ = ["summary", "parse_input_shape", "parse_config"]


def parse_input_shape(text: str) -> tuple[int, int, int]:
    """``"3x224x224"`` -> (3, 224, 224)."""
    parts = text.lower().replace("*", "x").split("x")
    try:
        shape = tuple(int(p) for p in parts)
    except ValueError:
        shape = ()
    if len(shape) != 3 or min(shape) < 1:
        raise DatakitError(f"--input must look like CxHxW with positive integers (e.g. 1x32x32), got {text!r}")
    return shape  # type: ignore[return-value]


def _value(text: str):
    low = text.lower()
    if low in ("true", "false"):
        return low == "true"
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def parse_config(items) -> dict:
    """``("c3=lecun", "small_input=false")`` -> ``{"c3": "lecun", "small_input": False}``."""
    cfg = {}
    for item in items or ():
        if "=" not in item:
            raise DatakitError(f"--config expects KEY=VALUE, got {item!r}")
        key, value = item.split("=", 1)
        cfg[key.strip()] = _value(value.strip())
    return cfg


def _default_input(name: str, model) -> tuple[int, int, int]:
    h, w = model.input_size
    return (1 if name.startswith("lenet") else 3, int(h), int(w))


@click.command(help="Units, connections and weights of MODEL, per layer, computed with forward hooks.\n\n"
                    "Conventions (the LeNet lecture's Table 1): units = output activations; connections = "
                    "units x fan-in (pooling: x window); weights exclude biases unless --with-biases.\n\n"
                    "Examples: datakit summary lenet5; datakit summary lenet5 -c c3=lecun --with-biases; "
                    "datakit summary alexnet --input 3x224x224")
@click.argument("model_name", metavar="MODEL")
@click.option("--input", "input_shape", default=None, metavar="CxHxW",
              help="Input shape of one example (default: the model's own, e.g. 1x32x32 for lenet5, "
                   "3x224x224 for torchvision models).")
@click.option("--num-classes", type=click.IntRange(min=2), default=None,
              help="Output classes (default 10 for lenet*, 1000 for torchvision models).")
@click.option("-c", "--config", "config", multiple=True, metavar="KEY=VALUE",
              help="Model option, repeatable (e.g. -c c3=lecun).")
@click.option("--with-biases", is_flag=True, help="Count biases as connections and parameters (LeCun 1998).")
@format_option
def summary(model_name: str, input_shape: str | None, num_classes: int | None, config, with_biases: bool,
            fmt: str) -> None:
    from datakit.train.accounting import format_count, summarize
    from datakit.train.models import MODELS, get_model

    MODELS.get(model_name)  # unknown names: error listing the valid ones
    cfg = parse_config(config)
    shown_cfg = dict(cfg)
    lenet = model_name.startswith("lenet")
    if num_classes is None:
        num_classes = 10 if lenet else 1000
    if input_shape is not None:
        shape = parse_input_shape(input_shape)
        if not lenet and "input_size" not in cfg:
            cfg["input_size"] = [shape[1], shape[2]]
        model = get_model(model_name, num_classes=num_classes, in_channels=shape[0], **cfg)
    else:
        model = get_model(model_name, num_classes=num_classes, in_channels=1 if lenet else 3, **cfg)
        shape = _default_input(model_name, model)
    try:
        frame = summarize(model, shape, with_biases=with_biases)
    except RuntimeError as exc:
        raise DatakitError(f"{model_name} cannot take input {'x'.join(map(str, shape))}: {exc}") from None
    if fmt == "table":
        shown = frame.copy()
        for col in ("units", "connections", "weights"):
            shown[col] = shown[col].map(format_count)
        shown = shown.rename(columns={"layer": "Layer", "type": "Type", "output": "Output",
                                      "units": "# units", "connections": "# connections",
                                      "weights": "# parameters" if with_biases else "# weights"})
        click.echo(f"{model_name} on {'x'.join(map(str, shape))}, {num_classes} classes"
                   + (f", {', '.join(f'{k}={v}' for k, v in shown_cfg.items())}" if shown_cfg else ""))
        emit_table(shown[[c for c in shown.columns if c != "Output"] + ["Output"]], "table")
    else:
        emit_table(frame, fmt)
