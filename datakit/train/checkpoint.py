"""Checkpoints: a state dict plus plain-typed metadata, loadable with ``weights_only=True``.

Layout of the saved dict::

    format        "datakit-checkpoint", version 1
    model         {"name", "config", "num_classes", "in_channels", "input_size"}
    state_dict    the model's tensors
    optimizer     the optimizer's state dict (for --resume)
    epoch         completed epochs; "epochs": planned epochs
    train         {"batch_size", "lr", "optimizer", "schedule", "weight_decay", "seed", "world_size"}
    dataset       {"path", "name", "checksum", "classes", "class_names", "image_size", "mode"}
    normalization {"mean", "std", "scale", "input_plan", "recipe"}  (recipe: datakit.json's "normalize")
    metrics       the last epoch's record
    versions      {"datakit", "torch", "torchvision"}

Everything but tensors is str / int / float / bool / None / list / dict, so
``torch.load(path, weights_only=True)`` reads it without unpickling code.
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import torch
from torch import nn

from datakit.errors import DatakitError

__all__ = [
    "CHECKPOINT_FORMAT", "CheckpointError", "save_checkpoint", "load_checkpoint", "model_from_checkpoint",
    "check_same_classes", "plain",
]

logger = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "datakit-checkpoint"
CHECKPOINT_VERSION = 1


class CheckpointError(DatakitError):
    """A checkpoint that cannot be used here (unreadable, or for other data)."""


def plain(obj):
    """``obj`` converted to JSON-able plain types (tuples -> lists, numpy scalars -> Python)."""
    return json.loads(json.dumps(obj, default=lambda o: o.item() if hasattr(o, "item") else str(o)))


def save_checkpoint(path: str | os.PathLike, payload: dict) -> None:
    """Write ``payload`` (see module doc) atomically with ``torch.save``."""
    from datakit.store.atomic import atomic_write

    payload = {k: (v if k in ("state_dict", "optimizer") else plain(v)) for k, v in payload.items()}
    payload["format"] = CHECKPOINT_FORMAT
    payload["version"] = CHECKPOINT_VERSION
    with atomic_write(path, "wb") as fh:
        torch.save(payload, fh)


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict:
    """Read a checkpoint with ``torch.load(..., weights_only=True)``.

    Raises
    ------
    CheckpointError
        Missing file, not a torch file, or not a datakit checkpoint.
    """
    path = Path(path)
    if path.is_dir():
        path = path / "checkpoint.pt"
    if not path.exists():
        raise CheckpointError(f"No checkpoint at {path}. Train one with `datakit train DATASET --out RUN_DIR`.")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises several types for foreign or corrupt files
        lines = [l.strip() for l in str(exc).splitlines() if l.strip()]
        why = next((l for l in lines if "WeightsUnpickler" in l), lines[0] if lines else "")
        raise CheckpointError(f"{path} is not a readable datakit checkpoint ({type(exc).__name__}: {why})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path} is not a datakit checkpoint (no format={CHECKPOINT_FORMAT!r} entry).")
    if ckpt.get("version", 0) > CHECKPOINT_VERSION:
        raise CheckpointError(f"{path} has checkpoint version {ckpt['version']}; this datakit reads up to "
                              f"{CHECKPOINT_VERSION}. Upgrade datakit.")
    return ckpt


def model_from_checkpoint(ckpt: dict) -> nn.Module:
    """Rebuild the model of a checkpoint and load its weights (eval mode, CPU)."""
    from datakit.train.models import get_model

    spec = ckpt["model"]
    model = get_model(spec["name"], num_classes=int(spec["num_classes"]), in_channels=int(spec["in_channels"]),
                      **dict(spec.get("config") or {}))
    model.load_state_dict(ckpt["state_dict"])
    model.eval()
    return model


def check_same_classes(ckpt: dict, classes: list[str], what: str = "this dataset") -> None:
    """Refuse a checkpoint whose class list differs from ``classes`` (same ids, same order).

    Raises
    ------
    CheckpointError
        The message lists the classes only one side has.
    """
    theirs = [str(c) for c in ckpt["dataset"]["classes"]]
    ours = [str(c) for c in classes]
    if theirs == ours:
        return
    only_ckpt = sorted(set(theirs) - set(ours))
    only_data = sorted(set(ours) - set(theirs))
    detail = []
    if only_ckpt:
        detail.append(f"only in the checkpoint: {', '.join(only_ckpt[:10])}{' ...' if len(only_ckpt) > 10 else ''}")
    if only_data:
        detail.append(f"only in {what}: {', '.join(only_data[:10])}{' ...' if len(only_data) > 10 else ''}")
    if not detail:
        detail.append("same classes in a different order")
    raise CheckpointError(
        f"The checkpoint was trained on other classes than {what} ({len(theirs)} vs {len(ours)} classes; "
        f"{'; '.join(detail)})."
    )
