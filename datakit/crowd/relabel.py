"""The loop back: re-annotate the images an audit flags as mislabeled, then relabel, keep or drop them.

Two halves, one file each side of the crowd:

1. :func:`flagged_from_report` reads the ``label_issues`` audit of a
   ``report.json`` (``datakit audit``) and :func:`make_relabel_tasks` turns the
   flagged images into multiclass tasks whose choices hold the given label,
   the suggested label and :data:`NONE_OF_THESE` (``datakit crowd tasks
   DATASET --from-audit REPORT_DIR``). The flagged images are recorded in
   ``relabel.parquet`` (:data:`RELABEL_COLUMNS`) next to ``tasks.parquet``, so
   the build knows which tasks are the re-annotation ones.
2. :func:`decide_relabel` aggregates each flagged image's re-annotation votes
   and decides, and :func:`apply_relabel` applies the decision in the next
   ``datakit build`` (the recipe's ``[relabel]`` table):

   * ``relabel`` -- the crowd chose another class: ``label`` becomes it,
     ``original_label`` keeps the old one;
   * ``keep`` -- the crowd confirmed the given label;
   * ``drop`` -- the crowd chose "none of these" (reason ``none-of-these``), or
     the votes were too few (``too-few-votes``) or split (``no-consensus``) and
     ``unresolved = "drop"``; the image goes to ``rejected.parquet`` (stage
     ``relabel``). With ``unresolved = "keep"`` such images keep their label.

Votes count for an image only when they came from one of its re-annotation
tasks (the annotation's ``hit``), so earlier votes on the same image (e.g. the
verification round) are not mixed in.
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from datakit.store.manifest import file_sha256
from datakit.errors import DatakitError, RecipeError

__all__ = [
    "NONE_OF_THESE", "RELABEL_FILE", "RELABEL_COLUMNS", "CHOICE_MODES", "ACTIONS", "AUDIT_NAME",
    "flagged_from_report", "make_relabel_tasks", "load_relabel", "save_relabel", "decide_relabel",
    "plan_relabel", "apply_relabel",
]

log = logging.getLogger(__name__)

#: The answer "the image shows none of these classes" (a choice of every re-annotation task).
NONE_OF_THESE = "none-of-these"
#: The flagged images and their re-annotation tasks, in the dataset directory.
RELABEL_FILE = "relabel.parquet"
#: One row per (flagged image, task that shows it). ``task`` is the task id
#: (the annotation's ``hit``); ``report`` the report.json it came from.
RELABEL_COLUMNS = ["id", "given_label", "suggested_label", "label_quality", "task", "report"]
#: ``all``: every class of the dataset (one question for all tasks, which the
#: Mechanical Turk and Label Studio exports need); ``pair``: only the given and
#: the suggested label (one task group per pair; the annotation app handles it).
CHOICE_MODES = ("all", "pair")
#: What the build does with a flagged image.
ACTIONS = ("relabel", "keep", "drop")
#: The audit whose per-image table is read.
AUDIT_NAME = "label_issues"

_REPORT_COLUMNS = ("dataset", "id", "given_label", "suggested_label", "is_label_issue")


def _truthy(values: pd.Series) -> np.ndarray:
    """``is_label_issue`` as bool (JSON gives bools; be lenient with 0/1 and "true")."""
    return values.map(lambda v: str(v).strip().lower() in ("true", "1", "1.0", "yes")
                      if not isinstance(v, (bool, np.bool_)) else bool(v)).to_numpy(dtype=bool)


def flagged_from_report(report_dir: str | os.PathLike, dataset: str, manifest: pd.DataFrame) -> pd.DataFrame:
    """The images of ``dataset`` that the ``label_issues`` audit of a report flags.

    Parameters
    ----------
    report_dir : path
        A directory holding ``report.json`` (written by ``datakit audit``), or the file itself.
    dataset : str
        The dataset's name as the report writes it (``datakit.json`` ``name``);
        rows of other datasets are ignored.
    manifest : DataFrame
        The dataset's manifest (``id``, ``label``): every flagged id must be in
        it, with the label the audit saw.

    Returns
    -------
    DataFrame with ``id, given_label, suggested_label, label_quality``, one row
    per flagged image, worst (lowest quality) first; empty when none is flagged.

    Raises
    ------
    DatakitError
        No report.json, no ``label_issues`` audit in it, the audit was skipped
        or failed, its table lacks a column, the report has no row for this
        dataset, or flagged ids or labels do not match the manifest (a report
        of another dataset, or of an earlier build).
    """
    path = Path(report_dir)
    path = path / "report.json" if path.is_dir() else path
    if not path.is_file():
        raise DatakitError(f"{path} does not exist; run `datakit audit DATASET --audit {AUDIT_NAME} --out DIR` "
                           "first and pass DIR.")
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DatakitError(f"cannot read {path}: {exc}") from None
    audits = report.get("audits") if isinstance(report, dict) else None
    if not isinstance(audits, dict) or AUDIT_NAME not in audits:
        ran = sorted(audits) if isinstance(audits, dict) else []
        raise DatakitError(f"{path} has no {AUDIT_NAME!r} audit (audits in it: {ran or 'none'}); run "
                           f"`datakit audit DATASET --audit {AUDIT_NAME}` first.")
    audit = audits[AUDIT_NAME]
    if audit.get("skipped"):
        raise DatakitError(f"the {AUDIT_NAME} audit in {path} was {audit.get('status') or 'skipped'}: "
                           f"{audit['skipped']}; no image to re-annotate.")
    table = audit.get("per_image")
    if not isinstance(table, dict) or "columns" not in table or "rows" not in table:
        raise DatakitError(f"the {AUDIT_NAME} audit in {path} has no per-image table.")
    frame = pd.DataFrame(table["rows"], columns=table["columns"])
    missing = [c for c in _REPORT_COLUMNS if c not in frame.columns]
    if missing:
        raise DatakitError(f"the {AUDIT_NAME} per-image table in {path} lacks columns {missing} "
                           f"(it has {list(frame.columns)}).")
    names = sorted(frame["dataset"].dropna().astype(str).unique())
    frame = frame[frame["dataset"].astype(str) == dataset]
    if frame.empty:
        raise DatakitError(f"{path} has no {AUDIT_NAME} rows for dataset {dataset!r} (datasets in it: {names}); "
                           "is it the report of this dataset?")
    flagged = frame[_truthy(frame["is_label_issue"])].copy()
    quality = flagged["label_quality"] if "label_quality" in flagged else pd.Series(np.nan, index=flagged.index)
    out = pd.DataFrame({"id": flagged["id"].astype(str).to_numpy(),
                        "given_label": flagged["given_label"].astype(str).to_numpy(),
                        "suggested_label": flagged["suggested_label"].astype(str).to_numpy(),
                        "label_quality": pd.to_numeric(quality, errors="coerce").astype("float64").to_numpy()})
    out = out.drop_duplicates("id")
    labels = manifest.set_index(manifest["id"].astype(str))["label"]
    unknown = sorted(set(out["id"]) - set(labels.index))
    if unknown:
        raise DatakitError(f"{len(unknown)} flagged ids of {path} are not in the dataset's manifest (e.g. "
                           f"{unknown[:3]}); the report is of another dataset or of an earlier build. Re-run the audit.")
    current = out["id"].map(labels).astype(str)
    stale = out[current.to_numpy() != out["given_label"].to_numpy()]
    if len(stale):
        raise DatakitError(f"{len(stale)} flagged images have another label in the manifest than the audit saw "
                           f"(e.g. {stale['id'].iloc[0]}: audit {stale['given_label'].iloc[0]!r}, manifest "
                           f"{labels[stale['id'].iloc[0]]!r}); the report is of an earlier build. Re-run the audit.")
    out = out.sort_values(["label_quality", "id"], kind="stable", na_position="last")
    return out.reset_index(drop=True)


def make_relabel_tasks(flagged: pd.DataFrame, *, classes: list[str], choices: str = "all", grid_size: int = 48,
                       tag: str = "relabel", gold: pd.Series | None = None, gold_per_task: int = 0,
                       seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Multiclass re-annotation tasks for the flagged images.

    Parameters
    ----------
    flagged : DataFrame
        :func:`flagged_from_report` output (``id, given_label, suggested_label``).
    classes : list of str
        The dataset's classes.
    choices : {"all", "pair"}
        ``all``: every class plus :data:`NONE_OF_THESE`; ``pair``: the given
        and the suggested label plus :data:`NONE_OF_THESE` (tasks grouped by pair).
    grid_size : int
        Images per task.
    tag : str
        Part of every task id (``mc-<tag>-0000``; ``mc-<tag>-g00-0000`` with ``pair``).
    gold, gold_per_task
        Gold items (class ids by manifest id) mixed in, ``all`` only.
    seed : int
        Seeds the shuffles.

    Returns
    -------
    (tasks, relabel) : DataFrames with :data:`~datakit.crowd.tasks.TASK_COLUMNS`
    and :data:`RELABEL_COLUMNS` (``report`` left empty).
    """
    from datakit.crowd.tasks import make_multiclass_tasks

    if choices not in CHOICE_MODES:
        raise ValueError(f"Unknown value {choices!r} for choices. Valid values are {{{', '.join(CHOICE_MODES)}}}.")
    if flagged.empty:
        raise DatakitError("no image is flagged: there is nothing to re-annotate")
    classes = [str(c) for c in classes]
    if NONE_OF_THESE in classes:
        raise ValueError(f"a class is called {NONE_OF_THESE!r}, the 'none of these' answer; rename the class")
    missing = sorted((set(flagged["given_label"]) | set(flagged["suggested_label"])) - set(classes))
    if missing:
        raise DatakitError(f"labels {missing} of the flagged images are not classes of the dataset ({classes})")
    items = flagged.rename(columns={"given_label": "label"})
    if choices == "all":
        if gold is not None:  # gold items are mixed in from outside the flagged set
            extra = [str(g) for g in gold.index if str(g) not in set(items["id"])]
            items = pd.concat([items, pd.DataFrame({"id": extra})], ignore_index=True)
        groups = [(tag, classes + [NONE_OF_THESE], items)]
    else:
        if gold is not None:
            raise ValueError("gold items need choices='all' (a gold answer must be a choice of every task)")
        pairs = items.groupby(["label", "suggested_label"], sort=True)
        groups = [(f"{tag}-g{k:02d}", [given, suggested, NONE_OF_THESE], group)
                  for k, ((given, suggested), group) in enumerate(pairs)]
    parts = [make_multiclass_tasks(group, classes=question, grid_size=grid_size, gold=gold,
                                   gold_per_task=gold_per_task if gold is not None else 0, tag=gtag, seed=seed)
             for gtag, question, group in groups]
    tasks = pd.concat(parts, ignore_index=True)
    shown = tasks[tasks["gold"].isna()][["item", "task"]].rename(columns={"item": "id"})
    relabel = flagged.merge(shown, on="id", how="inner")
    relabel["report"] = None
    return tasks, relabel[RELABEL_COLUMNS]


def load_relabel(root: str | os.PathLike) -> pd.DataFrame:
    """Read ``relabel.parquet`` of a dataset directory (empty table if none)."""
    path = Path(root) / RELABEL_FILE
    if not path.exists():
        return pd.DataFrame({c: pd.Series([], dtype="float64" if c == "label_quality" else "string")
                             for c in RELABEL_COLUMNS})
    return pd.read_parquet(path)


def save_relabel(root: str | os.PathLike, relabel: pd.DataFrame) -> Path:
    """Add rows to ``relabel.parquet`` (atomically); a (id, task) pair is stored once."""
    from datakit.store.atomic import atomic_write_parquet

    old = load_relabel(root)
    table = pd.concat([old, relabel[RELABEL_COLUMNS]], ignore_index=True) if len(old) else relabel[RELABEL_COLUMNS]
    table = table.drop_duplicates(["id", "task"], keep="last").reset_index(drop=True)
    for col in RELABEL_COLUMNS:
        table[col] = table[col].astype("float64" if col == "label_quality" else "string")
    path = Path(root) / RELABEL_FILE
    atomic_write_parquet(path, table)
    return path


def decide_relabel(relabel: pd.DataFrame, labels: pd.Series, votes: pd.DataFrame, *, method: str = "majority_vote",
                   min_votes: int = 3, agreement: float = 0.6, unresolved: str = "keep") -> pd.DataFrame:
    """Aggregate each flagged image's re-annotation votes and decide relabel / keep / drop.

    Parameters
    ----------
    relabel : DataFrame
        ``relabel.parquet`` rows (``id``, ``task``): the flagged images and the tasks that showed them.
    labels : Series
        The current label per image id (the images of this build; flagged ids not in it are left out).
    votes : DataFrame
        The long annotation table; only votes whose ``hit`` is a task of their image count.
    method : {"majority_vote", "dawid_skene"}
        How the votes are aggregated (Dawid-Skene is fit on all re-annotation votes).
    min_votes : int
        Fewer votes than this leave an image unresolved (``too-few-votes``).
    agreement : float
        The winning answer's share of the votes (majority vote) or posterior
        (Dawid-Skene) at least; below it, or on a tie, the image is unresolved
        (``no-consensus``).
    unresolved : {"keep", "drop"}
        What happens to unresolved images.

    Returns
    -------
    DataFrame, one row per flagged image of ``labels``: ``id, original_label,
    answer, agreement, votes, action, reason, label`` (``label``: the label
    after the decision, null when dropped).
    """
    from datakit.crowd.aggregation import get_aggregator

    labels = labels.astype(str)
    labels.index = labels.index.astype(str)
    rel = relabel[relabel["id"].astype(str).isin(labels.index)]
    ids = list(dict.fromkeys(rel["id"].astype(str)))
    pairs = set(zip(rel["id"].astype(str), rel["task"].astype(str)))
    v = votes[votes["hit"].notna() & votes["label"].notna()]
    keep = [(t, h) in pairs for t, h in zip(v["task"].astype(str), v["hit"].astype(str))]
    v = v[np.asarray(keep, dtype=bool)] if len(v) else v
    counts = v.groupby(v["task"].astype(str)).size() if len(v) else pd.Series(dtype="int64")
    probas = None
    if len(v):
        probas = get_aggregator(method)().fit_predict_proba(v, None)
        probas.index = probas.index.astype(str)
    rows = []
    for image_id in ids:
        original = labels[image_id]
        n = int(counts.get(image_id, 0))
        answer, share, tie = None, float("nan"), False
        if probas is not None and image_id in probas.index:
            p = probas.loc[image_id]
            answer, share = str(p.idxmax()), float(p.max())
            tie = int(np.isclose(p.to_numpy(float), share).sum()) > 1
        if n < min_votes:
            action, reason = "unresolved", "too-few-votes"
        elif tie or share < agreement:
            action, reason = "unresolved", "no-consensus"
        elif answer == NONE_OF_THESE:
            action, reason = "drop", "none-of-these"
        elif answer == original:
            action, reason = "keep", "confirmed"
        else:
            action, reason = "relabel", "relabelled"
        if action == "unresolved":
            action = unresolved
        new = None if action == "drop" else (answer if action == "relabel" else original)
        rows.append((image_id, original, answer, share, n, action, reason, new))
    out = pd.DataFrame(rows, columns=["id", "original_label", "answer", "agreement", "votes", "action", "reason",
                                      "label"])
    return out.astype({"votes": "int64", "agreement": "float64"})


# --------------------------------------------------------------------------- the build's [relabel] inputs


def plan_relabel(spec, *, recipe_path: Path | None, data_root: Path | None) -> dict:
    """Resolve the ``[relabel]`` directory and check its files before any work; hash them.

    Parameters
    ----------
    spec : RelabelSpec
        The recipe's ``[relabel]`` table.
    recipe_path, data_root : Path or None
        A relative ``annotations`` is looked up next to the recipe, under the data root, then here.

    Returns
    -------
    dict with ``annotations``, ``relabel`` (file paths) and ``sha256`` (of each).

    Raises
    ------
    RecipeError
        The directory does not exist or lacks ``relabel.parquet`` / ``annotations.parquet``.
    """
    path = Path(os.path.expanduser(spec.annotations))
    tried = [path] if path.is_absolute() else (
        ([recipe_path.resolve().parent / path] if recipe_path is not None else [])
        + ([data_root / path] if data_root is not None else []) + [Path.cwd() / path])
    found = next((t for t in tried if t.is_dir()), None)
    if found is None:
        raise RecipeError(f"relabel.annotations: {spec.annotations!r} is not a directory (looked in "
                          f"{', '.join(str(t) for t in dict.fromkeys(tried))}); it names the dataset directory "
                          f"holding {RELABEL_FILE} and annotations.parquet.")
    files = {"relabel": found / RELABEL_FILE, "annotations": found / "annotations.parquet"}
    if not files["relabel"].is_file():
        raise RecipeError(f"relabel.annotations: {found} holds no {RELABEL_FILE}; make the re-annotation tasks "
                          f"with `datakit crowd tasks {found} --from-audit REPORT_DIR` first.")
    if not files["annotations"].is_file():
        raise RecipeError(f"relabel.annotations: {found} holds no annotations.parquet; collect the re-annotation "
                          "votes with `datakit annotate serve` or `datakit crowd import` first.")
    return {**{k: str(v) for k, v in files.items()}, "sha256": {k: file_sha256(v) for k, v in files.items()}}


def apply_relabel(spec, files: dict, kept: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Any]]:
    """Apply ``[relabel]`` to the build's kept rows.

    Parameters
    ----------
    spec : RelabelSpec
    files : dict
        :func:`plan_relabel` output.
    kept : DataFrame
        The build's kept rows (``id``, ``label``, ``source``, ``source_ref``, ...), splits assigned.

    Returns
    -------
    (kept, rejected, info) : the rows kept, with ``label`` changed and
    ``original_label`` filled for relabelled images; the dropped ones as
    ``rejected.parquet`` rows (stage ``relabel``); counts for ``datakit.json``
    and the datasheet.
    """
    from datakit.crowd.tasks import conform_annotations

    try:
        relabel = pd.read_parquet(files["relabel"])
        votes = conform_annotations(pd.read_parquet(files["annotations"]))
    except (OSError, ValueError, DatakitError) as exc:
        raise RecipeError(f"relabel.annotations: cannot read the votes: {exc}") from None
    ids = kept["id"].astype(str)
    labels = pd.Series(kept["label"].astype(object).to_numpy(), index=ids.to_numpy())
    labels = labels[labels.notna()]
    decisions = decide_relabel(relabel, labels, votes, method=spec.method, min_votes=spec.min_votes,
                               agreement=spec.agreement, unresolved=spec.unresolved)
    out = kept.copy()
    by_id = decisions.set_index("id")
    change = by_id[by_id["action"] == "relabel"]
    hit = ids.isin(change.index).to_numpy()
    out["original_label"] = pd.Series([None] * len(out), dtype="string", index=out.index)
    if hit.any():
        out.loc[hit, "original_label"] = out.loc[hit, "label"].astype(str).to_numpy()
        out.loc[hit, "label"] = ids[hit].map(change["label"]).to_numpy()
    dropped = by_id[by_id["action"] == "drop"]
    gone = ids.isin(dropped.index).to_numpy()
    rej = out[gone]
    detail = [f"label {d.original_label!r}: {d.votes} re-annotation votes, answer {d.answer!r}"
              + ("" if np.isnan(d.agreement) else f" ({d.agreement:.2f})")
              for d in dropped.loc[rej["id"].astype(str)].itertuples()]
    rejected = pd.DataFrame({"id": rej["id"].to_numpy(), "source": rej["source"].to_numpy(),
                             "source_ref": rej["source_ref"].to_numpy(), "stage": "relabel",
                             "reason": dropped.loc[rej["id"].astype(str), "reason"].to_numpy(),
                             "detail": detail})
    out = out[~gone].reset_index(drop=True)
    resolved = decisions["reason"].isin(["none-of-these", "confirmed", "relabelled"])
    info = {
        "method": spec.method, "min_votes": spec.min_votes, "agreement": spec.agreement,
        "unresolved_policy": spec.unresolved, "annotations": files["annotations"], "relabel": files["relabel"],
        "inputs_sha256": files["sha256"],
        "flagged": int(relabel["id"].nunique()), "flagged_in_build": int(len(decisions)),
        "votes_used": int(decisions["votes"].sum()),
        "relabelled": int((decisions["action"] == "relabel").sum()),
        "kept": int((decisions["action"] == "keep").sum()),
        "confirmed": int((decisions["reason"] == "confirmed").sum()),
        "dropped": int((decisions["action"] == "drop").sum()),
        "unresolved": int((~resolved).sum()),
        "by_reason": {str(k): int(n) for k, n in decisions.groupby("reason").size().items()},
        "changes": {f"{a} -> {b}": int(n) for (a, b), n in
                    decisions[decisions["action"] == "relabel"].groupby(["original_label", "label"]).size().items()},
    }
    return out, rejected, info
