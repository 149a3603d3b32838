"""CPU training throughput of LeNet-5 on 28x28 data: datakit's loop vs the plain torchvision recipe.

Both sides train the same model (LeNet-5, 28x28 padded to 32x32) with the same
optimizer and batch size, on the same real MNIST PNG files of a datakit
dataset, in one run, interleaved round by round so that load from other jobs
hits both alike.

* datakit: ``Dataset.load_arrays`` once (cached uint8 array), then
  :func:`datakit.train.loop.train_epochs` over :class:`TensorBatches` (one
  uint8 tensor, vectorised normalisation per batch, no per-sample work).
* torchvision recipe: a map-style Dataset that opens each PNG with PIL, then
  ``transforms.Compose([Pad(2), ToTensor(), Normalize(mean, std)])``, through a
  ``DataLoader`` (shuffle, same batch size), with 0 and 2 workers; the better
  of the two is the baseline.

Usage::

    .venv/bin/python bench/train_throughput.py out/mnist --images 12800 --rounds 3 --threads 1
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F


class _PngDataset(torch.utils.data.Dataset):
    def __init__(self, root: Path, paths, targets, transform):
        self.root, self.paths, self.targets, self.transform = root, list(paths), list(targets), transform

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        from PIL import Image

        with Image.open(self.root / self.paths[i]) as im:
            im = im.convert("L")
            x = self.transform(im)
        return x, self.targets[i]


def run_datakit(ds, n_images: int, batch_size: int, seed: int) -> tuple[float, float]:
    """(images/s in training, seconds of one-time loading)."""
    from datakit.train import get_model
    from datakit.train.data import Normalizer, TensorBatches, channel_stats, input_plan, prepare_images
    from datakit.train.loop import make_optimizer, train_epochs

    t0 = time.perf_counter()
    images, targets = ds.load_arrays("train")
    x = prepare_images(images, input_plan("lenet5", images.shape[1:3], (32, 32)))
    y = torch.from_numpy(targets)
    mean, std = channel_stats(x)
    load_s = time.perf_counter() - t0
    n = min(n_images, x.shape[0])
    torch.manual_seed(seed)
    model = get_model("lenet5", 10, 1)
    opt = make_optimizer(model, "sgd", 0.05)
    batches = TensorBatches(x[:n], y[:n], batch_size, seed=seed)
    t = time.perf_counter()
    hist = train_epochs(model, batches, Normalizer(mean, std), epochs=1, optimizer=opt, device=torch.device("cpu"),
                        seed=seed, schedule="constant")
    return hist[0]["images"] / (time.perf_counter() - t), load_s


def run_torchvision(ds, n_images: int, batch_size: int, seed: int, workers: int, mean: float, std: float) -> float:
    from torchvision import transforms

    from datakit.train import get_model
    from datakit.train.loop import make_optimizer

    frame = ds.manifest[ds.manifest["split"] == "train"].iloc[:n_images]
    tf = transforms.Compose([transforms.Pad(2), transforms.ToTensor(), transforms.Normalize((mean,), (std,))])
    data = _PngDataset(ds.root, frame["path"], [ds.class_to_idx[l] for l in frame["label"]], tf)
    loader = torch.utils.data.DataLoader(data, batch_size=batch_size, shuffle=True, num_workers=workers,
                                         generator=torch.Generator().manual_seed(seed))
    torch.manual_seed(seed)
    model = get_model("lenet5", 10, 1)
    opt = make_optimizer(model, "sgd", 0.05)
    model.train()
    seen = 0
    t = time.perf_counter()
    for xb, yb in loader:
        loss = F.cross_entropy(model(xb), yb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        seen += yb.shape[0]
    return seen / (time.perf_counter() - t)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("dataset", type=Path, help="a datakit dataset of 28x28 greyscale images with a train split")
    p.add_argument("--images", type=int, default=12800, help="training images per measurement")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=1, help="torch threads (at most 2 on the shared machine)")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    from datakit import open_dataset

    ds = open_dataset(args.dataset)
    results: dict[str, list[float]] = {"datakit": [], "torchvision_w0": [], "torchvision_w2": []}
    load_s = []
    mean = std = None
    for r in range(args.rounds):
        ips, ls = run_datakit(ds, args.images, args.batch_size, seed=r)
        results["datakit"].append(ips)
        load_s.append(ls)
        if mean is None:
            images, _ = ds.load_arrays("train")
            mean, std = float(images.mean() / 255), float(images.std() / 255)
        for w in (0, 2):
            results[f"torchvision_w{w}"].append(run_torchvision(ds, args.images, args.batch_size, r, w, mean, std))
        print(f"round {r + 1}: " + ", ".join(f"{k} {v[-1]:.0f} img/s" for k, v in results.items()), flush=True)
    med = {k: statistics.median(v) for k, v in results.items()}
    baseline_key = max(("torchvision_w0", "torchvision_w2"), key=lambda k: med[k])
    summary = {
        "images_per_measurement": args.images, "batch_size": args.batch_size, "rounds": args.rounds,
        "threads": args.threads, "median_img_per_s": med, "all_img_per_s": results,
        "baseline": baseline_key, "speedup_vs_best_torchvision": med["datakit"] / med[baseline_key],
        "datakit_one_time_load_s": load_s,
    }
    print(json.dumps(summary, indent=2))
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
