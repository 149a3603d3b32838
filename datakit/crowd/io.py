"""Export task batches to crowd platforms and import their results.

* Mechanical Turk: :func:`export_mturk` writes a batch CSV (one row per task,
  columns ``task, kind, question, question_name, gloss, n_items, item_1..N,
  image_url_1..N`` for the HIT template's ``${...}`` variables);
  :func:`import_mturk` reads the batch *results* CSV (``HITId, AssignmentId,
  WorkerId, AssignmentStatus, SubmitTime, WorkTimeInSeconds, Input.*,
  Answer.item_1..N``, each answer a label: ``yes``/``no`` or a class id).
* Label Studio: :func:`export_labelstudio` writes tasks JSON (one task per
  item) and the matching labeling config; :func:`import_labelstudio` reads the
  JSON export (``annotations[].result[].value.choices``).

Imports never stop at a bad row: each malformed row is reported with its line
number and reason in :attr:`ImportResult.errors` and the rest is imported.
Votes for tasks or items not in the task table are rejected with the id.
"""
from __future__ import annotations

import csv
import io as _io
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from xml.sax.saxutils import escape

import numpy as np
import pandas as pd

from datakit.crowd.tasks import ANNOTATION_COLUMNS, conform_annotations, task_choices
from datakit.errors import DatakitError
from datakit.store.atomic import atomic_write_json, atomic_write_text

__all__ = ["ImportResult", "export_mturk", "import_mturk", "export_labelstudio", "import_labelstudio",
           "labelstudio_config", "mturk_layout"]

log = logging.getLogger(__name__)


@dataclass
class ImportResult:
    """What an import produced.

    Attributes
    ----------
    votes : DataFrame
        :data:`~datakit.crowd.tasks.ANNOTATION_COLUMNS` (+ ``work_time`` seconds when known).
    errors : list of (line, reason)
        Malformed rows, 1-based line numbers of the file; these rows were skipped.
    skipped : int
        Rows left out on purpose (rejected or cancelled assignments).
    """

    votes: pd.DataFrame
    errors: list[tuple[int, str]] = field(default_factory=list)
    skipped: int = 0


def _task_index(tasks: pd.DataFrame) -> dict[str, dict]:
    out = {}
    for task, grid in tasks.sort_values(["task", "position"]).groupby("task", sort=True):
        first = grid.iloc[0]
        out[str(task)] = {"items": [str(i) for i in grid["item"]], "kind": str(first["kind"]),
                          "question": str(first["question"]),
                          "choices": task_choices(str(first["kind"]), str(first["question"])),
                          "name": "" if pd.isna(first["question_name"]) else str(first["question_name"]),
                          "gloss": "" if pd.isna(first["gloss"]) else str(first["gloss"])}
    return out


def _url(template: str, item: str, paths: dict[str, str]) -> str:
    return template.format(id=item, path=paths.get(item, ""))


def export_mturk(tasks: pd.DataFrame, path: str | os.PathLike, *, image_url: str = "{path}",
                 paths: dict[str, str] | None = None) -> Path:
    """Write a Mechanical Turk batch CSV, one row per task (atomically).

    Parameters
    ----------
    tasks : DataFrame
        :data:`~datakit.crowd.tasks.TASK_COLUMNS`.
    image_url : str
        Template of each image's URL; ``{id}`` and ``{path}`` (the manifest path)
        are filled in, e.g. ``"https://example.org/pool/{path}"``.
    paths : dict, optional
        Item id -> manifest path, for ``{path}``.

    Returns
    -------
    The path written. The matching HIT layout (:func:`mturk_layout`) goes
    next to it, with the suffix ``.html``.
    """
    index = _task_index(tasks)
    paths = paths or {}
    width = max((len(t["items"]) for t in index.values()), default=0)
    header = ["task", "kind", "question", "question_name", "gloss", "n_items"]
    header += [f"item_{j}" for j in range(1, width + 1)] + [f"image_url_{j}" for j in range(1, width + 1)]
    buf = _io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(header)
    for task, t in index.items():
        items = t["items"] + [""] * (width - len(t["items"]))
        urls = [_url(image_url, i, paths) if i else "" for i in items]
        writer.writerow([task, t["kind"], t["question"], t["name"], t["gloss"], len(t["items"])] + items + urls)
    atomic_write_text(path, buf.getvalue())
    atomic_write_text(Path(path).with_suffix(".html"), mturk_layout(tasks))
    return Path(path)


def mturk_layout(tasks: pd.DataFrame) -> str:
    """An HTML HIT layout for the batch CSV of :func:`export_mturk`.

    One radio group per grid cell, named ``item_<j>``, so the results file has
    ``Answer.item_<j>`` columns; cells of shorter grids are hidden when their
    ``${image_url_<j>}`` is empty. Paste it into the requester UI's layout editor.
    """
    kinds = set(tasks["kind"])
    width = int(tasks.groupby("task").size().max()) if len(tasks) else 0
    if kinds == {"multiclass"}:
        choices = task_choices("multiclass", str(tasks["question"].iloc[0]))
        header = "<p>Pick the class of each image.</p>"
    else:
        choices = ["yes", "no"]
        header = "<p><b>Which of these images contain a ${question_name}?</b> ${gloss}</p>"
    cells = []
    for j in range(1, width + 1):
        radios = " ".join(f'<label><input type="radio" name="item_{j}" value="{escape(c)}" required> {escape(c)}</label>'
                          for c in choices)
        cells.append(f'  <div class="cell" data-url="${{image_url_{j}}}"><img src="${{image_url_{j}}}" alt="">'
                     f"<br>{radios}</div>")
    return ('<script src="https://assets.crowd.aws/crowd-html-elements.js"></script>\n<crowd-form>\n'
            f"{header}\n<style>.cell{{display:inline-block;margin:4px;text-align:center}}"
            ".cell img{width:112px;image-rendering:pixelated}</style>\n<div>\n" + "\n".join(cells) +
            "\n</div>\n<script>document.querySelectorAll('.cell').forEach(function(c){if(!c.dataset.url){"
            "c.style.display='none';c.querySelectorAll('input').forEach(function(i){i.required=false;});}});"
            "</script>\n</crowd-form>\n")


def _epoch(value) -> float:
    if value in (None, ""):
        return float("nan")
    text = str(value)
    parts = text.split()
    # MTurk writes e.g. "Tue Nov 28 10:12:13 PST 2026": drop the zone name pandas cannot parse
    if len(parts) == 6 and parts[4].isalpha():
        text = " ".join(parts[:4] + parts[5:])
    try:
        stamp = pd.Timestamp(text)
    except (ValueError, TypeError):
        return float("nan")
    if stamp.tzinfo is None:
        stamp = stamp.tz_localize("UTC")
    return stamp.timestamp()


def import_mturk(path: str | os.PathLike, tasks: pd.DataFrame, *, batch: str | None = None) -> ImportResult:
    """Read a Mechanical Turk batch results CSV into votes.

    One vote per ``Answer.item_j`` of each assignment (item ``Input.item_j`` of
    task ``Input.task``). Assignments with ``AssignmentStatus`` ``Rejected`` are
    skipped. A row with a missing ``WorkerId``, an unknown task or item, or an
    empty or invalid answer is reported with its line number and skipped.
    """
    path = Path(path)
    index = _task_index(tasks)
    batch = batch or path.name
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DatakitError(f"{path} is not UTF-8 text: {exc}") from None
    reader = csv.DictReader(_io.StringIO(text))
    needed = {"WorkerId", "Input.task"}
    missing = needed - set(reader.fieldnames or [])
    if missing:
        raise DatakitError(f"{path} is not a Mechanical Turk results file: missing columns {sorted(missing)}")
    rows, errors, skipped = [], [], 0
    for rec in reader:
        line = reader.line_num
        if None in rec:  # more fields than the header
            errors.append((line, f"{len(rec[None])} more fields than the header"))
            continue
        if (rec.get("AssignmentStatus") or "").strip().lower() == "rejected":
            skipped += 1
            continue
        worker = (rec.get("WorkerId") or "").strip()
        task = (rec.get("Input.task") or "").strip()
        if not worker:
            errors.append((line, "missing WorkerId"))
            continue
        if task not in index:
            errors.append((line, f"unknown task {task!r}"))
            continue
        t = index[task]
        votes, problem = [], None
        for j in range(1, len(t["items"]) + 1):
            item = (rec.get(f"Input.item_{j}") or "").strip()
            if not item:
                break
            if item not in t["items"]:
                problem = f"unknown item {item!r} in task {task!r}"
                break
            answer = (rec.get(f"Answer.item_{j}") or "").strip()
            if answer == "":
                problem = f"no answer for item_{j} ({item})"
                break
            if answer not in t["choices"]:
                problem = f"invalid answer {answer!r} for item_{j}; valid values are {{{', '.join(t['choices'])}}}"
                break
            votes.append((item, answer))
        if problem is None and not votes:
            problem = "no items in the row"
        if problem:
            errors.append((line, problem))
            continue
        when = _epoch(rec.get("SubmitTime"))
        try:
            work = float(rec.get("WorkTimeInSeconds") or "nan")
        except ValueError:
            work = float("nan")
        for item, answer in votes:
            rows.append((item, worker, answer, when, batch, task, rec.get("AssignmentId") or None, work))
    frame = pd.DataFrame(rows, columns=ANNOTATION_COLUMNS + ["work_time"])
    for line, reason in errors:
        log.warning("%s line %d: %s (row skipped)", path, line, reason)
    return ImportResult(conform_annotations(frame), errors, skipped)


def labelstudio_config(tasks: pd.DataFrame) -> str:
    """The Label Studio labeling config (XML) for the tasks of :func:`export_labelstudio`."""
    kinds = set(tasks["kind"])
    if kinds == {"multiclass"}:
        choices = task_choices("multiclass", str(tasks["question"].iloc[0]))
        header = "Pick the class of the image."
    else:
        choices = ["yes", "no"]
        header = "Does this image contain a $question_name? ($gloss)"
    inner = "\n".join(f'    <Choice value="{escape(c)}"/>' for c in choices)
    return (f'<View>\n  <Header value="{escape(header)}"/>\n  <Image name="image" value="$image"/>\n'
            f'  <Choices name="answer" toName="image" choice="single" required="true">\n{inner}\n'
            f'  </Choices>\n</View>\n')


def export_labelstudio(tasks: pd.DataFrame, path: str | os.PathLike, *, image_url: str = "{path}",
                       paths: dict[str, str] | None = None) -> tuple[Path, Path]:
    """Write Label Studio tasks JSON (one task per item) and ``<path>.xml``, the labeling config.

    Each task's ``data`` holds ``image`` (URL), ``item``, ``task``, ``question``,
    ``question_name`` and ``gloss``.

    Returns
    -------
    (tasks JSON path, config XML path)
    """
    paths = paths or {}
    out = []
    for _, row in tasks.sort_values(["task", "position"]).iterrows():
        item = str(row["item"])
        out.append({"data": {"image": _url(image_url, item, paths), "item": item, "task": str(row["task"]),
                             "question": str(row["question"]),
                             "question_name": "" if pd.isna(row["question_name"]) else str(row["question_name"]),
                             "gloss": "" if pd.isna(row["gloss"]) else str(row["gloss"])}})
    path = Path(path)
    atomic_write_json(path, out)
    config = path.with_suffix(".xml")
    atomic_write_text(config, labelstudio_config(tasks))
    return path, config


def _json_records(text: str, path: Path):
    """Yield ``(line, record)`` for each element of a top-level JSON list."""
    decoder = json.JSONDecoder()
    pos = len(text) - len(text.lstrip())
    if not text[pos:pos + 1] == "[":
        raise DatakitError(f"{path} is not a Label Studio JSON export (expected a list of tasks)")
    pos += 1
    while True:
        while pos < len(text) and text[pos] in " \t\r\n,":
            pos += 1
        if pos >= len(text):
            raise DatakitError(f"{path}: the JSON list is not closed")
        if text[pos] == "]":
            return
        line = text.count("\n", 0, pos) + 1
        try:
            record, pos = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as exc:
            raise DatakitError(f"{path} line {exc.lineno}: invalid JSON ({exc.msg}); nothing imported") from None
        yield line, record


def import_labelstudio(path: str | os.PathLike, tasks: pd.DataFrame, *, batch: str | None = None) -> ImportResult:
    """Read a Label Studio JSON export into votes.

    Worker = ``completed_by`` (its ``email`` when it is an object); time =
    ``created_at``; ``lead_time`` becomes ``work_time``. Cancelled annotations
    are skipped. Records without ``data.item``/``data.task``, with an unknown
    task or item, or an answer that is not a valid choice are reported with the
    line where the record starts.
    """
    path = Path(path)
    index = _task_index(tasks)
    batch = batch or path.name
    rows, errors, skipped = [], [], 0
    for line, rec in _json_records(path.read_text(encoding="utf-8"), path):
        if not isinstance(rec, dict) or not isinstance(rec.get("data"), dict):
            errors.append((line, "record has no 'data' object"))
            continue
        data = rec["data"]
        task, item = str(data.get("task") or ""), str(data.get("item") or "")
        if not task or not item:
            errors.append((line, "record has no data.task or data.item"))
            continue
        if task not in index:
            errors.append((line, f"unknown task {task!r}"))
            continue
        if item not in index[task]["items"]:
            errors.append((line, f"unknown item {item!r} in task {task!r}"))
            continue
        for ann in rec.get("annotations") or []:
            if not isinstance(ann, dict):
                errors.append((line, "an annotation is not an object"))
                continue
            if ann.get("was_cancelled"):
                skipped += 1
                continue
            who = ann.get("completed_by")
            if isinstance(who, dict):
                who = who.get("email") or who.get("id")
            if who in (None, ""):
                errors.append((line, f"annotation {ann.get('id')} has no completed_by"))
                continue
            choices = [c for r in ann.get("result") or [] if isinstance(r, dict)
                       for c in (r.get("value") or {}).get("choices") or []]
            if len(choices) != 1:
                errors.append((line, f"annotation {ann.get('id')} has {len(choices)} choices, expected 1"))
                continue
            if choices[0] not in index[task]["choices"]:
                errors.append((line, f"invalid answer {choices[0]!r}; valid values are "
                                     f"{{{', '.join(index[task]['choices'])}}}"))
                continue
            try:
                work = float(ann.get("lead_time")) if ann.get("lead_time") is not None else np.nan
            except (TypeError, ValueError):
                work = np.nan
            rows.append((item, str(who), choices[0], _epoch(ann.get("created_at")), batch, task,
                         str(ann.get("id")) if ann.get("id") is not None else None, work))
    for line, reason in errors:
        log.warning("%s line %d: %s (skipped)", path, line, reason)
    frame = pd.DataFrame(rows, columns=ANNOTATION_COLUMNS + ["work_time"])
    return ImportResult(conform_annotations(frame), errors, skipped)
