"""Labels of staged rows: the label map, kept source splits, unmapped labels, integer codes, class order."""
from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from datakit.recipe import Recipe, SourceSpec

__all__ = ["_class_order", "_keeps_split", "_note_unmapped", "_warn_unmapped", "_chunk_labels", "_codes"]

logger = logging.getLogger(__name__)


def _class_order(labels: list[str], categories: dict[str, str]) -> list[str]:
    """The recipe's [categories] order when it lists every class, else natural order ("2" before "10")."""
    present = set(labels)
    if present and present <= set(categories):
        return [c for c in categories if c in present]
    return sorted(present, key=lambda s: (0, int(s), s) if s.lstrip("-").isdigit() else (1, 0, s))


def _keeps_split(spec: SourceSpec, recipe: Recipe) -> bool:
    """Whether a source's own train/test split is kept (``keep_split``, else the ``source`` strategy)."""
    return spec.keep_split if spec.keep_split is not None else recipe.splits.strategy == "source"


def _note_unmapped(frame: pd.DataFrame, spec: SourceSpec) -> tuple[int, set[str]]:
    """Images of a staged frame whose label is missing from the label map.

    With ``drop_unmapped`` their detail says they were dropped on purpose;
    otherwise returns their count and labels, for :func:`_warn_unmapped`.
    """
    unmapped = (~frame["ok"]) & (frame["reason"] == "unmapped_label")
    if not unmapped.any():
        return 0, set()
    if spec.drop_unmapped:
        frame.loc[unmapped, "detail"] = "dropped (drop_unmapped = true): " + frame.loc[unmapped, "detail"]
        return 0, set()
    return int(unmapped.sum()), set(frame.loc[unmapped, "source_label"].dropna().astype(str))


def _warn_unmapped(spec: SourceSpec, n: int, labels: set[str]) -> None:
    if n:
        logger.warning("source %r: %d images have labels missing from label_map (%s); they are in "
                       "rejected.parquet (set drop_unmapped = true if this is intended)",
                       spec.name, n, ", ".join(sorted(labels)[:10]))


def _chunk_labels(frame: pd.DataFrame, spec: SourceSpec, keep_split: bool) -> pd.DataFrame:
    """Add ``label`` (after the label map) and ``fixed`` to a staged chunk, as :func:`_finalize` does."""
    lm = spec.label_map
    labels = frame["source_label"].astype(object)
    if lm is not None:
        labels = labels.map(lambda v: lm.get(v) if isinstance(v, str) else None)
    frame["label"] = labels.where(labels.notna(), None).astype("string")
    frame["fixed"] = frame["source_split"] if keep_split else pd.Series([pd.NA] * len(frame), dtype="string")
    return frame


def _codes(values: pd.Series, vocab: dict) -> np.ndarray:
    """Integer code per value (-1 for null), growing ``vocab`` (value -> code)."""
    codes, uniques = pd.factorize(values.astype(object).where(values.notna(), None), use_na_sentinel=True)
    if not len(uniques):
        return np.full(len(values), -1, dtype=np.int32)
    mapping = np.array([vocab.setdefault(str(u), len(vocab)) for u in uniques], dtype=np.int32)
    return np.where(codes >= 0, mapping[np.maximum(codes, 0)], -1).astype(np.int32)
