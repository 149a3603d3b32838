"""The summary table ``datakit audit`` prints."""
from __future__ import annotations

import pandas as pd

from datakit.report.format import format_value, key_numbers

__all__ = ["summary_frame"]


def summary_frame(run, limit: int = 4) -> pd.DataFrame:
    """One row per audit: status, seconds, key numbers (or the reason it was skipped).

    Parameters
    ----------
    run : datakit.report.AuditRun
    limit : int
        Numbers shown per audit (all are in ``report.json``).

    Returns
    -------
    DataFrame with columns audit, status, seconds, result
    """
    rows = []
    for r in run.results:
        text = r.skipped if r.skipped else key_numbers(r.summary, limit)
        rows.append({"audit": r.name, "status": run.status[r.name], "seconds": format_value(run.seconds[r.name]),
                     "result": text if len(text) <= 110 else text[:107] + "..."})
    return pd.DataFrame(rows, columns=["audit", "status", "seconds", "result"])
