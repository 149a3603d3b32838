"""The in-memory finalize pass (builds with ``[curate]`` or ``[relabel]``): dedupe, group, split."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np
import pandas as pd

from datakit.build.curate import _apply_curation, _curated_fixed, _select_by_frequency
from datakit.build.labels import _chunk_labels, _keeps_split, _note_unmapped, _warn_unmapped
from datakit.build.staging import STAGING_DIR, _Chunks, _Staging
from datakit.build.summary import _dedup_stats
from datakit.recipe import Recipe
from datakit.store.manifest import MANIFEST_COLUMNS, REJECTED_COLUMNS, conform
from datakit.store.splits import assign_splits

if TYPE_CHECKING:
    from datakit.build.plan import BuildPlan

__all__ = ["_group_near_duplicates", "_finalize"]


def _group_near_duplicates(recipe: Recipe, hashes: np.ndarray, out: Path,
                           thumbnails: Callable[[np.ndarray], np.ndarray], n_jobs: int | None = None) -> np.ndarray:
    """Near-duplicate group of each kept image, as the recipe's ``[splits]`` asks.

    ``thumbnails(indices)`` gives the 32x32 uint8 thumbnails of those kept
    images (:meth:`_Chunks.thumbnails`); only images with a candidate partner
    are asked for (pixel check). ``n_jobs``: threads for the hash search (the
    build's workers are idle by then).
    """
    from datakit.dedup import confirmed_duplicate_groups, near_duplicate_groups

    dist = recipe.splits.near_duplicate_distance
    if not len(hashes):
        return np.zeros(0, np.int64)
    if recipe.splits.near_duplicate_verify != "pixels":
        return near_duplicate_groups(hashes, dist, n_jobs=n_jobs)
    return confirmed_duplicate_groups(hashes, dist, thumbnails, min_similarity=recipe.splits.near_duplicate_similarity,
                                      n_jobs=n_jobs, workdir=out / STAGING_DIR)  # the staging folder: removed with the build


def _finalize(plan: BuildPlan, staging: _Staging, out: Path,
              n_jobs: int | None = None) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """Dedupe, group, split. Returns (manifest, rejected, stats)."""

    recipe = plan.recipe
    frames = []
    for spec, _ in plan.sources:
        frame = _chunk_labels(staging.read(spec.name), spec, _keeps_split(spec, recipe))
        _warn_unmapped(spec, *_note_unmapped(frame, spec))
        frames.append(frame)
    rows = pd.concat(frames, ignore_index=True)
    failed = rows[~rows["ok"]]
    ok = rows[rows["ok"]].reset_index(drop=True)
    # exact duplicates: first occurrence (recipe order, then source order) kept
    dup = ok["id"].duplicated(keep="first").to_numpy()
    first_ref = ok[~dup].set_index("id")["source_ref"]
    first_src = ok[~dup].set_index("id")["source"]
    dups = ok[dup]
    dup_rej = pd.DataFrame({
        "id": dups["id"], "source": dups["source"], "source_ref": dups["source_ref"], "stage": "dedup",
        "reason": "duplicate",
        "detail": [f"same content as kept image {i} ({first_src[i]}: {first_ref[i]})" for i in dups["id"]],
    })
    kept = ok[~dup].reset_index(drop=True)
    # near duplicates -> one split per group
    dist = recipe.splits.near_duplicate_distance
    hashes = kept["phash"].to_numpy(dtype=np.uint64)
    chunks, kept_ok = _Chunks.of(plan, staging), np.flatnonzero(~dup)
    groups = _group_near_duplicates(recipe, hashes, out, lambda idx: chunks.thumbnails(kept_ok[idx], out), n_jobs)
    spec_split = recipe.splits
    strategy = spec_split.strategy if spec_split.strategy != "source" else spec_split.fallback
    fixed = kept["fixed"].astype(object).where(kept["fixed"].notna(), None).tolist()
    fractions = (spec_split.train, spec_split.val, spec_split.test)
    curation = None
    if plan.curate is not None:
        kept, curation = _select_by_frequency(plan, kept)
        fixed, fractions = _curated_fixed(recipe.curate, kept["selected"].to_numpy(), fixed, fractions, strategy)
    splits = assign_splits(kept["label"].astype(object).where(kept["label"].notna(), None).tolist(), groups,
                           strategy=strategy, fractions=fractions,
                           per_class=spec_split.per_class, val_per_class=spec_split.val_per_class,
                           seed=spec_split.seed, fixed=fixed)
    kept["split"] = pd.array(splits, dtype="string")
    kept["near_dup_group"] = groups.astype(np.int64)
    cur_rej = None
    if curation is not None:
        kept, cur_rej = _apply_curation(recipe.curate, kept, curation)
        groups = kept["near_dup_group"].to_numpy(dtype=np.int64)
    relabel_rej = relabelling = None
    if plan.relabel is not None:  # after the splits: a relabelled image stays in its split
        from datakit.crowd.relabel import apply_relabel

        kept, relabel_rej, relabelling = apply_relabel(recipe.relabel, plan.relabel, kept)
        groups = kept["near_dup_group"].to_numpy(dtype=np.int64)
    moved = int(((kept["fixed"].notna()) & (kept["fixed"] != kept["split"])).fillna(False).sum())
    sizes = np.bincount(groups) if len(groups) else np.zeros(0, np.int64)
    label_names = recipe.categories
    kept["label_name"] = kept["label"].map(lambda v: label_names.get(v, v) if isinstance(v, str) else None
                                           ).astype("string")
    drop_cols = ["ok", "stage", "reason", "detail", "seq", "fixed", "selected", "curation_reason"]
    if not kept["candidate_id"].notna().any():
        drop_cols.append("candidate_id")  # only candidates sources have one
    manifest = conform(kept.drop(columns=[c for c in drop_cols if c in kept.columns]), MANIFEST_COLUMNS)
    manifest["phash"] = manifest["phash"].astype("uint64")
    rej_cols = ["id", "source", "source_ref", "stage", "reason", "detail"]
    parts = [failed[rej_cols]] + [f[rej_cols] for f in (dup_rej, cur_rej, relabel_rej) if f is not None and len(f)]
    rejected = pd.concat(parts, ignore_index=True) if len(parts) > 1 else failed[rej_cols].reset_index(drop=True)
    rejected = conform(rejected, REJECTED_COLUMNS)
    stats = _dedup_stats(recipe, dist, sizes, moved, int(dup.sum()))
    if curation is not None:
        stats["curation"] = curation
    if relabelling is not None:
        stats["relabel"] = relabelling
    return manifest, rejected, stats
