"""Crowd tasks (HITs) and the long annotation table.

Two kinds of task, one table shape (:data:`TASK_COLUMNS`, one row per item
shown in a task):

* ``binary`` -- ImageNet's verification grid: "Which of these images contain a
  <name>: <gloss>?". The candidates of one class (``question``) are shuffled
  into grids of ``grid_size`` items, with ``gold_per_task`` gold items of known
  answer mixed in. Answers are ``"yes"`` / ``"no"``.
* ``multiclass`` -- "pick the class" for datasets like digits; answers are
  class ids.

Votes live in ``annotations.parquet`` (:data:`ANNOTATION_COLUMNS`): the long
``task, worker, label`` table of crowd-kit and cleanlab, where ``task`` is the
item being labelled (the manifest ``id``) and ``hit`` the grid that showed it.

Duplicate rule: a worker's vote on an item counts once -- the earliest vote
(by ``time``, then by order of arrival) is kept and later ones are dropped.
"""
from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Mapping

import numpy as np
import pandas as pd

from datakit.errors import DatakitError
from datakit.store.atomic import atomic_write_parquet

__all__ = [
    "YES", "NO", "TASK_KINDS", "TASK_COLUMNS", "ANNOTATION_COLUMNS",
    "make_binary_tasks", "make_multiclass_tasks", "gold_answers", "task_choices",
    "save_tasks", "load_tasks", "conform_annotations", "dedupe_votes",
    "load_annotations", "save_annotations", "check_votes_known", "load_items",
]

log = logging.getLogger(__name__)

YES = "yes"
NO = "no"
TASK_KINDS = ("binary", "multiclass")

#: One row per item shown in a task. ``gold`` is the known answer of a gold
#: item (``"yes"``/``"no"`` or a class id) and null for ordinary items.
TASK_COLUMNS = ["task", "kind", "question", "question_name", "gloss", "position", "item", "gold"]

#: The long crowd table. ``task`` = the labelled item (manifest ``id``),
#: ``label`` = the answer, ``time`` = UTC epoch seconds of the vote,
#: ``batch`` = where it came from (``app``, an import file, ``simulated``),
#: ``hit`` = the grid that showed it, ``assignment`` = the platform's id.
ANNOTATION_COLUMNS = ["task", "worker", "label", "time", "batch", "hit", "assignment"]

TASKS_FILE = "tasks.parquet"
ANNOTATIONS_FILE = "annotations.parquet"


def _check_grid(grid_size: int, gold_per_task: int) -> None:
    if not isinstance(grid_size, (int, np.integer)) or grid_size < 1:
        raise ValueError(f"grid_size must be a positive integer, got {grid_size!r}")
    if not isinstance(gold_per_task, (int, np.integer)) or not 0 <= gold_per_task < grid_size:
        raise ValueError(f"gold_per_task must be in [0, grid_size={grid_size}), got {gold_per_task!r}")


def _normalize_binary(value) -> str:
    if isinstance(value, (bool, np.bool_)):
        return YES if value else NO
    if isinstance(value, (int, np.integer)) and value in (0, 1):
        return YES if value else NO
    text = str(value).strip().lower()
    if text in ("yes", "y", "true", "1"):
        return YES
    if text in ("no", "n", "false", "0"):
        return NO
    raise ValueError(f"binary gold answer {value!r} is not one of {{yes, no, True, False, 1, 0}}")


_SYNSET_NAME = re.compile(r"^[\w'-]+\.[nvars]\.\d\d$")


def _lookup(mapping: Mapping | pd.DataFrame | None, label: str, column: str) -> str:
    if mapping is None:
        return label if column == "name" else ""
    if isinstance(mapping, pd.DataFrame):
        rows = mapping[mapping["label"].astype(str) == label]
        if not len(rows):
            return label if column == "name" else ""
        row = rows.iloc[0]
        value = row.get(column)
        if column == "name" and "lemmas" in row and pd.notna(row["lemmas"]) and (
                pd.isna(value) or _SYNSET_NAME.match(str(value))):
            return str(row["lemmas"]).split("|")[0].replace("_", " ")  # "jersey.n.03" -> "jersey"
        if pd.notna(value):
            return str(value)
        return label if column == "name" else ""
    return str(mapping.get(label, label if column == "name" else ""))


def _grids(items: list[str], gold_pool: list[str], gold_answer: Mapping[str, str], grid_size: int,
           gold_per_task: int, rng: np.random.Generator):
    per = grid_size - gold_per_task
    items = list(np.asarray(items, dtype=object)[rng.permutation(len(items))]) if items else []
    for start in range(0, len(items), per):
        chunk = [(i, None) for i in items[start:start + per]]
        if gold_pool and gold_per_task:
            k = min(gold_per_task, len(gold_pool))
            picks = rng.choice(len(gold_pool), size=k, replace=False)
            chunk += [(gold_pool[p], gold_answer[gold_pool[p]]) for p in picks]
        order = rng.permutation(len(chunk))
        yield [chunk[o] for o in order]


def make_binary_tasks(manifest: pd.DataFrame, *, grid_size: int = 48, gold: pd.Series | None = None,
                      gold_per_task: int = 4, label_column: str = "label",
                      categories: pd.DataFrame | Mapping | None = None, tag: str = "",
                      seed: int = 0) -> pd.DataFrame:
    """ImageNet-style verification grids, one class per task, gold items mixed in.

    Parameters
    ----------
    manifest : DataFrame
        Candidates, one row each, with ``id`` and ``label_column`` (the class the
        candidate was collected for).
    grid_size : int
        Items per grid, gold included (ImageNetV2 used 48).
    gold : Series, optional
        Known answers indexed by ``id``: does the image show its ``label``?
        (bool, 0/1 or ``"yes"``/``"no"``). Gold items are taken out of the
        ordinary pool and shown, ``gold_per_task`` at a time, in the grids of
        their own class.
    gold_per_task : int
        Gold items per grid (fewer when a class has fewer gold items).
    categories : DataFrame or mapping, optional
        ``categories.csv`` (columns ``label``, ``name``, ``gloss``) or a mapping
        label -> name, for the question text.
    tag : str
        Added to every task id (``<label>-<tag>-0000``), so a later round of tasks
        (e.g. for the images consensus says need more votes) gets new ids.
    seed : int
        Seeds the shuffles and gold draws.

    Returns
    -------
    DataFrame with :data:`TASK_COLUMNS`, one row per (task, item).

    Examples
    --------
    >>> m = pd.DataFrame({"id": list("abcde"), "label": ["dog"] * 5})
    >>> t = make_binary_tasks(m, grid_size=3, gold=pd.Series({"e": True}), gold_per_task=1)
    >>> sorted(t["task"].unique()), int(t["gold"].notna().sum())
    (['dog-0000', 'dog-0001'], 2)
    """
    _check_grid(grid_size, gold_per_task)
    for col in ("id", label_column):
        if col not in manifest.columns:
            raise DatakitError(f"manifest has no {col!r} column (columns: {list(manifest.columns)})")
    gold_answer = {str(k): _normalize_binary(v) for k, v in (gold.items() if gold is not None else [])}
    unknown = set(gold_answer) - set(manifest["id"].astype(str))
    if unknown:
        raise DatakitError(f"gold ids not in the manifest: {sorted(unknown)[:5]}")
    rng = np.random.default_rng(seed)
    rows = []
    frame = manifest[manifest[label_column].notna()]
    for label, group in frame.groupby(frame[label_column].astype(str), sort=True):
        ids = group["id"].astype(str).tolist()
        gold_pool = [i for i in ids if i in gold_answer]
        items = [i for i in ids if i not in gold_answer]
        name, gloss = _lookup(categories, label, "name"), _lookup(categories, label, "gloss")
        for k, grid in enumerate(_grids(items, gold_pool, gold_answer, grid_size, gold_per_task, rng)):
            for pos, (item, answer) in enumerate(grid):
                rows.append((f"{label}-{tag + '-' if tag else ''}{k:04d}", "binary", label, name, gloss, pos, item,
                             answer))
    return pd.DataFrame(rows, columns=TASK_COLUMNS).astype({"position": "int64"})


def make_multiclass_tasks(manifest: pd.DataFrame, *, classes: list[str], grid_size: int = 20,
                          gold: pd.Series | None = None, gold_per_task: int = 2,
                          tag: str = "", seed: int = 0) -> pd.DataFrame:
    """"Pick the class" tasks: grids of items, each answered with one of ``classes``.

    Parameters
    ----------
    manifest : DataFrame
        Items with an ``id`` column.
    classes : list of str
        The answer choices (stored in ``question`` as ``"|"``-joined ids).
    gold : Series, optional
        Known class ids indexed by ``id``; must be among ``classes``.
    tag : str
        Added to every task id (``mc-<tag>-0000``).

    Returns
    -------
    DataFrame with :data:`TASK_COLUMNS`.
    """
    _check_grid(grid_size, gold_per_task)
    classes = [str(c) for c in classes]
    if len(classes) < 2:
        raise ValueError(f"a multiclass task needs at least 2 classes, got {classes!r}")
    if any("|" in c for c in classes):
        raise ValueError(f"class ids may not contain '|': {classes!r}")
    gold_answer = {str(k): str(v) for k, v in (gold.items() if gold is not None else [])}
    bad = {v for v in gold_answer.values() if v not in classes}
    if bad:
        raise ValueError(f"gold labels {sorted(bad)} are not among the classes {{{', '.join(classes)}}}")
    rng = np.random.default_rng(seed)
    ids = manifest["id"].astype(str).tolist()
    gold_pool = [i for i in ids if i in gold_answer]
    items = [i for i in ids if i not in gold_answer]
    question = "|".join(classes)
    rows = []
    for k, grid in enumerate(_grids(items, gold_pool, gold_answer, grid_size, gold_per_task, rng)):
        for pos, (item, answer) in enumerate(grid):
            rows.append((f"mc-{tag + '-' if tag else ''}{k:04d}", "multiclass", question, "", "", pos, item, answer))
    return pd.DataFrame(rows, columns=TASK_COLUMNS).astype({"position": "int64"})


def load_items(root: str | os.PathLike) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """The images a crowd is asked about, from a dataset or a candidates directory.

    Reads ``manifest.parquet`` (a dataset built by ``datakit build``) or else
    ``candidates.parquet`` (``datakit candidates``; its ``synset`` is the
    class asked about). Items are keyed by image id; an image that is a
    candidate for several synsets is asked about for each of them, the first
    under its id and the others under ``<synset>:<id>`` (counted in
    ``frame.attrs["ambiguous"]``).

    Returns
    -------
    (frame, categories) : DataFrame with ``id`` (item key), ``label``, ``path``;
    ``categories.csv`` or None.
    """
    root = Path(root)
    categories = pd.read_csv(root / "categories.csv", dtype=str) if (root / "categories.csv").exists() else None
    if (root / "manifest.parquet").exists():
        m = pd.read_parquet(root / "manifest.parquet")
        frame = pd.DataFrame({"id": m["id"].astype(str), "label": m["label"], "path": m["path"].astype(str)})
    elif (root / "candidates.parquet").exists():
        c = pd.read_parquet(root / "candidates.parquet")
        frame = pd.DataFrame({"id": c["id"].astype(str), "label": c["synset"].astype(str), "path": c["path"].astype(str)})
        if categories is not None and "label" not in categories.columns and "wnid" in categories.columns:
            categories = categories.assign(label=categories["wnid"])
    else:
        raise DatakitError(f"{root} has neither manifest.parquet (a dataset) nor candidates.parquet (candidates); "
                           "make one with `datakit build` or `datakit candidates`.")
    frame = frame.drop_duplicates(["id", "label"]).reset_index(drop=True)
    repeat = frame["id"].duplicated(keep="first").to_numpy()
    frame.loc[repeat, "id"] = frame.loc[repeat, "label"].astype(str) + ":" + frame.loc[repeat, "id"]
    frame.attrs["ambiguous"] = int(repeat.sum())
    return frame, categories


def task_choices(kind: str, question: str) -> list[str]:
    """The valid answers of a task: ``["yes", "no"]`` or the multiclass classes."""
    if kind == "binary":
        return [YES, NO]
    if kind == "multiclass":
        return question.split("|")
    raise ValueError(f"Unknown task kind {kind!r}. Valid values are {{{', '.join(TASK_KINDS)}}}.")


def gold_answers(tasks: pd.DataFrame) -> pd.Series:
    """Known answers of the gold items, a Series indexed by item (the annotation ``task``)."""
    g = tasks[tasks["gold"].notna()].drop_duplicates("item")
    return pd.Series(g["gold"].astype(str).values, index=g["item"].astype(str).values, name="gold")


def save_tasks(root: str | os.PathLike, tasks: pd.DataFrame) -> Path:
    """Write ``tasks.parquet`` into a dataset directory (atomically)."""
    path = Path(root) / TASKS_FILE
    atomic_write_parquet(path, tasks[TASK_COLUMNS])
    return path


def load_tasks(root: str | os.PathLike) -> pd.DataFrame:
    """Read ``tasks.parquet`` of a dataset directory."""
    path = Path(root) / TASKS_FILE
    if not path.exists():
        raise DatakitError(f"{root} has no {TASKS_FILE}. Create tasks with `datakit crowd tasks {root}`.")
    return pd.read_parquet(path)


def conform_annotations(frame: pd.DataFrame) -> pd.DataFrame:
    """Return ``frame`` with every :data:`ANNOTATION_COLUMNS` column, typed (extra columns kept)."""
    out = frame.copy()
    for col in ("task", "worker", "label"):
        if col not in out.columns:
            raise DatakitError(f"annotations need a {col!r} column (columns: {list(frame.columns)})")
    for col in ANNOTATION_COLUMNS:
        if col not in out.columns:
            out[col] = None
    for col in ("task", "worker", "label", "batch", "hit", "assignment"):
        out[col] = out[col].astype("string")
    out["time"] = pd.to_numeric(out["time"], errors="coerce").astype("float64")
    extra = [c for c in out.columns if c not in ANNOTATION_COLUMNS]
    return out[ANNOTATION_COLUMNS + extra].reset_index(drop=True)


def dedupe_votes(frame: pd.DataFrame) -> pd.DataFrame:
    """Apply the duplicate rule: one vote per (task, worker), the earliest one.

    Earliest by ``time`` (missing times last), ties broken by row order.
    """
    if frame.empty:
        return frame.reset_index(drop=True)
    order = frame.assign(_t=frame["time"] if "time" in frame else np.nan, _r=np.arange(len(frame)))
    order = order.sort_values(["_t", "_r"], na_position="last", kind="stable")
    kept = order.drop_duplicates(["task", "worker"], keep="first").sort_values("_r")
    return kept.drop(columns=["_t", "_r"]).reset_index(drop=True)


def check_votes_known(votes: pd.DataFrame, known: set[str] | pd.Index) -> None:
    """Raise :class:`DatakitError` naming the first unknown task ids of ``votes``."""
    unknown = sorted(set(votes["task"].astype(str)) - set(known))
    if unknown:
        raise DatakitError(f"votes for unknown tasks: {unknown[:5]}"
                           + (f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""))


def load_annotations(root: str | os.PathLike) -> pd.DataFrame:
    """Read ``annotations.parquet`` of a dataset directory (empty table if none)."""
    path = Path(root) / ANNOTATIONS_FILE
    if not path.exists():
        return conform_annotations(pd.DataFrame(columns=ANNOTATION_COLUMNS))
    return conform_annotations(pd.read_parquet(path))


def save_annotations(root: str | os.PathLike, votes: pd.DataFrame, *, append: bool = True) -> pd.DataFrame:
    """Write votes to ``annotations.parquet`` (atomically), applying the duplicate rule.

    Parameters
    ----------
    append : bool
        Add to the votes already there (default) instead of replacing them.

    Returns
    -------
    The table as written.
    """
    votes = conform_annotations(votes)
    if append:
        old = load_annotations(root)
        votes = pd.concat([old, votes], ignore_index=True) if len(old) else votes
    out = dedupe_votes(conform_annotations(votes))
    atomic_write_parquet(Path(root) / ANNOTATIONS_FILE, out)
    return out
