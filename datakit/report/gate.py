"""``--fail-on`` conditions: gate a dataset on audit numbers, the way CI gates code."""
from __future__ import annotations

import math
import operator
import re
from dataclasses import dataclass
from typing import Sequence

from datakit.errors import DatakitError

__all__ = ["Condition", "parse_condition", "evaluate_conditions", "available_metrics", "OPERATORS"]

#: comparison operators, longest first (so ">=" is not read as ">")
OPERATORS = {">=": operator.ge, "<=": operator.le, "==": operator.eq, "!=": operator.ne,
             ">": operator.gt, "<": operator.lt}

_NUMBER = r"[-+]?(?:\d+\.?\d*(?:[eE][-+]?\d+)?|\.\d+(?:[eE][-+]?\d+)?|inf|nan)"
# the metric is greedy, so an operator inside it (e.g. "accuracy[mnist->usps]") is skipped
_PATTERN = re.compile(rf"^\s*(?P<audit>[A-Za-z_][A-Za-z0-9_]*)\.(?P<metric>.+)\s*"
                      rf"(?P<op>>=|<=|==|!=|>|<)\s*(?P<value>{_NUMBER})\s*$")


@dataclass(frozen=True)
class Condition:
    """One ``AUDIT.METRIC OP NUMBER`` condition."""

    audit: str
    metric: str
    op: str
    value: float
    text: str

    def holds(self, actual: float) -> bool:
        return bool(OPERATORS[self.op](actual, self.value))


def parse_condition(text: str) -> Condition:
    """Parse ``AUDIT.METRIC OP NUMBER`` (operators ``> >= < <= == !=``).

    Examples
    --------
    >>> parse_condition("name_that_dataset.accuracy>0.9")
    Condition(audit='name_that_dataset', metric='accuracy', op='>', value=0.9, text='name_that_dataset.accuracy>0.9')
    >>> parse_condition("cross_dataset.accuracy[mnist->usps] < 0.6").metric
    'accuracy[mnist->usps]'
    """
    m = _PATTERN.match(text)
    if not m:
        raise DatakitError(
            f"Bad --fail-on {text!r}: expected AUDIT.METRIC OP NUMBER with OP one of "
            f"{{{', '.join(OPERATORS)}}}, e.g. name_that_dataset.accuracy>0.9")
    return Condition(m["audit"], m["metric"].strip(), m["op"], float(m["value"]), text.strip())


def available_metrics(run) -> list[str]:
    """Every ``audit.metric`` with a numeric value in a run's summaries."""
    out = []
    for r in run.results:
        for key, value in r.summary.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                out.append(f"{r.name}.{key}")
    return out


def evaluate_conditions(run, conditions: Sequence[Condition]) -> list[tuple[Condition, float]]:
    """The conditions that hold, with the measured values.

    Raises
    ------
    DatakitError
        A condition names an audit that did not run, was skipped or failed,
        or a metric the audit does not report (the message lists the
        available metrics).
    """
    held = []
    for cond in conditions:
        if cond.audit not in run.status:
            raise DatakitError(f"--fail-on {cond.text!r}: audit {cond.audit!r} was not run. "
                               f"Audits run: {{{', '.join(run.status)}}}.")
        result = run.result(cond.audit)
        if run.status[cond.audit] != "ok":
            raise DatakitError(f"--fail-on {cond.text!r}: audit {cond.audit!r} was {run.status[cond.audit]} "
                               f"({result.skipped}), so {cond.metric!r} has no value.")
        value = result.summary.get(cond.metric)
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            metrics = [m for m in available_metrics(run) if m.startswith(cond.audit + ".")]
            what = "unknown metric" if cond.metric not in result.summary else "non-numeric metric"
            raise DatakitError(f"--fail-on {cond.text!r}: {what} {cond.metric!r} for audit {cond.audit!r}. "
                               f"Available metrics: {{{', '.join(metrics)}}}.")
        value = float(value)
        if not math.isnan(value) and cond.holds(value):
            held.append((cond, value))
    return held
