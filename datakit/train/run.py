"""Training and evaluating on dataset directories (what ``datakit train`` / ``evaluate`` run).

A run directory holds::

    checkpoint.pt   the last completed epoch (state dict + metadata, see checkpoint.py)
    metrics.json    per epoch: train loss/accuracy, eval top-1/top-5, per-class
                    accuracy, confusion matrix; run options; status

Both are written atomically after every epoch, so an interrupted run leaves
the last good epoch and ``--resume`` continues from it.
"""
from __future__ import annotations

import datetime as _dt
import logging
import os
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from datakit.errors import DatakitError
from datakit.store.atomic import atomic_write_json
from datakit.store.dataset import Dataset, open_dataset
from datakit.train.checkpoint import (CheckpointError, check_same_classes, load_checkpoint, model_from_checkpoint,
                                      plain, save_checkpoint)
from datakit.train.data import (InputPlan, LoaderBatches, Normalizer, TensorBatches, channel_stats, input_plan,
                                make_augment, prepare_images)
from datakit.train.distributed import init_from_env, unwrap
from datakit.train.fit import build_model
from datakit.train.loop import (TrainingDiverged, evaluate_batches, evaluate_tensors, make_optimizer,
                                resolve_device, train_epochs)
from datakit.train.models import MODELS

__all__ = ["RunResult", "EvalResult", "train_dataset", "evaluate_checkpoint", "dataset_geometry",
           "DEFAULT_MEMORY_LIMIT"]

logger = logging.getLogger(__name__)

#: Datasets whose prepared uint8 tensor is below this many bytes are held in memory.
DEFAULT_MEMORY_LIMIT = 4 * 2 ** 30

ProgressFactory = Callable[[int, str], Callable[[int], None]]


@dataclass
class RunResult:
    """What :func:`train_dataset` returns."""

    out: Path
    model: nn.Module
    history: list = field(default_factory=list)
    checkpoint: Path | None = None
    metrics_path: Path | None = None
    seconds: float = 0.0
    rank: int = 0
    world_size: int = 1


@dataclass
class EvalResult:
    """What :func:`evaluate_checkpoint` returns.

    ``metrics`` has ``n``, ``top1``, ``top5``, ``loss``, ``per_class_accuracy``
    and ``confusion`` over the checkpoint's classes; ``excluded`` maps each
    dataset class the model does not know to its number of images.
    """

    metrics: dict
    classes: list
    excluded: dict
    split: str | None
    n_images: int


# --------------------------------------------------------------------------- dataset helpers


def dataset_geometry(ds: Dataset, frame=None, sample: int = 64) -> tuple[tuple[int, int], str, bool]:
    """Most common image size, pixel mode and whether sizes vary.

    Returns
    -------
    (H, W), mode, varied
        mode is ``"L"`` when every sampled image is greyscale, else ``"RGB"``.
    """
    from PIL import Image

    frame = ds.manifest if frame is None else frame
    if len(frame) == 0:
        raise DatakitError(f"{ds.root} has no images.")
    if "height" in frame and "width" in frame and frame["height"].notna().all():
        sizes = Counter(zip(frame["height"].astype(int), frame["width"].astype(int)))
    else:
        sizes = Counter()
    idx = np.linspace(0, len(frame) - 1, num=min(sample, len(frame))).astype(int)
    modes = set()
    for rel in frame["path"].iloc[idx]:
        with Image.open(ds.root / rel) as im:
            modes.add(im.mode)
            if not sizes:
                sizes[(im.height, im.width)] += 1
    mode = "L" if modes <= {"L", "1", "I;16", "I"} else "RGB"
    (h, w), _ = sizes.most_common(1)[0]
    return (int(h), int(w)), mode, len(sizes) > 1


class _UInt8Transform:
    """PIL image -> uint8 tensor (C, H, W) following an input plan (picklable, for DataLoader workers)."""

    def __init__(self, mode: str, plan: InputPlan, base_size: tuple[int, int]) -> None:
        self.mode, self.plan = mode, plan
        # images of another size than the dataset's usual one are brought to it first
        self.size = tuple(plan.resize) if plan.resize is not None else tuple(base_size)

    def __call__(self, im):
        from PIL import Image

        if im.mode != self.mode:
            im = im.convert(self.mode)
        if im.size != (self.size[1], self.size[0]):
            im = im.resize((self.size[1], self.size[0]), Image.BILINEAR)
        a = np.asarray(im)
        a = a[None] if a.ndim == 2 else a.transpose(2, 0, 1)
        t = torch.from_numpy(np.array(a, copy=True))  # own, writable memory
        if self.plan.pad:
            t = torch.nn.functional.pad(t, (self.plan.pad,) * 4)
        return t


class _MappedTargets:
    def __init__(self, mapping: dict) -> None:
        self.mapping = mapping

    def __call__(self, target: int) -> int:
        return self.mapping[target]


def _load_split(ds: Dataset, split: str, mode: str, size: tuple[int, int], varied: bool):
    images, targets = ds.load_arrays(split, size=size if varied else None, mode=mode)
    if images.ndim == 4 and mode == "L":
        images = images[..., 0]
    return images, targets


def _versions() -> dict:
    import torchvision

    from datakit import __version__

    return {"datakit": str(__version__), "torch": str(torch.__version__), "torchvision": str(torchvision.__version__)}


# --------------------------------------------------------------------------- train


def train_dataset(dataset: str | os.PathLike | Dataset, model: str = "lenet5", *, out: str | os.PathLike,
                  epochs: int = 10, batch_size: int = 128, lr: float | None = None, seed: int = 0,
                  device: str = "auto", resume: bool = False, optimizer: str = "sgd", schedule: str = "cosine",
                  weight_decay: float = 5e-4, model_config: dict | None = None, eval_split: str | None = "auto",
                  data_mode: str = "auto", workers: int = 2, memory_limit: int = DEFAULT_MEMORY_LIMIT,
                  progress: ProgressFactory | None = None, augment: str | None = None) -> RunResult:
    """Train ``model`` on the ``train`` split of a dataset directory.

    Parameters
    ----------
    dataset : path or Dataset
    model : str
        A registered model name.
    out : path
        Run directory for ``checkpoint.pt`` and ``metrics.json``.
    epochs, batch_size, lr, seed : training options
        ``batch_size`` is per process under DDP (PyTorch's convention).
    device : {"auto", "cpu", "cuda"}
    resume : bool
        Continue from ``out/checkpoint.pt`` (same dataset and model required).
    eval_split : str or None
        Split evaluated after each epoch; ``"auto"``: ``test``, else ``val``, else none.
    data_mode : {"auto", "memory", "stream"}
        ``memory`` holds the split as one uint8 tensor; ``stream`` reads images
        through a DataLoader; ``auto`` picks memory below ``memory_limit`` bytes.
    augment : {None, "none", "shift", "shift:N"}
        Random translations during training (see :class:`datakit.train.data.RandomShift`).
    progress : callable(total, desc) -> callable(n), optional
        Factory for a progress callback (the CLI passes a tqdm bar); only rank 0 uses it.

    Returns
    -------
    RunResult

    Raises
    ------
    DatakitError
        No train split, fewer than two classes in it, an existing run without
        ``--resume``, or a checkpoint from another dataset/model.
    TrainingDiverged
        NaN/inf loss; ``metrics.json`` records where, ``checkpoint.pt`` keeps
        the last good epoch.
    """
    t0 = time.perf_counter()
    ds = dataset if isinstance(dataset, Dataset) else open_dataset(dataset)
    MODELS.get(model)  # unknown model: fail before any work, listing valid names
    if data_mode not in ("auto", "memory", "stream"):
        raise ValueError(f"Unknown value {data_mode!r} for data_mode. Valid values are {{auto, memory, stream}}.")
    if epochs < 1 or batch_size < 1:
        raise ValueError(f"epochs and batch_size must be >= 1, got {epochs} and {batch_size}")
    aug = make_augment(augment, seed)
    splits = ds.splits
    if "train" not in splits:
        raise DatakitError(f"{ds.root} has no 'train' split (splits: {', '.join(map(str, splits)) or 'none'}); "
                           "nothing to train on. Rebuild it with a [splits] section in the recipe.")
    manifest = ds.manifest
    train_frame = manifest[(manifest["split"] == "train") & manifest["label"].notna()]
    present = sorted(set(train_frame["label"].astype(str)))
    if len(present) < 2:
        raise DatakitError(f"The train split of {ds.root} has {len(present)} class(es) "
                           f"({', '.join(present) or 'no labels'}); training a classifier needs at least 2.")
    if eval_split == "auto":
        eval_split = "test" if "test" in splits else "val" if "val" in splits else None
    elif eval_split is not None and eval_split not in splits:
        raise DatakitError(f"Unknown split {eval_split!r} in {ds.root}. Valid values are {{{', '.join(splits)}}}.")
    out = Path(out)
    ckpt_path, metrics_path = out / "checkpoint.pt", out / "metrics.json"

    dev = resolve_device(device)
    dist = init_from_env(dev)
    try:
        if dist.enabled and dev.type == "cuda":
            dev = torch.device("cuda", dist.local_rank)
        classes = list(ds.classes)
        num_classes = len(classes)

        resume_ckpt = None
        if ckpt_path.exists():
            if not resume:
                raise DatakitError(f"{out} already holds a run (checkpoint.pt). Pass --resume to continue it, "
                                   "or choose another --out.")
            resume_ckpt = load_checkpoint(ckpt_path)
            if resume_ckpt["dataset"]["checksum"] != ds.checksum:
                raise CheckpointError(f"{ckpt_path} was trained on another dataset (checksum "
                                      f"{resume_ckpt['dataset']['checksum'][:12]}, this one {ds.checksum[:12]}); "
                                      "cannot resume.")
            check_same_classes(resume_ckpt, classes)
            if resume_ckpt["model"]["name"] != model:
                raise CheckpointError(f"{ckpt_path} holds a {resume_ckpt['model']['name']!r} model, not {model!r}; "
                                      "cannot resume.")
        elif resume:
            logger.info("--resume: no checkpoint in %s yet, starting from scratch", out)

        size, mode, varied = dataset_geometry(ds, train_frame)
        in_channels = 1 if mode == "L" else 3
        torch.manual_seed(seed)
        cfg = dict(model_config or {})
        if resume_ckpt is not None:
            cfg = dict(resume_ckpt["model"]["config"] or {})
        net = build_model(model, num_classes, in_channels, size, cfg)
        plan = input_plan(model, size, net.input_size)
        c, (h, w) = in_channels, plan.output_size
        nbytes = len(train_frame) * c * h * w
        in_memory = data_mode == "memory" or (data_mode == "auto" and nbytes <= memory_limit)
        logger.info("%s: %d train images %dx%d %s -> %s (%s), %s", ds.root, len(train_frame), size[0], size[1],
                    mode, plan.describe(), "in memory" if in_memory else "streamed", dev)

        eval_source = None
        if in_memory:
            xtr, ytr = _load_split(ds, "train", mode, size, varied)
            keep = ytr >= 0
            xt = prepare_images(xtr[keep], plan)
            yt = torch.from_numpy(ytr[keep])
            mean, std = channel_stats(xt)
            if dev.type == "cuda":
                xt, yt = xt.to(dev), yt.to(dev)
            batches = TensorBatches(xt, yt, batch_size, seed=seed, rank=dist.rank, world_size=dist.world_size)
            if eval_split is not None and dist.is_main:
                xe, ye = _load_split(ds, eval_split, mode, size, varied)
                keep = ye >= 0
                eval_source = ("tensor", prepare_images(xe[keep], plan), torch.from_numpy(ye[keep]))
        else:
            tf = _UInt8Transform(mode, plan, size)
            train_view = ds.split("train", transform=tf)
            labeled = [i for i, l in enumerate(train_view.frame["label"]) if isinstance(l, str)]
            from torch.utils.data import Subset

            train_set = Subset(train_view, labeled) if len(labeled) < len(train_view) else train_view
            rng = np.random.default_rng(seed)
            sample = rng.choice(len(train_set), size=min(len(train_set), 5000), replace=False)
            mean, std = channel_stats(torch.stack([train_set[int(i)][0] for i in sample]))
            batches = LoaderBatches(train_set, batch_size, seed=seed, workers=workers,
                                    pin_memory=dev.type == "cuda", rank=dist.rank, world_size=dist.world_size)
            if eval_split is not None and dist.is_main:
                ev = ds.split(eval_split, transform=tf)
                lab = [i for i, l in enumerate(ev.frame["label"]) if isinstance(l, str)]
                eval_source = ("loader", Subset(ev, lab))
        normalize = Normalizer(mean, std)

        net = net.to(dev)
        opt = make_optimizer(net, optimizer, lr, weight_decay)
        base_lr = opt.param_groups[0]["lr"]
        start_epoch = 0
        metrics_doc = {
            "status": "running",
            "started": _dt.datetime.now(_dt.timezone.utc).isoformat(),
            "dataset": {"path": str(ds.root), "name": ds.name, "checksum": ds.checksum, "classes": classes,
                        "train_images": int(len(train_frame)), "eval_split": eval_split,
                        "unlabeled_train_images_skipped": int(((manifest["split"] == "train")
                                                               & manifest["label"].isna()).sum())},
            "model": {"name": model, "config": plain(net.config), "input_plan": plan.describe(),
                      "input_size": list(plan.output_size), "in_channels": in_channels},
            "train": {"epochs": epochs, "batch_size": batch_size, "lr": base_lr, "optimizer": optimizer,
                      "schedule": schedule, "weight_decay": weight_decay, "seed": seed, "device": str(dev),
                      "world_size": dist.world_size, "data": "memory" if in_memory else "stream",
                      "augment": augment or "none"},
            "epochs": [],
        }
        if resume_ckpt is not None:
            net.load_state_dict(resume_ckpt["state_dict"])
            opt.load_state_dict(resume_ckpt["optimizer"])
            start_epoch = int(resume_ckpt["epoch"])
            base_lr = float(resume_ckpt["train"]["lr"])
            normalize = Normalizer(resume_ckpt["normalization"]["mean"], resume_ckpt["normalization"]["std"])
            if metrics_path.exists():
                import json

                old = json.loads(metrics_path.read_text())
                metrics_doc["epochs"] = [e for e in old.get("epochs", []) if e["epoch"] <= start_epoch]
                metrics_doc["started"] = old.get("started", metrics_doc["started"])
            metrics_doc["resumed_at_epoch"] = start_epoch
            logger.info("resuming %s at epoch %d of %d", out, start_epoch + 1, epochs)
        metrics_doc["normalization"] = normalize.to_dict()
        wrapped = dist.wrap(net, dev)

        norm_meta = {**normalize.to_dict(), "input_plan": plan.describe(), "recipe": plain(ds.info.get("normalize"))}
        names = ds.categories.set_index(ds.categories["label"].astype(str))["name"].astype(str).to_dict() \
            if "name" in ds.categories else {}
        ckpt_base = {
            "model": {"name": model, "config": plain(net.config), "num_classes": num_classes,
                      "in_channels": in_channels, "input_size": [int(v) for v in net.input_size]},
            "train": {"batch_size": batch_size, "lr": base_lr, "optimizer": optimizer, "schedule": schedule,
                      "weight_decay": weight_decay, "seed": seed, "world_size": dist.world_size,
                      "augment": augment or "none"},
            "dataset": {"path": str(ds.root), "name": ds.name, "checksum": ds.checksum, "classes": classes,
                        "class_names": [names.get(c, c) for c in classes], "image_size": list(size), "mode": mode},
            "normalization": norm_meta,
            "epochs": epochs,
            "versions": _versions(),
        }
        bar = None
        if progress is not None and dist.is_main:
            bar = progress(batches.num_images * (epochs - start_epoch), f"train {model}")

        def on_epoch_end(epoch: int, record: dict) -> None:
            if not dist.is_main:
                return
            record = dict(record)
            if eval_source is not None:
                if eval_source[0] == "tensor":
                    m = evaluate_tensors(net, eval_source[1], eval_source[2], normalize, num_classes, dev)
                else:
                    from torch.utils.data import DataLoader

                    loader = DataLoader(eval_source[1], batch_size=512, num_workers=workers,
                                        pin_memory=dev.type == "cuda")
                    m = evaluate_batches(net, ((xb, torch.as_tensor(yb)) for xb, yb in loader), normalize,
                                         num_classes, dev)
                record.update({"split": eval_split, **{f"eval_{k}": v for k, v in m.items()}})
            record["seconds"] = time.perf_counter() - t0
            metrics_doc["epochs"].append(record)
            save_checkpoint(ckpt_path, {**ckpt_base, "state_dict": unwrap(net).state_dict(),
                                        "optimizer": opt.state_dict(), "epoch": epoch + 1, "metrics": plain(record)})
            metrics_doc["status"] = "running" if epoch + 1 < epochs else "completed"
            atomic_write_json(metrics_path, plain(metrics_doc))
            msg = f"epoch {epoch + 1}/{epochs} loss {record['train_loss']:.4f} train acc {record['train_acc']:.4f}"
            if "eval_top1" in record:
                msg += f" {eval_split} top1 {record['eval_top1']:.4f} top5 {record['eval_top5']:.4f}"
            logger.info(msg)

        if dist.is_main:
            out.mkdir(parents=True, exist_ok=True)
        try:
            history = train_epochs(wrapped, batches, normalize, epochs=epochs, optimizer=opt, device=dev, seed=seed,
                                   start_epoch=start_epoch, schedule=schedule, base_lr=base_lr,
                                   on_epoch_end=on_epoch_end, progress=bar, augment=aug)
        except TrainingDiverged as exc:
            if dist.is_main:
                metrics_doc["status"] = "diverged"
                metrics_doc["diverged"] = {"epoch": exc.epoch + 1, "batch": exc.batch + 1, "loss": str(exc.loss),
                                           "last_good_checkpoint_epoch": len(metrics_doc["epochs"]) and
                                           metrics_doc["epochs"][-1]["epoch"]}
                atomic_write_json(metrics_path, plain(metrics_doc))
            kept = (f"{ckpt_path} keeps epoch {metrics_doc['epochs'][-1]['epoch']}" if metrics_doc["epochs"]
                    else "no epoch completed, so no checkpoint was written")
            # every rank stops at the same batch (the loop agrees on it); meet here, as a finished run does,
            # so no rank tears down the process group while another is still using it
            dist.barrier()
            raise TrainingDiverged(exc.epoch, exc.batch, exc.loss, note=f"The run stopped; {kept}.") from None
        finally:
            if bar is not None and hasattr(bar, "close"):
                bar.close()
        dist.barrier()
        net.eval()
        return RunResult(out=out, model=net, history=history, checkpoint=ckpt_path if dist.is_main else None,
                         metrics_path=metrics_path if dist.is_main else None, seconds=time.perf_counter() - t0,
                         rank=dist.rank, world_size=dist.world_size)
    finally:
        dist.close()


# --------------------------------------------------------------------------- evaluate


def evaluate_checkpoint(checkpoint: str | os.PathLike, dataset: str | os.PathLike | Dataset, split: str | None = "test",
                        device: str = "auto", batch_size: int = 512) -> EvalResult:
    """Evaluate a checkpoint on any dataset sharing (some of) its classes.

    Images are matched to the checkpoint's classes by class id (the manifest's
    ``label``); images of classes the model does not know are left out and
    counted in ``EvalResult.excluded``. Images are converted to the model's
    channels and brought to its input with the same size plan as in training.

    Raises
    ------
    CheckpointError
        The dataset shares no class with the checkpoint.
    DatakitError
        Unknown split.
    """
    ckpt = load_checkpoint(checkpoint)
    ds = dataset if isinstance(dataset, Dataset) else open_dataset(dataset)
    if split is not None and split not in ds.splits:
        raise DatakitError(f"Unknown split {split!r} in {ds.root}. Valid values are {{{', '.join(ds.splits)}}}.")
    classes = [str(c) for c in ckpt["dataset"]["classes"]]
    index = {c: i for i, c in enumerate(classes)}
    frame = ds.manifest if split is None else ds.manifest[ds.manifest["split"] == split]
    labels = frame["label"]
    known = labels.isin(index.keys()).to_numpy()
    excluded = {str(k): int(v) for k, v in labels[~known].fillna("<unlabeled>").value_counts().items()}
    if not known.any():
        raise CheckpointError(
            f"The checkpoint was trained on other classes: none of its {len(classes)} classes "
            f"({', '.join(classes[:10])}{' ...' if len(classes) > 10 else ''}) occurs in split {split!r} of {ds.root} "
            f"(its classes: {', '.join(list(excluded)[:10])})."
        )
    model = model_from_checkpoint(ckpt)
    in_channels = int(ckpt["model"]["in_channels"])
    mode = "L" if in_channels == 1 else "RGB"
    size, _, varied = dataset_geometry(ds, frame)
    images, _ = _load_split(ds, split, mode, size, varied) if split is not None else \
        _load_split_all(ds, mode, size, varied)
    targets = np.array([index.get(str(l), -1) if isinstance(l, str) else -1 for l in labels], dtype=np.int64)
    images, targets = images[known], targets[known]
    plan = input_plan(ckpt["model"]["name"], size, tuple(ckpt["model"]["input_size"]))
    x = prepare_images(images, plan)
    dev = resolve_device(device)
    model = model.to(dev)
    norm = ckpt["normalization"]
    metrics = evaluate_tensors(model, x, torch.from_numpy(targets), Normalizer(norm["mean"], norm["std"]),
                               len(classes), dev, batch_size=batch_size)
    metrics["input_plan"] = plan.describe()
    return EvalResult(metrics=metrics, classes=classes, excluded=excluded, split=split, n_images=int(len(frame)))


def _load_split_all(ds: Dataset, mode: str, size, varied: bool):
    images, targets = ds.load_arrays(None, size=size if varied else None, mode=mode)
    if images.ndim == 4 and mode == "L":
        images = images[..., 0]
    return images, targets
