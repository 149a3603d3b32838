"""``report.md``: the report as Markdown, figures as PNG files next to it."""
from __future__ import annotations

import pandas as pd

from datakit.report.format import format_value

__all__ = ["render_markdown"]


def _md_table(df: pd.DataFrame, max_rows: int) -> str:
    shown = df.head(max_rows)
    esc = lambda v: format_value(v).replace("|", "\\|").replace("\n", " ")  # noqa: E731
    lines = ["| " + " | ".join(esc(c) for c in shown.columns) + " |",
             "|" + "---|" * len(shown.columns)]
    lines += ["| " + " | ".join(esc(v) for v in row) + " |" for row in shown.itertuples(index=False, name=None)]
    if len(df) > max_rows:
        lines.append(f"\n_{len(df) - max_rows} more rows in report.json_")
    return "\n".join(lines)


def render_markdown(run, figure_dir: str = "figures", max_rows: int = 20) -> tuple[str, dict[str, bytes]]:
    """The report as Markdown, and the figure files it links to.

    Parameters
    ----------
    run : datakit.report.AuditRun
    figure_dir : str
        Folder (relative to the Markdown file) the figures are linked from.
    max_rows : int
        Rows shown per table.

    Returns
    -------
    text : str
    figures : dict of relative path -> PNG bytes
    """
    out = [f"# datakit audit report", "", f"datakit {run.version}, {run.created}, "
           f"{format_value(run.total_seconds)} s", "", "## Datasets", ""]
    out.append(_md_table(pd.DataFrame([{k: d[k] for k in ("name", "path", "images", "classes")}
                                       for d in run.datasets]), 1000))
    out += ["", "## Summary", ""]
    rows = [{"audit": r.name, "status": run.status[r.name], "seconds": run.seconds[r.name],
             "reason": r.skipped or ""} for r in run.results]
    out.append(_md_table(pd.DataFrame(rows), 1000))
    files: dict[str, bytes] = {}
    for r in run.results:
        out += ["", f"## {r.name} ({run.status[r.name]})", ""]
        if r.skipped:
            out += [f"**{'Failed' if run.status[r.name] == 'failed' else 'Skipped'}:** {r.skipped}", ""]
        if r.summary:
            out.append(_md_table(pd.DataFrame({"metric": list(r.summary), "value": list(r.summary.values())}), 1000))
            out.append("")
        out += [f"- {n}" for n in r.notes]
        for name, png in r.figures.items():
            rel = f"{figure_dir}/{r.name}-{name}.png"
            files[rel] = png
            out += ["", f"![{r.name}: {name}]({rel})"]
        for name, table in r.tables.items():
            out += ["", f"### {name.replace('_', ' ')}", "", _md_table(table, max_rows)]
    return "\n".join(out) + "\n", files
