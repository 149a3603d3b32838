"""Run audits on datasets and collect their results (the report's input)."""
from __future__ import annotations

import datetime as _dt
import inspect
import json
import logging
import time
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import pandas as pd

from datakit import __version__
from datakit._memory import release_memory
from datakit.errors import DatakitError
from datakit.store.dataset import Dataset

__all__ = ["AuditRun", "run_audits", "resolve_audits", "parse_option", "parse_class_map", "audit_options"]

logger = logging.getLogger(__name__)

#: per-image tables of at least this many rows wait on disk once their audit returns (see run_audits)
SPILL_ROWS = 50_000

#: options the runner hands to every audit that declares them
GLOBAL_OPTIONS = ("class_map", "seed", "group_by", "workers", "scheduler", "features", "weights")


@dataclass
class AuditRun:
    """Results of one ``datakit audit`` run.

    Attributes
    ----------
    results : list of audits.base.AuditResult
    status : dict
        audit name -> ``"ok"``, ``"skipped"`` or ``"failed"``.
    seconds : dict
        audit name -> wall time in seconds.
    cpu_seconds : dict
        audit name -> CPU time of this process (all its threads) in seconds; on a
        shared machine a better measure of the work than wall time.
    datasets : list of dict
        name, path, checksum, images, classes, splits of each input.
    created : str
        ISO timestamp (UTC).
    options : dict
        The options each audit ran with (JSON-able).
    """

    results: list = field(default_factory=list)
    status: dict[str, str] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    cpu_seconds: dict[str, float] = field(default_factory=dict)
    datasets: list[dict] = field(default_factory=list)
    created: str = ""
    options: dict[str, dict] = field(default_factory=dict)
    version: str = __version__

    def result(self, name: str):
        """The :class:`AuditResult` of audit ``name``."""
        for r in self.results:
            if r.name == name:
                return r
        raise KeyError(name)

    @property
    def total_seconds(self) -> float:
        return float(sum(self.seconds.values()))


def resolve_audits(names: Sequence[str] | str | None) -> list[str]:
    """Validate audit names (a list or a comma-separated string); default: every registered audit.

    Raises
    ------
    DatakitError
        An unknown name; the message lists the valid ones.
    """
    from audits import AUDITS, list_audits

    valid = list_audits()
    if names is None or names == "" or names == []:
        return valid
    if isinstance(names, str):
        names = [n for n in names.split(",")]
    out = []
    for name in (n.strip() for n in names):
        if not name:
            continue
        if name not in valid:
            raise DatakitError(AUDITS.unknown_message(name))
        if name not in out:
            out.append(name)
    if not out:
        raise DatakitError(f"No audit selected. Valid values are {{{', '.join(valid)}}}.")
    return out


def parse_option(text: str) -> tuple[str, str, Any]:
    """Parse ``AUDIT.KEY=VALUE``; the value is read as JSON when it parses, else kept as a string.

    Examples
    --------
    >>> parse_option("name_that_dataset.n_per_dataset=500")
    ('name_that_dataset', 'n_per_dataset', 500)
    >>> parse_option("name_that_dataset.probes=linear")
    ('name_that_dataset', 'probes', 'linear')
    """
    if "=" not in text or "." not in text.split("=", 1)[0]:
        raise DatakitError(f"Bad --option {text!r}: expected AUDIT.KEY=VALUE, e.g. name_that_dataset.n_per_dataset=500")
    lhs, raw = text.split("=", 1)
    audit, key = lhs.strip().split(".", 1)
    raw = raw.strip()
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = {"none": None, "true": True, "false": False}.get(raw.lower(), raw)
    return audit, key.strip(), value


def parse_class_map(specs: Sequence[str]) -> dict[str, dict[str, str]]:
    """Parse ``DATASET:LABEL=SHARED[,LABEL=SHARED...]`` specs into ``{dataset: {label: shared}}``.

    Examples
    --------
    >>> parse_class_map(["imagenette:n02102040=dog,n03417042=truck"])
    {'imagenette': {'n02102040': 'dog', 'n03417042': 'truck'}}
    """
    out: dict[str, dict[str, str]] = {}
    for spec in specs:
        if ":" not in spec:
            raise DatakitError(f"Bad --map {spec!r}: expected DATASET:LABEL=SHARED[,LABEL=SHARED...], "
                               "e.g. imagenette:n02102040=dog")
        dataset, pairs = spec.split(":", 1)
        for pair in pairs.split(","):
            if "=" not in pair or not pair.split("=", 1)[0].strip() or not pair.split("=", 1)[1].strip():
                raise DatakitError(f"Bad --map {spec!r}: {pair!r} is not LABEL=SHARED")
            label, shared = pair.split("=", 1)
            out.setdefault(dataset.strip(), {})[label.strip()] = shared.strip()
    return out


def audit_options(fn: Callable) -> tuple[list[str], bool]:
    """Keyword options an audit declares, and whether it accepts any (``**kwargs``)."""
    params = list(inspect.signature(fn).parameters.values())[1:]
    named = [p.name for p in params if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return named, any(p.kind == p.VAR_KEYWORD for p in params)


def _describe(ds: Dataset) -> dict:
    m = ds.read_columns(["label", "split"]) if hasattr(ds, "read_columns") else ds.manifest
    return {"name": ds.name, "path": str(ds.root), "checksum": ds.checksum, "images": int(len(m)),
            "classes": int(m["label"].nunique()), "splits": {str(k): int(v) for k, v in
                                                            m["split"].astype(str).value_counts().items()}}


def _column(ds: Dataset, name: str) -> pd.Series:
    """One manifest column, without loading (or caching) the others."""
    if hasattr(ds, "read_columns") and "manifest" not in vars(ds):
        frame = ds.read_columns([name])
        return frame[name] if name in frame.columns else pd.Series([], dtype="string")
    return ds.manifest[name]


def _views(datasets: Sequence[Dataset], columns: Sequence[str] | None) -> list:
    """Fresh views of the datasets with only the columns an audit declared (all: it declared none).

    Each audit gets its own views, dropped when it returns, so no audit keeps
    another's columns in memory.
    """
    return [ds.select_columns(columns) if hasattr(ds, "select_columns") else ds for ds in datasets]


def run_audits(datasets: Sequence[Dataset], names: Sequence[str] | str | None = None,
               options: Mapping[str, Mapping[str, Any]] | None = None,
               class_map: Mapping[str, Mapping[str, str]] | None = None, seed: int = 0,
               group_by: str | None = None,
               progress: Callable[[str, bool], None] | None = None,
               workers: int | None = None, scheduler: str | None = None, features: str | None = None,
               weights: str | None = None, spill_rows: int | None = SPILL_ROWS) -> AuditRun:
    """Run audits and collect their results.

    Parameters
    ----------
    datasets : sequence of Dataset
    names : sequence of str or comma-separated str, optional
        Audits to run (default: every registered audit; those that do not
        apply to the input record why they were skipped).
    options : mapping, optional
        ``{audit: {option: value}}`` passed to each audit.
    class_map : mapping, optional
        ``{dataset: {label: shared label}}``, given to every audit that takes ``class_map``.
    seed : int
        Given to every audit that takes ``seed``.
    group_by : {"auto", "dataset", "source"}, optional
        Given to every audit that takes ``group_by`` (default: each audit's own default).
    progress : callable(name, done), optional
        Called before (``done=False``) and after (``done=True``) each audit.
    workers, scheduler : optional
        Given to every audit that does per-image work through
        :func:`datakit.parallel.get_executor` (local processes, or a Dask
        scheduler address / ``"local-cluster"``).
    features : str, optional
        Feature spaces (:mod:`datakit.features`, comma-separated), given to every
        audit that takes ``features`` (an audit that uses one space takes the first).
    weights : str, optional
        A weights file on disk for the ``pretrained`` feature space, given to every
        audit that takes ``weights``; checked (exists) before any audit runs.
    spill_rows : int or None, default 50,000
        A per-image table of at least this many rows moves to a temporary
        Parquet file once its audit returns (:meth:`audits.base.AuditResult.spill`)
        and is read back when asked for, so that the results of a run do not
        all sit in memory together (at a million images they are about 150 MB
        an audit). None: every table stays in memory.

    Returns
    -------
    AuditRun

    Raises
    ------
    DatakitError
        Unknown audit name, option for an audit not selected, or unknown
        option; the message lists the valid values. An audit that raises while
        running is recorded as ``failed`` (with the error) instead.
    """
    from audits import AuditResult, get_audit

    if not datasets:
        raise DatakitError("No dataset given: pass one or more dataset directories.")
    selected = resolve_audits(names)
    options = {k: dict(v) for k, v in (options or {}).items()}
    names_in = {ds.name for ds in datasets}
    for key in (class_map or {}):
        sources = {str(s) for ds in datasets for s in _column(ds, "source").dropna().unique()}
        if key not in names_in and key not in sources:
            raise DatakitError(f"--map refers to unknown dataset {key!r}. Valid values are "
                               f"{{{', '.join(sorted(names_in | sources))}}}.")
    for audit in options:
        if audit not in selected:
            raise DatakitError(f"--option given for audit {audit!r}, which is not selected. "
                               f"Selected audits are {{{', '.join(selected)}}}.")
    if weights is not None:
        import os

        if not os.path.isfile(weights):
            raise DatakitError(f"--weights {weights}: no such file. Give a torchvision weights file on disk "
                               "(nothing is downloaded).")
    calls = {}
    for name in selected:
        fn = get_audit(name)
        named, any_kw = audit_options(fn)
        kwargs = dict(options.get(name, {}))
        unknown = [k for k in kwargs if k not in named]
        if unknown and not any_kw:
            raise DatakitError(f"Unknown option {unknown[0]!r} for audit {name!r}. "
                               f"Valid values are {{{', '.join(sorted(named))}}}.")
        glob = {"class_map": dict(class_map or {}) or None, "seed": seed, "group_by": group_by,
                "workers": workers, "scheduler": scheduler, "features": features, "weights": weights}
        for key in GLOBAL_OPTIONS:
            if key in named and key not in kwargs and glob[key] is not None:
                kwargs[key] = glob[key]
        calls[name] = (fn, kwargs)

    run = AuditRun(created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                   datasets=[_describe(ds) for ds in datasets],
                   options={n: json.loads(json.dumps(kw, default=str)) for n, (_, kw) in calls.items()})
    release_memory()  # what describing the inputs read (their ids, for the checksums), before the first audit
    spill = None
    for name, (fn, kwargs) in calls.items():
        if progress is not None:
            progress(name, False)
        t0, c0 = time.perf_counter(), time.process_time()
        try:
            result = fn(_views(datasets, getattr(fn, "manifest_columns", None)), **kwargs)
            if not isinstance(result, AuditResult):
                raise TypeError(f"audit {name!r} returned {type(result).__name__}, not AuditResult")
            status = "skipped" if result.skipped else "ok"
        except Exception as exc:  # one broken audit must not lose the others' results
            logger.error("audit %s failed: %s", name, exc, exc_info=logger.isEnabledFor(logging.DEBUG))
            result = AuditResult(name=name, skipped=f"failed: {type(exc).__name__}: {exc}",
                                 info={"error": str(exc), "traceback": traceback.format_exc()})
            status = "failed"
        seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
        if spill_rows is not None and (result.per_image_rows or 0) >= spill_rows:
            if spill is None:
                from audits.base import SpillFolder

                spill = SpillFolder()
            result.spill(spill, spill_rows)
        release_memory()  # the audit's freed working set back to the system before the next one starts
        result.info.setdefault("seconds", round(seconds, 3))
        result.info.setdefault("cpu_seconds", round(cpu, 3))
        run.results.append(result)
        run.status[name] = status
        run.seconds[name] = seconds
        run.cpu_seconds[name] = cpu
        if progress is not None:
            progress(name, True)
    return run
