"""The streaming finalize pass (builds without ``[curate]``): memory proportional to compact columns."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Iterator

import numpy as np
import pandas as pd

from datakit._memory import release_memory as _release_memory
from datakit.build.finalize import _group_near_duplicates
from datakit.build.labels import _chunk_labels, _class_order, _codes, _keeps_split, _note_unmapped, _warn_unmapped
from datakit.build.orphans import _id_digest
from datakit.build.staging import _COMPACT_COLUMNS, STAGING_DIR, _Chunks, _read_chunk, _stage_frame, _Staging
from datakit.build.summary import _dedup_stats, _nested_counts
from datakit.store.manifest import MANIFEST_COLUMNS, REJECTED_COLUMNS, ManifestChecksum, conform
from datakit.store.splits import UNLABELED_KEY, assign_split_codes, assign_splits
from datakit.store.writer import DatasetWriter

if TYPE_CHECKING:
    from datakit.build.plan import BuildPlan

__all__ = ["_finalize_streaming"]


def _finalize_streaming(plan: BuildPlan, staging: _Staging, out: Path, writer: DatasetWriter,
                        n_jobs: int | None = None) -> dict:
    """The finalize pass for builds without ``[curate]``, in memory proportional to compact columns.

    Writes ``manifest.parquet`` (chunk by chunk, identical to what :func:`_finalize` gives) and
    ``rejected.parquet``. Returns kept, rejected, stats, classes, keep_digests, counts, data_sha256.
    """

    recipe = plan.recipe
    _release_memory()  # what the per-image pass freed
    chunks = _Chunks()
    label_vocab: dict[str, int] = {}
    fixed_vocab: dict[str, int] = {}
    cols: dict[str, list[np.ndarray]] = {k: [] for k in ("digest", "phash", "label", "fixed", "source", "cid")}
    failed_parts: list[pd.DataFrame] = []
    rej_cols = ["id", "source", "source_ref", "stage", "reason", "detail"]
    for s_code, (spec, _) in enumerate(plan.sources):
        keep = _keeps_split(spec, recipe)
        unmapped_n, unmapped_labels = 0, set()
        for i in range(staging.complete_chunks(spec.name)):
            path = staging.chunk_path(spec.name, i)
            frame = _read_chunk(path, _COMPACT_COLUMNS)
            ok = frame["ok"].to_numpy(dtype=bool)
            if not ok.all():
                frame = _read_chunk(path)  # failed rows go to rejected.parquet whole
            frame = _chunk_labels(frame, spec, keep)
            if not ok.all():
                n, labels = _note_unmapped(frame, spec)
                unmapped_n += n
                unmapped_labels |= labels
                failed_parts.append(frame.loc[~ok, rej_cols])
            good = frame[ok]
            chunks.entries.append((spec, path, keep))
            chunks.ok_counts.append(len(good))
            cols["digest"].append(_id_digest(good["id"]))
            cols["phash"].append(good["phash"].to_numpy(dtype=np.uint64))
            cols["label"].append(_codes(good["label"], label_vocab))
            cols["fixed"].append(_codes(good["fixed"], fixed_vocab).astype(np.int16))
            cols["source"].append(np.full(len(good), s_code, dtype=np.int16))
            cols["cid"].append(good["candidate_id"].notna().to_numpy(dtype=bool))
            del frame, good
        _warn_unmapped(spec, unmapped_n, unmapped_labels)
    arr = {}
    for k in list(cols):  # one column at a time: its chunk list is freed before the next is joined
        parts = cols.pop(k)
        arr[k] = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int32)
        del parts
    _release_memory()
    n_ok = len(arr["digest"])
    # exact duplicates: rows whose 64-bit digest repeats are candidates, checked on their full ids
    dup = np.zeros(n_ok, dtype=bool)
    dup_rej = None
    if n_ok:
        order = np.argsort(arr["digest"], kind="stable")
        sd = arr["digest"][order]
        same = sd[1:] == sd[:-1]
        cand_mask = np.zeros(n_ok, dtype=bool)
        cand_mask[1:] |= same
        cand_mask[:-1] |= same
        cand = np.sort(order[cand_mask])
        del order, sd, same, cand_mask
        if len(cand):
            cf = chunks.gather(cand, ["id", "source", "source_ref"])
            is_dup = cf["id"].duplicated(keep="first").to_numpy()
            dup[cand[is_dup]] = True
            firsts = cf[~is_dup].set_index("id")
            first_ref, first_src = firsts["source_ref"], firsts["source"]
            dups = cf[is_dup]
            dup_rej = pd.DataFrame({
                "id": dups["id"], "source": dups["source"], "source_ref": dups["source_ref"], "stage": "dedup",
                "reason": "duplicate",
                "detail": [f"same content as kept image {i} ({first_src[i]}: {first_ref[i]})" for i in dups["id"]],
            })
    kept_ok = np.flatnonzero(~dup).astype(np.int32 if n_ok < 2**31 else np.int64)
    n_kept = len(kept_ok)
    hashes = arr.pop("phash")[kept_ok].astype(np.uint64)
    # the kept ids' digests are needed again only at the very end (orphan images): they wait on disk
    digests_path = out / STAGING_DIR / "kept-digests.npy"
    np.save(digests_path, np.sort(arr.pop("digest")[kept_ok]))
    dist = recipe.splits.near_duplicate_distance
    _release_memory()
    groups = _group_near_duplicates(recipe, hashes, out, lambda idx: chunks.thumbnails(kept_ok[idx], out), n_jobs)
    groups = np.asarray(groups, dtype=np.int64)
    del hashes
    _release_memory()
    spec_split = recipe.splits
    strategy = spec_split.strategy if spec_split.strategy != "source" else spec_split.fallback
    fractions = (spec_split.train, spec_split.val, spec_split.test)
    assign_splits([], strategy=strategy, fractions=fractions, per_class=spec_split.per_class,
                  val_per_class=spec_split.val_per_class, seed=spec_split.seed)  # validates the options
    label_names = list(label_vocab)
    kept_label = arr["label"][kept_ok]
    kept_fixed = arr["fixed"][kept_ok].astype(np.int64)
    split_codes, split_names = assign_split_codes(
        np.where(kept_label < 0, len(label_names), kept_label), label_names + [UNLABELED_KEY], groups,
        fixed_codes=kept_fixed, fixed_names=list(fixed_vocab), strategy=strategy, fractions=fractions,
        per_class=spec_split.per_class, val_per_class=spec_split.val_per_class, seed=spec_split.seed)
    split_codes = split_codes.astype(np.int8 if len(split_names) < 128 else np.int64)
    _release_memory()
    fixed_as_split = np.array([split_names.index(f) for f in fixed_vocab] + [-1], dtype=np.int64)
    moved = int(((kept_fixed >= 0) & (fixed_as_split[kept_fixed] != split_codes)).sum())
    sizes = np.bincount(groups) if len(groups) else np.zeros(0, np.int64)
    with_cid = bool(arr["cid"][kept_ok].any())
    categories = recipe.categories
    split_arr = np.asarray(split_names, dtype=object)

    def manifest_frames() -> Iterator[pd.DataFrame]:
        bounds = np.r_[0, np.cumsum(chunks.ok_counts)]
        kept_pos = np.cumsum(~dup) - 1  # kept index of each ok row (valid where not dup)
        drop_cols = ["ok", "stage", "reason", "detail", "seq", "fixed", "selected", "curation_reason"]
        if not with_cid:
            drop_cols.append("candidate_id")
        empty = None
        for k, (spec, path, keep) in enumerate(chunks.entries):
            frame = _chunk_labels(_read_chunk(path), spec, keep)
            frame = frame[frame["ok"].to_numpy(dtype=bool)]
            sel = ~dup[bounds[k]:bounds[k + 1]]
            frame = frame[sel].reset_index(drop=True)
            idx = kept_pos[bounds[k]:bounds[k + 1]][sel]
            frame["split"] = pd.array(split_arr[split_codes[idx]].astype(str), dtype="string")
            frame["near_dup_group"] = groups[idx]
            frame["label_name"] = frame["label"].map(
                lambda v: categories.get(v, v) if isinstance(v, str) else None).astype("string")
            part = conform(frame.drop(columns=[c for c in drop_cols if c in frame.columns]), MANIFEST_COLUMNS)
            part["phash"] = part["phash"].astype("uint64")
            if len(part):
                yield part
            elif empty is None:
                empty = part
        if n_kept == 0:
            if empty is None:
                frame = _stage_frame([])
                frame["label"] = pd.Series([], dtype="string")
                frame["fixed"] = pd.Series([], dtype="string")
                frame["split"] = pd.Series([], dtype="string")
                frame["near_dup_group"] = np.zeros(0, np.int64)
                frame["label_name"] = pd.Series([], dtype="string")
                empty = conform(frame.drop(columns=[c for c in drop_cols if c in frame.columns]), MANIFEST_COLUMNS)
                empty["phash"] = empty["phash"].astype("uint64")
            yield empty

    checksum = ManifestChecksum()  # of the rows as written (reading the file back cost 0.5 s on the digits build)
    writer.write_manifest(manifest_frames(), checksum=checksum)
    _release_memory()
    parts = failed_parts + ([dup_rej] if dup_rej is not None and len(dup_rej) else [])
    rejected = (pd.concat(parts, ignore_index=True) if parts
                else pd.DataFrame({c: pd.Series([], dtype="string") for c in rej_cols}))
    rejected = conform(rejected, REJECTED_COLUMNS)
    writer.write_rejected(rejected)
    stats = _dedup_stats(recipe, dist, sizes, moved, int(dup.sum()))
    present = np.unique(kept_label[kept_label >= 0])
    classes = _class_order([label_names[c] for c in present], categories)
    source_names = [spec.name for spec, _ in plan.sources]
    split_present = np.bincount(split_codes, minlength=len(split_names)) if n_kept else np.zeros(0, np.int64)
    counts = {
        "kept": int(n_kept),
        "rejected": int(len(rejected)),
        "by_split": {name: int(split_present[j]) for name, j in sorted((split_names[j], j)
                                                                      for j in range(len(split_present))
                                                                      if split_present[j])},
        "by_class": (_nested_counts(kept_label.astype(np.int64), label_names, split_codes, split_names)
                     if n_kept else {}),
        "by_source": (_nested_counts(arr["source"][kept_ok].astype(np.int64), source_names, split_codes,
                                     split_names) if n_kept else {}),
        "rejected_by_reason": {str(k): int(v) for k, v in rejected.groupby("reason").size().items()},
        "rejected_by_source": {f"{s}": {str(r): int(n) for r, n in g.groupby("reason").size().items()}
                               for s, g in rejected.groupby("source")},
    }
    keep_digests = np.load(digests_path)
    digests_path.unlink()
    return {"kept": n_kept, "rejected": rejected, "stats": stats, "classes": classes,
            "keep_digests": keep_digests, "counts": counts,
            "data_sha256": checksum.hexdigest()}
