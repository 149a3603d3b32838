"""How numbers are written in the HTML, Markdown and terminal reports (one rule for all)."""
from __future__ import annotations

import math
from typing import Any

import numpy as np

__all__ = ["format_value", "key_numbers"]


def format_value(value: Any) -> str:
    """A summary value as text: floats with 4 significant digits, NaN as ``n/a``.

    Examples
    --------
    >>> format_value(0.98555), format_value(47.70406), format_value(3), format_value(float("nan"))
    ('0.9856', '47.7', '3', 'n/a')
    """
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        v = float(value)
        if math.isnan(v):
            return "n/a"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return f"{v:.4g}"
    return str(value)


#: summary keys shown first in one-line summaries
_PREFERRED = ("accuracy", "chance", "accuracy_linear", "accuracy_conv", "class_conditional_accuracy",
              "self_accuracy", "others_accuracy", "drop_pct", "imbalance_ratio", "flagged_fraction",
              "n_flagged", "max_abs_cohens_d", "max_effect_metric", "n_large_differences")


def key_numbers(summary: dict, limit: int = 5) -> str:
    """The first few summary numbers as ``key=value`` text (preferred keys first, per-dataset keys last)."""
    keys = [k for k in _PREFERRED if k in summary]
    keys += [k for k in summary if k not in keys and "[" not in k]
    keys += [k for k in summary if k not in keys]
    return "  ".join(f"{k}={format_value(summary[k])}" for k in keys[:limit])
