"""``report.html``: one self-contained page (inline CSS, figures as ``data:`` URIs)."""
from __future__ import annotations

import base64
import html
import json

import pandas as pd

from datakit._memory import release_memory
from datakit.report.format import format_value, key_numbers
from datakit.report.json_report import to_jsonable

__all__ = ["render_html"]

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em auto;max-width:1100px;
color:#222;padding:0 1em;line-height:1.4}
h1{font-size:1.6em}h2{border-bottom:2px solid #ddd;padding-bottom:.2em;margin-top:2em}
table{border-collapse:collapse;margin:.6em 0;font-size:.85em}
th,td{border:1px solid #ccc;padding:.2em .5em;text-align:left;vertical-align:top}
th{background:#f3f3f3}td.num{text-align:right;font-variant-numeric:tabular-nums}
.ok{color:#1a7f37;font-weight:600}.skipped{color:#9a6700;font-weight:600}.failed{color:#cf222e;font-weight:600}
figure{display:inline-block;margin:.5em 1em .5em 0;vertical-align:top}
figure img{max-width:100%;border:1px solid #eee}figcaption{font-size:.8em;color:#555}
.notes li{color:#555;font-size:.9em}details{margin:.5em 0}pre{background:#f7f7f7;padding:.6em;overflow:auto;
font-size:.8em;max-height:30em}.muted{color:#777;font-size:.85em}
"""


def _e(text) -> str:
    return html.escape(str(text), quote=True)


def _cell(value) -> str:
    num = isinstance(value, (int, float)) and not isinstance(value, bool)
    return f'<td class="num">{_e(format_value(value))}</td>' if num else f"<td>{_e(format_value(value))}</td>"


def _table(df: pd.DataFrame, max_rows: int, total: int | None = None) -> str:
    """The first ``max_rows`` rows of ``df`` (of ``total`` rows, default ``len(df)``)."""
    shown = df.head(max_rows)
    total = len(df) if total is None else total
    head = "".join(f"<th>{_e(c)}</th>" for c in shown.columns)
    body = "".join("<tr>" + "".join(_cell(v) for v in row) + "</tr>"
                   for row in shown.itertuples(index=False, name=None))
    more = (f'<p class="muted">{total - max_rows} more rows in report.json</p>' if total > max_rows else "")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>{more}"


def _summary_table(summary: dict) -> str:
    rows = "".join(f'<tr><th>{_e(k)}</th>{_cell(v)}</tr>' for k, v in summary.items())
    return f'<table class="summary"><tbody>{rows}</tbody></table>'


def _figure(audit: str, name: str, png: bytes) -> str:
    data = base64.b64encode(png).decode("ascii")
    return (f'<figure><img src="data:image/png;base64,{data}" alt="{_e(audit)}: {_e(name)}">'
            f"<figcaption>{_e(name.replace('_', ' '))}</figcaption></figure>")


def render_html(run, max_rows: int = 30, per_image_rows: int = 20) -> str:
    """The report as one HTML page.

    Parameters
    ----------
    run : datakit.report.AuditRun
    max_rows : int
        Rows shown per table (all rows are in ``report.json``).
    per_image_rows : int
        Rows of each per-image table shown (highest scores first).

    Returns
    -------
    str
    """
    parts = [f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>datakit audit report</title>"
             f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><style>{_CSS}</style></head><body>",
             "<h1>datakit audit report</h1>",
             f'<p class="muted">datakit {_e(run.version)} &middot; {_e(run.created)} &middot; '
             f"{_e(format_value(run.total_seconds))} s</p>", "<h2>Datasets</h2>"]
    ds = pd.DataFrame([{"name": d["name"], "path": d["path"], "images": d["images"], "classes": d["classes"],
                        "splits": ", ".join(f"{k}: {v}" for k, v in d["splits"].items()),
                        "checksum": d["checksum"][:16]} for d in run.datasets])
    parts.append(_table(ds, len(ds)))
    parts.append("<h2>Summary</h2>")
    rows = "".join(
        f'<tr><td><a href="#{_e(r.name)}">{_e(r.name)}</a></td><td class="{_e(run.status[r.name])}">'
        f"{_e(run.status[r.name])}</td><td class=\"num\">{_e(format_value(run.seconds[r.name]))}</td>"
        f"<td>{_e(key_numbers(r.summary) if not r.skipped else r.skipped)}</td></tr>"
        for r in run.results)
    parts.append(f"<table id=\"summary\"><thead><tr><th>audit</th><th>status</th><th>seconds</th>"
                 f"<th>key numbers</th></tr></thead><tbody>{rows}</tbody></table>")
    for r in run.results:
        status = run.status[r.name]
        parts.append(f'<section id="{_e(r.name)}"><h2>{_e(r.name)} <span class="{_e(status)}">{_e(status)}</span>'
                     "</h2>")
        if r.skipped:
            parts.append(f"<p><strong>{'Failed' if status == 'failed' else 'Skipped'}:</strong> {_e(r.skipped)}</p>")
        if r.summary:
            parts.append(_summary_table(r.summary))
        if r.notes:
            parts.append('<ul class="notes">' + "".join(f"<li>{_e(n)}</li>" for n in r.notes) + "</ul>")
        for name, png in r.figures.items():
            parts.append(_figure(r.name, name, png))
        for name, table in r.tables.items():
            parts.append(f"<h3>{_e(name.replace('_', ' '))}</h3>{_table(table, max_rows)}")
        pi = r.per_image if r.per_image_rows else None  # read once (it may wait on disk)
        if pi is not None:
            shown = pi.head(per_image_rows)
            if "score" in pi.columns:  # the highest scores, found by sorting the scores alone (not a copy of pi)
                order = pi["score"].reset_index(drop=True).sort_values(ascending=False, kind="stable").index
                shown = pi.iloc[order[:per_image_rows]]
            flagged = int(pi["flag"].sum()) if "flag" in pi.columns else None
            label = f"per image ({len(pi)} images" + (f", {flagged} flagged" if flagged is not None else "") + ")"
            parts.append(f"<details><summary>{_e(label)}, highest scores first</summary>"
                         f"{_table(shown, per_image_rows, len(pi))}</details>")
            del pi, shown
            if r.spilled:  # read back from disk: hand it back before the next one is read
                release_memory()
        info = {k: v for k, v in r.info.items() if k != "traceback"}
        parts.append("<details><summary>info</summary><pre>"
                     f"{_e(json.dumps(to_jsonable(info), indent=1))}</pre></details>")
        if "traceback" in r.info:
            parts.append(f"<details><summary>traceback</summary><pre>{_e(r.info['traceback'])}</pre></details>")
        parts.append("</section>")
    parts.append("</body></html>")
    return "\n".join(parts)
