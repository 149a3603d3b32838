"""The lecture's Table 2 next to what datakit's accountant computes.

Columns: LeNet (1989) = ``lenet1989`` on 1x16x16; LeNet (1998) = ``lenet5``
(c3="lecun", the paper's network) on 1x32x32; AlexNet = torchvision's
``alexnet`` on 3x224x224, and the two-GPU AlexNet of Krizhevsky et al. (2012)
rebuilt here with grouped convolutions (96-256-384-384-256 maps; conv2, conv4
and conv5 split in two groups) so the differences can be seen by computing.
All counts come from :func:`datakit.train.summarize` (forward hooks), with
biases (the papers count biases as parameters and connections) and without.

    .venv/bin/python bench/train_alexnet_table.py
"""
from __future__ import annotations

import pandas as pd
import torch
from torch import nn

from datakit.train import get_model, summarize


def alexnet_2012(num_classes: int = 1000) -> nn.Module:
    """AlexNet as in the 2012 paper (one model over two GPUs: groups=2 where the columns do not talk)."""
    return nn.Sequential(
        nn.Conv2d(3, 96, 11, stride=4, padding=2), nn.ReLU(), nn.LocalResponseNorm(5), nn.MaxPool2d(3, 2),
        nn.Conv2d(96, 256, 5, padding=2, groups=2), nn.ReLU(), nn.LocalResponseNorm(5), nn.MaxPool2d(3, 2),
        nn.Conv2d(256, 384, 3, padding=1), nn.ReLU(),
        nn.Conv2d(384, 384, 3, padding=1, groups=2), nn.ReLU(),
        nn.Conv2d(384, 256, 3, padding=1, groups=2), nn.ReLU(), nn.MaxPool2d(3, 2),
        nn.Flatten(), nn.Linear(256 * 6 * 6, 4096), nn.ReLU(), nn.Linear(4096, 4096), nn.ReLU(),
        nn.Linear(4096, num_classes),
    )


def totals(model: nn.Module, shape) -> dict:
    plain = summarize(model, shape).iloc[-1]
    biased = summarize(model, shape, with_biases=True).iloc[-1]
    no_pool = summarize(model, shape, totals=False)
    no_pool = no_pool[~no_pool["type"].isin(["subsampling", "max pooling"])]
    inputs = 1
    for s in shape:
        inputs *= s
    return {"units": int(plain["units"]), "units + inputs": int(plain["units"]) + inputs,
            "weights": int(plain["weights"]), "parameters (with biases)": int(biased["weights"]),
            "connections": int(plain["connections"]), "connections (with biases)": int(biased["connections"]),
            "connections (conv + fc only)": int(no_pool["connections"].sum()),
            "units (conv + fc only)": int(no_pool["units"].sum())}


def main() -> None:
    torch.manual_seed(0)
    cols = {
        "LeNet (1989)": totals(get_model("lenet1989", 10, 1), (1, 16, 16)),
        "LeNet-5 (1998, c3=lecun)": totals(get_model("lenet5", 10, 1, c3="lecun"), (1, 32, 32)),
        "torchvision alexnet": totals(get_model("alexnet", 1000, 3), (3, 224, 224)),
        "AlexNet 2012 (2 groups)": totals(alexnet_2012(), (3, 224, 224)),
    }
    frame = pd.DataFrame(cols)
    lecture = pd.DataFrame({"LeNet (1989)": ["1,256", "9,760", "65,000"],
                            "LeNet (1998)": ["8,084", "60,000", "344,000"],
                            "AlexNet (2012)": ["658,000", "60 million", "652 million"]},
                           index=["units", "parameters", "connections"])
    print(frame.map(lambda v: f"{v:,}").to_string())
    print("\nThe lecture's Table 2:")
    print(lecture.to_string())


if __name__ == "__main__":
    main()
