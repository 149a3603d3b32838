"""The one result shape every audit returns, and the audit registry."""
from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import pandas as pd

from datakit.registry import Registry

__all__ = ["AuditResult", "AUDITS", "register_audit", "get_audit", "list_audits", "skipped"]

#: name -> audit function ``fn(datasets: Sequence[datakit.store.Dataset], **options) -> AuditResult``
AUDITS: Registry[Callable[..., "AuditResult"]] = Registry("audit")


@dataclass
class AuditResult:
    """What an audit found, in one shape (after cleanlab Datalab's issue managers).

    Attributes
    ----------
    name : str
        The audit's registered name.
    summary : dict
        One row of numbers (and short strings): the figures a CI gate can test,
        e.g. ``{"accuracy": 0.93, "chance": 0.33}``.
    per_image : DataFrame or None
        One row per examined image: ``dataset``, ``id``, ``flag`` (bool) and
        ``score`` (0-1, higher = more suspicious) where that makes sense.
    tables : dict of str -> DataFrame
        Further tables (confusion matrices, learning curves, per-class rows).
    figures : dict of str -> bytes
        PNG images, rendered inline in the HTML report.
    info : dict
        Everything else worth keeping (parameters used, notes).
    skipped : str or None
        When the audit could not run on this input, the reason (the report
        shows it; nothing crashes).
    """

    name: str
    summary: dict[str, Any] = field(default_factory=dict)
    per_image: pd.DataFrame | None = None
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    figures: dict[str, bytes] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)
    skipped: str | None = None
    notes: list[str] = field(default_factory=list)


def skipped(name: str, reason: str) -> AuditResult:
    """An :class:`AuditResult` that records why the audit did not run."""
    return AuditResult(name=name, skipped=reason)


def register_audit(name: str, *, columns: Sequence[str] | None = None):
    """Decorator: register ``fn(datasets, **options) -> AuditResult`` under ``name``.

    ``columns`` names the manifest columns the audit reads (``label`` and
    ``split`` always come); :func:`datakit.report.run_audits` then gives it
    datasets whose manifest holds only those (:meth:`Dataset.select_columns`),
    so memory follows what each audit uses. None: every column.
    """
    def wrap(fn):
        fn.manifest_columns = None if columns is None else tuple(columns)
        return AUDITS.register(name)(fn)

    return wrap


_loaded = False


def _load_all() -> None:
    """Import every module of the ``audits`` package so each registers itself."""
    global _loaded
    if _loaded:
        return
    import audits

    for mod in pkgutil.iter_modules(audits.__path__):
        if not mod.name.startswith("_") and mod.name != "base":
            importlib.import_module(f"audits.{mod.name}")
    _loaded = True


def get_audit(name: str) -> Callable[..., AuditResult]:
    _load_all()
    return AUDITS.get(name)


def list_audits() -> list[str]:
    _load_all()
    return AUDITS.names()
