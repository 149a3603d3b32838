"""``report.json``: every number of an audit run, as strict JSON."""
from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pandas as pd

from datakit._memory import release_memory

__all__ = ["to_jsonable", "report_dict", "render_json", "write_json"]

#: rows of a per-image table converted and written at a time by :func:`write_json`
JSON_ROW_CHUNK = 20_000


def to_jsonable(value: Any) -> Any:
    """Convert numpy / pandas values to plain JSON types.

    NaN and missing values become ``null``; infinities become the strings
    ``"inf"`` / ``"-inf"`` (strict JSON has no infinity); bytes are dropped
    to their length.
    """
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, pd.DataFrame):
        return [to_jsonable(r) for r in value.to_dict(orient="records")]
    if isinstance(value, pd.Series):
        return to_jsonable(value.to_list())
    if isinstance(value, np.ndarray):
        return to_jsonable(value.tolist())
    if isinstance(value, (bytes, bytearray)):
        return {"bytes": len(value)}
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        v = float(value)
        if math.isnan(v):
            return None
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return v
    if value is None or value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, str):
        return value
    try:
        if pd.isna(value):
            return None
    except (TypeError, ValueError):
        pass
    return str(value)


def _columns(frame: pd.DataFrame) -> dict:
    """A (possibly 100k-row) per-image table as ``{"columns": [...], "rows": [[...], ...]}``."""
    return {"columns": [str(c) for c in frame.columns], "rows": _rows(frame)}


def _rows(frame: pd.DataFrame) -> list:
    """The rows of a table as JSON-able lists."""
    return to_jsonable(frame.to_numpy(dtype=object).tolist())


def report_dict(run, per_image: bool = True) -> dict:
    """The whole run as one JSON-able dict (what ``report.json`` holds).

    Per audit: ``status``, ``skipped``, ``seconds``, ``cpu_seconds``, ``summary``,
    ``notes``, ``tables`` (each a list of row records), ``per_image``
    (``{"columns": [...], "rows": [[...], ...]}``, compact for large tables),
    ``figures`` (names; the PNGs are in report.html) and ``info``.
    ``per_image=False`` leaves the per-image tables out (None) and does not read them.
    """
    audits = {}
    for r in run.results:
        audits[r.name] = {
            "status": run.status.get(r.name), "skipped": r.skipped, "seconds": run.seconds.get(r.name),
            "cpu_seconds": run.cpu_seconds.get(r.name),
            "summary": to_jsonable(r.summary), "notes": list(r.notes),
            "tables": {k: to_jsonable(v) for k, v in r.tables.items()},
            "per_image": _columns(r.per_image) if per_image and r.per_image is not None else None,
            "figures": sorted(r.figures), "info": to_jsonable(r.info),
        }
    return {"datakit_version": run.version, "created": run.created, "seconds_total": run.total_seconds,
            "datasets": to_jsonable(run.datasets), "options": to_jsonable(run.options), "audits": audits}


def render_json(run, indent: int | None = None) -> str:
    """``report.json`` text (strict JSON: ``allow_nan=False``; compact unless ``indent``)."""
    return json.dumps(report_dict(run), indent=indent, allow_nan=False)


def write_json(run, fh) -> None:
    """Write :func:`render_json`'s text to the text file ``fh``, a per-image table at a time.

    The same characters as ``fh.write(render_json(run))``, but no more than one
    audit's per-image table is in memory at once (read back from disk when the
    run spilled it), and its rows become JSON ``JSON_ROW_CHUNK`` at a time:
    the whole report of a million-image run is never one string.
    """
    doc = report_dict(run, per_image=False)
    marks = {}
    for r in {r.name: r for r in run.results}.values():  # report_dict keeps the last result of a name
        if r.per_image_rows is not None:
            mark = f"\x00per_image {len(marks)}\x00"
            doc["audits"][r.name]["per_image"] = mark
            marks[json.dumps(mark)] = r
    text = json.dumps(doc, allow_nan=False)
    del doc
    pos = 0
    for mark, r in marks.items():
        at = text.index(mark, pos)
        fh.write(text[pos:at])
        frame = r.per_image
        fh.write('{"columns": ' + json.dumps([str(c) for c in frame.columns]) + ', "rows": [')
        for lo in range(0, len(frame), JSON_ROW_CHUNK):
            rows = json.dumps(_rows(frame.iloc[lo:lo + JSON_ROW_CHUNK]), allow_nan=False)
            fh.write((", " if lo else "") + rows[1:-1])
        fh.write("]}")
        del frame
        if r.spilled:  # read back from disk: hand it back before the next one is read
            release_memory()
        pos = at + len(mark)
    fh.write(text[pos:])
