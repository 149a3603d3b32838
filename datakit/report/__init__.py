"""Audit reports: run audits, then render their results as HTML, JSON, Markdown
and a terminal table. Reports are rendered from :class:`audits.AuditResult`
objects, never from printed text.

>>> from datakit.report import run_audits, write_report   # doctest: +SKIP
>>> run = run_audits([open_dataset("demo/digits")])        # doctest: +SKIP
>>> write_report(run, "audit-report")                       # doctest: +SKIP
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable

from datakit.report.format import format_value, key_numbers
from datakit.report.gate import Condition, available_metrics, evaluate_conditions, parse_condition
from datakit.report.html_report import render_html
from datakit.report.json_report import render_json, report_dict, to_jsonable, write_json
from datakit.report.markdown_report import render_markdown
from datakit.report.run import AuditRun, parse_class_map, parse_option, resolve_audits, run_audits
from datakit.report.terminal import summary_frame

__all__ = [
    "AuditRun", "run_audits", "resolve_audits", "parse_option", "parse_class_map", "render_html", "render_json",
    "write_json", "report_dict", "to_jsonable", "render_markdown", "summary_frame", "format_value", "key_numbers",
    "Condition", "parse_condition", "evaluate_conditions", "available_metrics", "write_report", "REPORT_FORMATS",
]

#: report file formats and their file names
REPORT_FORMATS = {"html": "report.html", "json": "report.json", "md": "report.md"}


def write_report(run: AuditRun, out: str | os.PathLike, formats: Iterable[str] = ("html", "json")) -> list[Path]:
    """Write the report files (atomically) into ``out``; return their paths.

    Parameters
    ----------
    run : AuditRun
    out : path
        Output folder (created).
    formats : iterable of {"html", "json", "md"}

    Raises
    ------
    ValueError
        An unknown format.
    """
    from datakit.store.atomic import atomic_write, atomic_write_bytes, atomic_write_text

    out = Path(out)
    paths = []
    for fmt in formats:
        if fmt not in REPORT_FORMATS:
            raise ValueError(f"Unknown report format {fmt!r}. Valid values are {{{', '.join(REPORT_FORMATS)}}}.")
        path = out / REPORT_FORMATS[fmt]
        if fmt == "html":
            atomic_write_text(path, render_html(run))
        elif fmt == "json":
            with atomic_write(path, "w") as fh:  # a per-image table at a time (see write_json)
                write_json(run, fh)
        else:
            text, files = render_markdown(run)
            for rel, data in files.items():
                atomic_write_bytes(out / rel, data)
            atomic_write_text(path, text)
        paths.append(path)
    for path in [*paths, *(out / "figures").glob("*.png")]:
        os.chmod(path, 0o644)  # atomic writes create 0600 temp files; reports are for sharing
    return paths
