"""``[curate]``: the crowd vote files checked at planning time, then selection frequency applied at finalize."""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from datakit.store.manifest import file_sha256 as _file_sha256
from datakit.errors import DatakitError, RecipeError
from datakit.recipe import Recipe
from datakit.store.splits import SPLIT_ORDER

if TYPE_CHECKING:
    from datakit.build.plan import BuildPlan

__all__ = [
    "_resolve_curate_path", "_vote_file", "_read_table", "_plan_curate", "_task_keys",
    "_reference_frequencies", "_select_by_frequency", "_curated_fixed", "_apply_curation",
]

logger = logging.getLogger(__name__)


def _resolve_curate_path(value: str, key: str, recipe: Recipe, root: Path | None, want: str) -> Path:
    """An absolute path, or a relative one looked up next to the recipe, under the data root, then here."""
    path = Path(os.path.expanduser(value))
    tried = [path] if path.is_absolute() else (
        ([recipe.path.resolve().parent / path] if recipe.path is not None else [])
        + ([root / path] if root is not None else []) + [Path.cwd() / path])
    for cand in tried:
        if cand.is_dir() or cand.is_file():
            return cand
    raise RecipeError(f"curate.{key}: {value!r} does not exist (looked in "
                      f"{', '.join(str(t) for t in dict.fromkeys(tried))}); it names {want}.")


def _vote_file(path: Path, key: str, filename: str) -> Path:
    if path.is_dir():
        inner = path / filename
        if not inner.is_file():
            raise RecipeError(f"curate.{key}: {path} holds no {filename}"
                              + ("; collect votes with `datakit annotate serve` or `datakit crowd import` first."
                                 if filename == "annotations.parquet" else
                                 "; compute it with `datakit crowd consensus` first."))
        return inner
    if path.suffix != ".parquet":
        raise RecipeError(f"curate.{key}: {path} is neither a directory holding {filename} nor a .parquet file.")
    return path


def _read_table(path: Path, key: str, needs: tuple[str, ...]) -> pd.DataFrame:
    try:
        frame = pd.read_parquet(path)
    except (OSError, ValueError) as exc:
        raise RecipeError(f"curate.{key}: cannot read {path}: {exc}") from None
    missing = [c for c in needs if c not in frame.columns]
    if missing:
        raise RecipeError(f"curate.{key}: {path} has no {', '.join(repr(c) for c in missing)} column "
                          f"(columns: {list(frame.columns)}).")
    return frame


def _plan_curate(recipe: Recipe, root: Path | None) -> dict:
    """Resolve and check the ``[curate]`` files before any work; hash them for re-run detection."""
    spec = recipe.curate
    files = {"annotations": _vote_file(_resolve_curate_path(spec.annotations, "annotations", recipe, root,
                                                            "a directory holding annotations.parquet or a .parquet "
                                                            "file"), "annotations", "annotations.parquet")}
    _read_table(files["annotations"], "annotations", ("task", "worker", "label"))
    if spec.consensus is not None:
        files["consensus"] = _vote_file(_resolve_curate_path(spec.consensus, "consensus", recipe, root,
                                                             "consensus.parquet or a directory holding it"),
                                        "consensus", "consensus.parquet")
        _read_table(files["consensus"], "consensus", ("item", "p_positive"))
    if spec.reference is not None:
        ref = _resolve_curate_path(spec.reference, "reference", recipe, root,
                                   "the reference dataset's annotations (a directory or a .parquet file)")
        files["reference"] = _vote_file(ref, "reference", "annotations.parquet")
        if ref.is_dir() and (ref / "manifest.parquet").is_file():
            files["reference_manifest"] = ref / "manifest.parquet"
        frame = _read_table(files["reference"], "reference", ())
        if not ({"task", "worker", "label"} <= set(frame.columns)
                or {"item", "selection_frequency"} <= set(frame.columns)):
            raise RecipeError(f"curate.reference: {files['reference']} is neither an annotations table (task, "
                              f"worker, label) nor a consensus table (item, selection_frequency); columns: "
                              f"{list(frame.columns)}.")
    return {**{k: str(v) for k, v in files.items()},
            "sha256": {k: _file_sha256(v) for k, v in files.items()}}


def _task_keys(kept: pd.DataFrame, known: set[str]) -> list[str | None]:
    """Per kept row, the crowd task id its votes are filed under, or None.

    Tried in order: the manifest id (votes on a built dataset), then
    ``<source label>:<candidate id>`` and ``<label>:<candidate id>`` (an image
    found for several synsets is asked about per synset), then the candidate id
    (votes on a candidates directory).
    """
    out = []
    cids = kept["candidate_id"].astype(object).where(kept["candidate_id"].notna(), None).tolist()
    for image_id, source_label, label, cid in zip(kept["id"].astype(str), kept["source_label"].astype(object),
                                                  kept["label"].astype(object), cids):
        tries = [image_id]
        if cid is not None:
            tries += [f"{lab}:{cid}" for lab in (source_label, label) if isinstance(lab, str)] + [str(cid)]
        out.append(next((t for t in tries if t in known), None))
    return out


def _reference_frequencies(files: dict) -> pd.Series | pd.DataFrame:
    """The reference dataset's selection frequencies: per class when its manifest is there, else pooled."""
    from datakit.crowd.frequency import selection_frequency
    from datakit.crowd.tasks import conform_annotations

    frame = pd.read_parquet(files["reference"])
    if {"task", "worker", "label"} <= set(frame.columns):
        freq = selection_frequency(conform_annotations(frame))["selection_frequency"]
    else:
        freq = frame.set_index(frame["item"].astype(str))["selection_frequency"]
    freq = freq.astype("float64").dropna()
    if "reference_manifest" in files:
        labels = pd.read_parquet(files["reference_manifest"], columns=["id", "label"])
        labels = labels.set_index(labels["id"].astype(str))["label"]
        per = pd.DataFrame({"selection_frequency": freq.to_numpy(),
                            "label": pd.Series(freq.index, dtype=object).map(labels).to_numpy()})
        per = per[per["label"].notna()]
        if len(per):
            return per.assign(label=per["label"].astype(str))
    return freq


def _select_by_frequency(plan: BuildPlan, kept: pd.DataFrame) -> tuple[pd.DataFrame, dict]:
    """Fill ``votes``, ``selection_frequency``, ``p_correct`` and choose images (``selected``, ``curation_reason``)."""
    from datakit.crowd.frequency import add_vote_columns, curate_by_frequency
    from datakit.crowd.tasks import NO, YES, conform_annotations

    spec = plan.recipe.curate
    files = plan.curate
    try:
        votes = conform_annotations(pd.read_parquet(files["annotations"]))
    except DatakitError as exc:
        raise RecipeError(f"curate.annotations: {files['annotations']}: {exc}") from None
    consensus = pd.read_parquet(files["consensus"]) if "consensus" in files else None
    known = set(votes["task"].dropna().astype(str))
    if consensus is not None:
        known |= set(consensus["item"].dropna().astype(str))
    keys = _task_keys(kept, known)
    key_to_id: dict[str, str] = {}
    for key, image_id in zip(keys, kept["id"].astype(str)):
        if key is not None:
            key_to_id.setdefault(key, image_id)
    if not key_to_id:
        raise DatakitError(f"None of the {len(known)} crowd tasks in {files['annotations']} matches an image of this "
                           f"build (task ids are matched to the manifest id, the candidate id, or "
                           f"<label>:<candidate id>); are these the votes for this dataset's images?")
    unmatched = len(known - set(key_to_id))
    if unmatched:
        logger.info("curate: %d crowd tasks match no kept image (rejected earlier, or other images)", unmatched)
    v = votes[votes["task"].astype(str).isin(key_to_id)].copy()
    v["task"] = v["task"].astype(str).map(key_to_id)
    # a multiclass answer selects the image when it names the image's class
    row_label = kept.set_index(kept["id"].astype(str))["label"].astype(object)
    lab = v["label"].astype(object)
    other = ~lab.isin([YES, NO]).to_numpy()
    if other.any():
        truth = v["task"].map(row_label).astype(object)
        v.loc[other, "label"] = np.where(lab[other].astype(str).to_numpy() == truth[other].astype(str).to_numpy(),
                                         YES, NO)
    c = None
    if consensus is not None:
        c = consensus[consensus["item"].astype(str).isin(key_to_id)].copy()
        c["item"] = c["item"].astype(str).map(key_to_id)
        c = c.drop_duplicates("item", keep="last")
    counts_ok = c is not None and {"votes", "selection_frequency"} <= set(c.columns)
    filled = add_vote_columns(kept, votes=v if len(v) else None,
                              consensus=c if (len(v) or counts_ok) else None)
    if c is not None and "p_correct" not in filled.columns:
        filled["p_correct"] = kept["id"].astype(str).map(c.set_index("item")["p_positive"]).astype("float64")
    for col, dtype in (("votes", "Int64"), ("selection_frequency", "float64")):
        if col not in filled.columns:
            filled[col] = pd.Series([None] * len(filled), dtype=dtype, index=filled.index)
    reference = _reference_frequencies(files) if spec.strategy == "matched-frequency" else None
    try:
        chosen = curate_by_frequency(filled, spec.strategy, threshold=spec.threshold, per_class=spec.per_class,
                                     reference=reference, bins=spec.bins, seed=spec.seed)
    except ValueError as exc:
        raise RecipeError(f"curate: {exc}") from None
    if not chosen["selected"].any():
        logger.warning("curate: no image was selected for split %r (strategy %r); check the votes and the options",
                       spec.split, spec.strategy)
    unlabeled = (~chosen["selected"]) & chosen["curation_reason"].isna()
    chosen.loc[unlabeled, "curation_reason"] = "unlabeled"
    info = {"strategy": spec.strategy, "split": spec.split, "others": spec.others,
            **({"threshold": spec.threshold} if spec.strategy == "threshold" else {"per_class": spec.per_class}),
            **({"bins": spec.bins, "seed": spec.seed, "reference": files["reference"]}
               if spec.strategy == "matched-frequency" else {}),
            "annotations": files["annotations"], "consensus": files.get("consensus"),
            "inputs_sha256": files["sha256"],
            "votes_used": int(len(v)), "images_with_votes": int(chosen["votes"].notna().sum()),
            "tasks_not_matched": int(unmatched), "candidates": int(len(chosen)),
            "selected": int(chosen["selected"].sum())}
    return chosen, info


def _curated_fixed(spec, selected: np.ndarray, fixed: list, fractions: tuple, strategy: str) -> tuple[list, tuple]:
    """Fixed splits and fractions that send selected images to ``spec.split`` and no other image there."""
    if spec.others == "reject":
        return [spec.split] * len(fixed), fractions
    fixed = [spec.split if s else (None if f == spec.split else f) for s, f in zip(selected, fixed)]
    if strategy == "fractions" and spec.split in SPLIT_ORDER:
        fr = list(fractions)
        fr[SPLIT_ORDER.index(spec.split)] = 0.0
        total = sum(fr)
        if total > 0:
            fr = [f / total for f in fr]
        else:
            fr[next(i for i, name in enumerate(SPLIT_ORDER) if name != spec.split)] = 1.0
        fractions = tuple(fr)
    return fixed, fractions


def _apply_curation(spec, kept: pd.DataFrame, info: dict) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Reject the images not selected that ended up in the curated split; record counts in ``info``."""
    selected = kept["selected"].to_numpy(dtype=bool)
    out_of_place = ~selected & (kept["split"] == spec.split).to_numpy(dtype=bool)
    reason = kept["curation_reason"].astype(object).to_numpy().copy()
    detail = np.empty(len(kept), dtype=object)
    if spec.others == "keep":
        sel_groups = set(kept.loc[selected, "near_dup_group"].tolist())
        near = out_of_place & kept["near_dup_group"].isin(sel_groups).to_numpy()
        for i in np.flatnonzero(out_of_place):
            detail[i] = (f"not selected ({reason[i]}), and split {spec.split!r} holds only selected images"
                         + (": a near-duplicate of a selected image, so it cannot go to another split" if near[i]
                            else ": the split protocol put it there"))
        reason[near] = "near_duplicate_of_selected"
    freq = kept["selection_frequency"].to_numpy(dtype=float, na_value=np.nan)
    votes = kept["votes"].astype("Float64").to_numpy(dtype=float, na_value=np.nan)
    for i in np.flatnonzero(out_of_place):
        how = ("no crowd vote matched this image" if np.isnan(freq[i])
               else f"selection frequency {freq[i]:.3f} from {int(votes[i]) if not np.isnan(votes[i]) else '?'} votes")
        detail[i] = f"{how}; strategy {spec.strategy!r}" + (f"; {detail[i]}" if detail[i] else "")
    dropped = kept[out_of_place]
    rej = pd.DataFrame({"id": dropped["id"].to_numpy(), "source": dropped["source"].to_numpy(),
                        "source_ref": dropped["source_ref"].to_numpy(), "stage": "curate",
                        "reason": reason[out_of_place], "detail": detail[out_of_place]})
    info["rejected"] = int(out_of_place.sum())
    info["rejected_by_reason"] = {str(k): int(n) for k, n in rej.groupby("reason").size().items()}
    info["kept_outside_split"] = int((~selected & ~out_of_place).sum())
    return kept[~out_of_place].reset_index(drop=True), rej
