"""The one result shape every audit returns, and the audit registry."""
from __future__ import annotations

import importlib
import itertools
import logging
import os
import pkgutil
import shutil
import tempfile
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import pandas as pd

from datakit.registry import Registry

logger = logging.getLogger(__name__)

__all__ = ["AuditResult", "AUDITS", "register_audit", "get_audit", "list_audits", "skipped", "SpillFolder"]

#: name -> audit function ``fn(datasets: Sequence[datakit.store.Dataset], **options) -> AuditResult``
AUDITS: Registry[Callable[..., "AuditResult"]] = Registry("audit")


class SpillFolder:
    """A temporary folder for per-image tables kept on disk, removed once nothing refers to it.

    :func:`datakit.report.run_audits` makes one per run and moves each large
    per-image table into it (:meth:`AuditResult.spill`); every spilled table
    holds the folder, so the files live exactly as long as some result can
    still read them (and are removed at exit at the latest).
    """

    def __init__(self, dir: str | os.PathLike | None = None) -> None:
        self.path = Path(tempfile.mkdtemp(prefix="datakit-audit-", dir=dir))
        self._names = itertools.count()
        self._cleanup = weakref.finalize(self, shutil.rmtree, str(self.path), True)

    def new_file(self, name: str) -> Path:
        return self.path / f"{next(self._names):03d}-{name}.parquet"


#: rows converted to Arrow and written at a time when a table is spilled
SPILL_SLICE = 65536


def _write_slices(frame: pd.DataFrame, path: Path) -> None:
    """``frame`` as Parquet, ``SPILL_SLICE`` rows at a time (never a whole Arrow copy of it in memory).

    A private temporary file: no fsync. The index is not stored: only a
    default ``RangeIndex`` is spilled (:meth:`AuditResult.spill` checks).
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    writer = None
    try:
        for lo in range(0, max(len(frame), 1), SPILL_SLICE):
            table = pa.Table.from_pandas(frame.iloc[lo:lo + SPILL_SLICE], preserve_index=False)
            if writer is None:
                writer = pq.ParquetWriter(path, table.schema)
            writer.write_table(table)
            del table
    finally:
        if writer is not None:
            writer.close()


def _rebuild(frame):
    return frame


class _SpilledFrame:
    """A per-image table written to Parquet; read back whole on each access."""

    def __init__(self, frame: pd.DataFrame, folder: SpillFolder, name: str) -> None:
        self.folder = folder  # keeps the files alive
        self.path = folder.new_file(name)
        self.rows = len(frame)
        self._last: weakref.ref | None = None
        _write_slices(frame, self.path)

    def gives_back(self, frame: pd.DataFrame) -> bool:
        """Whether the file's first row group reads back as the first rows of ``frame``, dtypes included."""
        import pyarrow.parquet as pq

        pf = pq.ParquetFile(self.path)
        head = pf.read_row_group(0).to_pandas() if pf.num_row_groups else pd.read_parquet(self.path)
        want = frame.iloc[:len(head)]
        return (head.dtypes.equals(frame.dtypes) and list(head.columns) == list(frame.columns)
                and head.reset_index(drop=True).equals(want.reset_index(drop=True)))

    def load(self) -> pd.DataFrame:
        frame = self._last() if self._last is not None else None
        if frame is None:  # nobody holds the last copy read: read it again
            frame = pd.read_parquet(self.path)
            self._last = weakref.ref(frame)
        return frame

    def __reduce__(self):  # pickled (a result sent to another process): the table itself
        return _rebuild, (self.load(),)


class _PerImageField:
    """The ``per_image`` attribute: a DataFrame, or a table spilled to disk and read back when asked for."""

    def __set_name__(self, owner, name: str) -> None:
        self.slot = "_" + name

    def __get__(self, obj, objtype=None):
        if obj is None:
            return None  # the dataclass field's default
        value = obj.__dict__.get(self.slot)
        return value.load() if isinstance(value, _SpilledFrame) else value

    def __set__(self, obj, value) -> None:
        obj.__dict__[self.slot] = value


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
        After :meth:`spill` it lives in a Parquet file and each access reads
        it back (the same object while someone holds it), so that a run's
        results do not hold every audit's table in memory at once.
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
    per_image: pd.DataFrame | None = _PerImageField()
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    figures: dict[str, bytes] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)
    skipped: str | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def per_image_rows(self) -> int | None:
        """Rows of ``per_image`` (None when there is none), without reading a spilled table back."""
        value = self.__dict__.get("_per_image")
        if isinstance(value, _SpilledFrame):
            return value.rows
        return None if value is None else len(value)

    @property
    def spilled(self) -> bool:
        """Whether ``per_image`` lives on disk (see :meth:`spill`)."""
        return isinstance(self.__dict__.get("_per_image"), _SpilledFrame)

    def spill(self, folder: SpillFolder, min_rows: int = 0) -> bool:
        """Move ``per_image`` to a Parquet file in ``folder`` when it has at least ``min_rows`` rows.

        Returns whether it did. Reading ``per_image`` afterwards gives an equal
        DataFrame (dtypes included, as Parquet keeps them).
        """
        value = self.__dict__.get("_per_image")
        if not isinstance(value, pd.DataFrame) or len(value) < min_rows:
            return False
        if not value.index.equals(pd.RangeIndex(len(value))):
            return False  # the file keeps no index: only the default one comes back
        try:
            spilled = _SpilledFrame(value, folder, self.name)
        except (TypeError, ValueError, ImportError, OSError) as exc:  # a column Parquet cannot hold: keep it here
            logger.debug("per-image table of %s stays in memory: %s", self.name, exc)
            return False
        if not spilled.gives_back(value):
            return False  # Parquet would not give the same table back (a dtype it does not keep)
        self.__dict__["_per_image"] = spilled
        return True


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
