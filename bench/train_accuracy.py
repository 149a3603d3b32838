"""Accuracy benchmarks of issue 3: LeNet-5 on real MNIST (>= 98.9%) and USPS (>= 95%).

Writes the datasets from ../shared/data if missing (bench/train_data.py), then
runs the same training as the recorded commands in bench/results/train.md:

    .venv/bin/python bench/train_accuracy.py mnist     # = datakit train out/mnist --model lenet5 --epochs 12 --seed 0 --device cpu --threads 1
    .venv/bin/python bench/train_accuracy.py usps      # = datakit train out/usps --model lenet5 --epochs 15 --augment shift ...

Prints the final test top-1 accuracy and exits 1 when it is under the target.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

RECIPES = {
    "mnist": {"epochs": 12, "augment": None, "target": 0.989},
    "usps": {"epochs": 15, "augment": "shift", "target": 0.95},
}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("name", choices=sorted(RECIPES))
    p.add_argument("--data", type=Path, default=Path("out"), help="where the datasets are (written if missing)")
    p.add_argument("--runs", type=Path, default=Path("out/runs"))
    p.add_argument("--epochs", type=int, default=None, help="override the recorded number of epochs")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu")
    args = p.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from train_data import write

    from datakit.train.run import train_dataset

    spec = RECIPES[args.name]
    root = args.data / args.name
    if not (root / "datakit.json").exists():
        write(args.name, root)
    out = args.runs / f"{args.name}-lenet5-bench-{int(time.time())}"
    t0 = time.perf_counter()
    res = train_dataset(root, "lenet5", out=out, epochs=args.epochs or spec["epochs"], seed=0, device=args.device,
                        augment=spec["augment"])
    last = res.history[-1]
    import json

    top1 = json.loads(res.metrics_path.read_text())["epochs"][-1]["eval_top1"]
    print(f"{args.name}: lenet5, {last['epoch']} epochs, test top-1 {top1:.4f} (target {spec['target']}), "
          f"{time.perf_counter() - t0:.0f} s, run in {out}")
    return 0 if top1 >= spec["target"] else 1


if __name__ == "__main__":
    sys.exit(main())
