"""GPU training throughput (images/s) of lenet5 and resnet18 with datakit's loop.

Runs datakit's training loop (uint8 batches held on the GPU, float16 autocast
with a gradient scaler, normalisation on the device) for a fixed number of
steps after a warm-up, and reports images per second.

Data: real MNIST training images (28x28, for lenet5) and the real CIFAR-10
test JPEGs (32x32 RGB, for resnet18) from ../shared/data when present;
otherwise random uint8 images of the same shapes (the throughput of these
models does not depend on pixel values). Which one was used is printed.

Usage::

    .venv/bin/python bench/gpu_train.py                  # both models
    .venv/bin/python bench/gpu_train.py --models resnet18 --batch-size 512 --steps 200

Exits with status 2 and a message on stderr when no CUDA device is available.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

SHARED = Path(os.environ.get("DATAKIT_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


def _mnist(n: int) -> tuple[np.ndarray, np.ndarray, str]:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    try:
        from train_data import mnist_arrays

        (x, y), _ = mnist_arrays(SHARED / "mnist")
        return x[:n], y[:n], f"real MNIST train ({min(n, len(x))} images)"
    except (OSError, FileNotFoundError):
        rng = np.random.default_rng(0)
        return rng.integers(0, 256, (n, 28, 28), dtype=np.uint8), rng.integers(0, 10, n), "random uint8 28x28"


def _cifar(n: int) -> tuple[np.ndarray, np.ndarray, str]:
    root = SHARED / "cifar10_test_jpg"
    if root.is_dir():
        from PIL import Image

        classes = sorted(p.name for p in root.iterdir() if p.is_dir())
        files = [(f, i) for i, c in enumerate(classes) for f in sorted((root / c).glob("*.jpg"))]
        files = files[:: max(1, len(files) // n)][:n] if len(files) > n else files
        x = np.stack([np.asarray(Image.open(f).convert("RGB")) for f, _ in files])
        return x, np.array([i for _, i in files]), f"real CIFAR-10 test JPEGs ({len(files)} images)"
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8), rng.integers(0, 10, n), "random uint8 32x32x3"


def measure(name: str, images: np.ndarray, targets: np.ndarray, batch_size: int, steps: int, warmup: int,
            amp: bool, device: str = "cuda") -> dict:
    import torch

    from datakit.train.data import Normalizer, TensorBatches, channel_stats, input_plan, prepare_images
    from datakit.train.fit import build_model
    from datakit.train.loop import make_optimizer, train_epochs

    dev = torch.device(device)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    torch.manual_seed(0)
    x8 = torch.from_numpy(images if images.ndim == 4 else images[..., None]).permute(0, 3, 1, 2).contiguous()
    model = build_model(name, 10, x8.shape[1], tuple(x8.shape[-2:]))
    x8 = prepare_images(x8, input_plan(name, tuple(x8.shape[-2:]), model.input_size))
    mean, std = channel_stats(x8)
    x = x8.to(dev)
    y = torch.from_numpy(np.asarray(targets, dtype=np.int64)).to(dev)
    # repeat the data so one "epoch" has warmup + steps batches
    need = (warmup + steps) * batch_size
    reps = -(-need // x.shape[0])
    x, y = x.repeat(reps, 1, 1, 1)[:need], y.repeat(reps)[:need]
    model = model.to(dev).to(memory_format=torch.channels_last) if name != "lenet5" else model.to(dev)
    opt = make_optimizer(model, "sgd", 0.05)
    norm = Normalizer(mean, std)
    times = {}

    class _Clock:
        def __init__(self):
            self.n = 0

        def __call__(self, k):
            self.n += 1
            if self.n == warmup:
                sync()
                times["start"] = time.perf_counter()

    clock = _Clock()
    batches = TensorBatches(x, y, batch_size, seed=0)
    train_epochs(model, batches, norm, epochs=1, optimizer=opt, device=dev, schedule="constant", amp=amp,
                 progress=clock)
    sync()
    seconds = time.perf_counter() - times["start"]
    return {"model": name, "batch_size": batch_size, "steps_timed": steps, "amp": amp and dev.type == "cuda",
            "input": "x".join(map(str, x8.shape[1:])), "images_per_s": steps * batch_size / seconds,
            "seconds": seconds}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="lenet5,resnet18")
    p.add_argument("--batch-size", type=int, default=512)
    p.add_argument("--steps", type=int, default=200, help="timed steps per model (after --warmup)")
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--no-amp", action="store_true", help="float32 instead of float16 autocast")
    p.add_argument("--json", type=Path, default=None)
    p.add_argument("--cpu-smoke-test", action="store_true",
                   help="run the same code on the CPU with tiny settings (checks the script; not a GPU figure)")
    args = p.parse_args()
    import torch

    device = "cuda"
    if args.cpu_smoke_test:
        device = "cpu"
        torch.set_num_threads(1)
    elif not torch.cuda.is_available():
        print("bench/gpu_train.py: no CUDA device is available here (torch.cuda.is_available() is False); "
              "run it on a machine with an NVIDIA GPU. Nothing was measured.", file=sys.stderr)
        return 2
    torch.backends.cudnn.benchmark = device == "cuda"
    name0 = torch.cuda.get_device_name(0) if device == "cuda" else "CPU (smoke test, not a GPU figure)"
    print(f"device: {name0}, torch {torch.__version__}", flush=True)
    rows = []
    for name in args.models.split(","):
        x, y, what = _mnist(60000) if name.startswith("lenet") else _cifar(10000)
        print(f"{name}: data = {what}", flush=True)
        row = measure(name, x, y, args.batch_size, args.steps, args.warmup, not args.no_amp, device)
        row["data"] = what
        rows.append(row)
        print(f"{name}: {row['images_per_s']:.0f} images/s (batch {args.batch_size}, input {row['input']}, "
              f"amp={row['amp']})", flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
