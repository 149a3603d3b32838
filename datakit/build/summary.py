"""What a build reports: dedup statistics, counts per split, class and source, the summary table."""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from datakit.recipe import Recipe
from datakit.store.splits import SPLIT_ORDER, split_counts

if TYPE_CHECKING:
    from datakit.build.plan import BuildPlan

__all__ = ["_dedup_stats", "_nested_counts", "_counts", "_summary_frame"]


def _dedup_stats(recipe: Recipe, dist: int, sizes: np.ndarray, moved: int, exact: int) -> dict:
    """The ``deduplication`` entry of datakit.json (group sizes: images per near-duplicate group)."""
    return {
        "near_duplicates": {
            "max_distance": dist,
            "verify": recipe.splits.near_duplicate_verify,
            "min_similarity": recipe.splits.near_duplicate_similarity,
            "groups_with_several_images": int((sizes > 1).sum()),
            "images_in_such_groups": int(sizes[sizes > 1].sum()),
            "largest_group": int(sizes.max()) if len(sizes) else 0,
            "moved_from_source_split": moved,
        },
        "exact_duplicates": exact,
    }


def _nested_counts(key_codes: np.ndarray, key_names: list, split_codes: np.ndarray,
                   split_names: list[str]) -> dict:
    """``{key: {split: n, ..., "total": n}}`` as ``split_counts`` gives it (null key last, as "<NA>")."""
    nk, ns = len(key_names) + 1, len(split_names)
    kc = np.where(key_codes < 0, nk - 1, key_codes)
    table = np.bincount(kc * ns + split_codes, minlength=nk * ns).reshape(nk, ns)
    present = [split_names[j] for j in range(ns) if table[:, j].any()]
    cols = [s for s in SPLIT_ORDER if s in present] + sorted(s for s in present if s not in SPLIT_ORDER)
    col_idx = [split_names.index(c) for c in cols]
    keys = sorted((str(key_names[i]), i) for i in range(nk - 1) if table[i].any())
    if table[nk - 1].any():
        keys.append(("<NA>", nk - 1))
    return {name: {**{c: int(table[i, j]) for c, j in zip(cols, col_idx)}, "total": int(table[i].sum())}
            for name, i in keys}


def _counts(manifest: pd.DataFrame, rejected: pd.DataFrame) -> dict:
    def nested(by: str) -> dict:
        t = split_counts(manifest, by)
        return {str(r[by]): {k: int(v) for k, v in r.items() if k != by} for _, r in t.iterrows()}

    return {
        "kept": int(len(manifest)),
        "rejected": int(len(rejected)),
        "by_split": {str(k): int(v) for k, v in manifest.groupby("split").size().items()},
        "by_class": nested("label") if len(manifest) else {},
        "by_source": nested("source") if len(manifest) else {},
        "rejected_by_reason": {str(k): int(v) for k, v in rejected.groupby("reason").size().items()},
        "rejected_by_source": {f"{s}": {str(r): int(n) for r, n in g.groupby("reason").size().items()}
                               for s, g in rejected.groupby("source")},
    }


def _summary_frame(plan: BuildPlan, info: dict) -> pd.DataFrame:
    rows = []
    by_source = info["counts"]["by_source"]
    rej = info["counts"]["rejected_by_source"]
    splits = list(info["counts"]["by_split"])
    splits = [s for s in SPLIT_ORDER if s in splits] + sorted(s for s in splits if s not in SPLIT_ORDER)
    for src in info["sources"]:
        name = src["name"]
        row = {"source": name, "status": src["status"], "items": src.get("items", 0),
               "kept": by_source.get(name, {}).get("total", 0),
               "rejected": sum(rej.get(name, {}).values())}
        for s in splits:
            row[s] = by_source.get(name, {}).get(s, 0)
        rows.append(row)
    total = {"source": "TOTAL", "status": "", "items": sum(r["items"] for r in rows),
             "kept": sum(r["kept"] for r in rows), "rejected": sum(r["rejected"] for r in rows)}
    for s in splits:
        total[s] = sum(r[s] for r in rows)
    rows.append(total)
    return pd.DataFrame(rows)
