"""``datakit train`` and ``datakit evaluate``."""
from __future__ import annotations

import json
from pathlib import Path

import click
import pandas as pd

from datakit.cli._options import emit_table, format_option, progress_bar, quiet_option
from datakit.cli.summary import parse_config

__all__ = ["train", "evaluate"]


def _bar_factory(quiet: bool):
    def make(total: int, desc: str):
        return progress_bar(total, desc, quiet=quiet)

    return make


@click.command(help="Train a conv net on DATASET's train split; evaluate each epoch on its test (or val) split.\n\n"
                    "Writes RUN_DIR/checkpoint.pt (last completed epoch) and RUN_DIR/metrics.json (top-1, top-5, "
                    "per-class accuracy, confusion matrix per epoch). Under `torchrun --nproc_per_node=N` the same "
                    "command trains with DistributedDataParallel (--batch-size is per process).")
@click.argument("dataset", type=click.Path(exists=True, file_okay=False))
@click.option("--model", "model_name", default="lenet5", show_default=True,
              help="Model name: lenet5, lenet1989, alexnet, vgg11, vgg16, googlenet, resnet18, resnet50 "
                   "(datakit.train.list_models()).")
@click.option("--epochs", type=click.IntRange(min=1), default=10, show_default=True)
@click.option("--batch-size", type=click.IntRange(min=1), default=128, show_default=True, help="Per process.")
@click.option("--lr", type=float, default=None, help="Learning rate (default 0.05 for sgd, 1e-3 for adam/adamw).")
@click.option("--optimizer", type=click.Choice(["sgd", "adam", "adamw"]), default="sgd", show_default=True)
@click.option("--schedule", type=click.Choice(["cosine", "constant"]), default="cosine", show_default=True)
@click.option("--weight-decay", type=float, default=5e-4, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--augment", default="none", show_default=True, metavar="none|shift|shift:N",
              help="Random translations of ±2 (or N) pixels per image, applied to uint8 batches on the device.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True,
              help="auto: CUDA when available (mixed precision), else CPU.")
@click.option("-c", "--config", "config", multiple=True, metavar="KEY=VALUE",
              help="Model option, repeatable (e.g. -c c3=lecun).")
@click.option("--split", "eval_split", default="auto", show_default=True,
              help="Split evaluated after each epoch (auto: test, else val); 'none' to skip.")
@click.option("--data", "data_mode", type=click.Choice(["auto", "memory", "stream"]), default="auto",
              show_default=True, help="Hold the split in memory as one uint8 tensor, or stream it from the store.")
@click.option("--workers", type=click.IntRange(min=0), default=2, show_default=True,
              help="DataLoader workers when streaming.")
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="CPU threads for torch (default: torch's choice). On a busy machine 1 can be much faster.")
@click.option("--out", "out", type=click.Path(file_okay=False), default=None,
              help="Run directory (default: runs/<dataset>-<model>).")
@click.option("--resume", is_flag=True, help="Continue the run in --out from its last checkpoint.")
@quiet_option
@format_option
def train(dataset, model_name, epochs, batch_size, lr, optimizer, schedule, weight_decay, seed, augment, device, config,
          eval_split, data_mode, workers, threads, out, resume, quiet, fmt) -> None:
    from datakit.train.run import train_dataset as _run_train

    if threads is not None:
        import torch

        torch.set_num_threads(threads)

    if out is None:
        out = Path("runs") / f"{Path(dataset).resolve().name}-{model_name}"
    try:
        result = _run_train(dataset, model_name, out=out, epochs=epochs, batch_size=batch_size, lr=lr, seed=seed,
                            device=device, resume=resume, optimizer=optimizer, schedule=schedule,
                            weight_decay=weight_decay, model_config=parse_config(config),
                            eval_split=None if eval_split == "none" else eval_split, data_mode=data_mode,
                            workers=workers, progress=_bar_factory(quiet), augment=augment)
    except ValueError as exc:  # bad option values (lr <= 0, --augment, model options)
        raise click.ClickException(str(exc)) from None
    if result.rank != 0:
        return
    doc = json.loads(result.metrics_path.read_text())
    rows = []
    for e in doc["epochs"]:
        row = {"epoch": e["epoch"], "train_loss": round(e["train_loss"], 4), "train_acc": round(e["train_acc"], 4)}
        if "eval_top1" in e:
            row.update({"split": e["split"], "top1": round(e["eval_top1"], 4), "top5": round(e["eval_top5"], 4)})
        row["seconds"] = round(e["seconds"], 1)
        rows.append(row)
    emit_table(pd.DataFrame(rows), fmt)
    if fmt == "table":
        click.echo(f"checkpoint: {result.checkpoint}\nmetrics:    {result.metrics_path}")


@click.command(help="Evaluate CHECKPOINT (a checkpoint.pt or a run directory) on DATASET.\n\n"
                    "Images are matched to the checkpoint's classes by class id; classes the model does not know "
                    "are reported and left out. Prints top-1/top-5 accuracy; --per-class adds per-class accuracy.")
@click.argument("checkpoint", type=click.Path(exists=True))
@click.argument("dataset", type=click.Path(exists=True, file_okay=False))
@click.option("--split", default="test", show_default=True, help="Split to evaluate ('all' for every image).")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@click.option("--batch-size", type=click.IntRange(min=1), default=512, show_default=True)
@click.option("--per-class", is_flag=True, help="Also print accuracy per class.")
@format_option
def evaluate(checkpoint, dataset, split, device, batch_size, per_class, fmt) -> None:
    from datakit.train.run import evaluate_checkpoint

    res = evaluate_checkpoint(checkpoint, dataset, split=None if split == "all" else split, device=device,
                              batch_size=batch_size)
    m = res.metrics
    if fmt == "json":
        click.echo(json.dumps({"split": res.split, "classes": res.classes, "excluded": res.excluded, **m}, indent=2))
        return
    row = {"split": res.split or "all", "images": m["n"], "top1": round(m["top1"], 4), "top5": round(m["top5"], 4),
           "loss": round(m["loss"], 4), "excluded": sum(res.excluded.values())}
    emit_table(pd.DataFrame([row]), fmt)
    if per_class:
        support = [sum(r) for r in m["confusion"]]
        frame = pd.DataFrame({"class": res.classes, "images": support,
                              "accuracy": [None if a is None else round(a, 4) for a in m["per_class_accuracy"]]})
        if fmt == "table":
            click.echo("")
        emit_table(frame, fmt)
    if res.excluded and fmt == "table":
        shown = ", ".join(f"{k} ({v})" for k, v in list(res.excluded.items())[:20])
        click.echo(f"excluded (classes the model does not know): {shown}", err=True)
