"""``report.json``: every number of an audit run, as strict JSON."""
from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["to_jsonable", "report_dict", "render_json"]


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
    return {"columns": [str(c) for c in frame.columns],
            "rows": to_jsonable(frame.to_numpy(dtype=object).tolist())}


def report_dict(run) -> dict:
    """The whole run as one JSON-able dict (what ``report.json`` holds).

    Per audit: ``status``, ``skipped``, ``seconds``, ``cpu_seconds``, ``summary``,
    ``notes``, ``tables`` (each a list of row records), ``per_image``
    (``{"columns": [...], "rows": [[...], ...]}``, compact for large tables),
    ``figures`` (names; the PNGs are in report.html) and ``info``.
    """
    audits = {}
    for r in run.results:
        audits[r.name] = {
            "status": run.status.get(r.name), "skipped": r.skipped, "seconds": run.seconds.get(r.name),
            "cpu_seconds": run.cpu_seconds.get(r.name),
            "summary": to_jsonable(r.summary), "notes": list(r.notes),
            "tables": {k: to_jsonable(v) for k, v in r.tables.items()},
            "per_image": _columns(r.per_image) if r.per_image is not None else None,
            "figures": sorted(r.figures), "info": to_jsonable(r.info),
        }
    return {"datakit_version": run.version, "created": run.created, "seconds_total": run.total_seconds,
            "datasets": to_jsonable(run.datasets), "options": to_jsonable(run.options), "audits": audits}


def render_json(run, indent: int | None = None) -> str:
    """``report.json`` text (strict JSON: ``allow_nan=False``; compact unless ``indent``)."""
    return json.dumps(report_dict(run), indent=indent, allow_nan=False)
