"""One executor interface for per-item work: in-process, local processes, (Dask).

Every stage that does per-image work (decode, validate, hash, normalize, store)
maps a function over items through :func:`get_executor` and never keeps a pool
of its own. Results come back in input order; an exception raised for one item
is captured as that item's error (``ImageRejected`` keeps its reason), never a
lost batch. At most ``2 * workers`` batches are in flight, so memory is bounded
however long the input is.
"""
from __future__ import annotations

import itertools
import os
import traceback
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator

from datakit.errors import DatakitError, ImageRejected

__all__ = ["ItemResult", "Executor", "SerialExecutor", "ProcessExecutor", "get_executor", "run_batch"]


@dataclass
class ItemResult:
    """The outcome of one item: ``value`` or an error ``reason`` (+ ``detail``)."""

    value: Any = None
    reason: str | None = None
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.reason is None


def run_batch(fn: Callable, batch: list) -> list[ItemResult]:
    """Apply ``fn`` to each item of ``batch``, capturing per-item errors."""
    out = []
    for item in batch:
        try:
            out.append(ItemResult(value=fn(item)))
        except ImageRejected as exc:
            out.append(ItemResult(reason=exc.reason, detail=exc.detail))
        except Exception as exc:  # recorded as a rejected row, never lost
            detail = "".join(traceback.format_exception_only(type(exc), exc)).strip()
            out.append(ItemResult(reason=f"error:{type(exc).__name__}", detail=detail[:500]))
    return out


def _batched(items: Iterable, size: int) -> Iterator[list]:
    it = iter(items)
    while batch := list(itertools.islice(it, size)):
        yield batch


class Executor:
    """Base class: ``map(fn, items)`` yields one :class:`ItemResult` per item, in order."""

    workers: int = 1

    def map(self, fn: Callable, items: Iterable, batch_size: int = 256,
            progress: Callable[[int], None] | None = None) -> Iterator[ItemResult]:
        raise NotImplementedError

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class SerialExecutor(Executor):
    """Runs in the calling process (``workers=0`` or 1): easiest to debug."""

    def map(self, fn, items, batch_size=256, progress=None):
        for batch in _batched(items, batch_size):
            results = run_batch(fn, batch)
            if progress:
                progress(len(results))
            yield from results


class ProcessExecutor(Executor):
    """Local worker processes (the default backend)."""

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self._pool = ProcessPoolExecutor(max_workers=workers)

    def map(self, fn, items, batch_size=256, progress=None):
        pending = []
        batches = _batched(items, batch_size)
        limit = 2 * self.workers
        for batch in batches:
            pending.append(self._pool.submit(run_batch, fn, batch))
            if len(pending) >= limit:
                results = pending.pop(0).result()
                if progress:
                    progress(len(results))
                yield from results
        for fut in pending:
            results = fut.result()
            if progress:
                progress(len(results))
            yield from results

    def close(self) -> None:
        self._pool.shutdown(cancel_futures=True)


def get_executor(workers: int | None = None, scheduler: str | None = None) -> Executor:
    """Choose a backend.

    Parameters
    ----------
    workers : int, optional
        Number of local worker processes; ``None`` means ``os.cpu_count()``,
        0 or 1 means run in this process.
    scheduler : str, optional
        ``None`` for local processes; a Dask scheduler address
        (``tcp://HOST:PORT``) or ``"local-cluster"`` for Dask ``distributed``.
    """
    if scheduler is not None:
        try:
            from datakit.parallel_dask import DaskExecutor  # added by the scale-out work
        except ImportError as exc:
            raise DatakitError(f"The Dask backend is not available ({exc}). Install it with `pip install datakit[dask]`.") from None
        return DaskExecutor(scheduler, workers=workers)
    if workers is None:
        workers = os.cpu_count() or 1
    if workers < 0:
        raise ValueError(f"workers must be >= 0, got {workers}")
    if workers <= 1:
        return SerialExecutor()
    return ProcessExecutor(workers)
