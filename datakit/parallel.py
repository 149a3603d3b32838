"""One executor interface for per-item work: in-process, local processes, Dask.

Every stage that does per-image work (decode, validate, hash, normalize, store)
maps a function over items through :func:`get_executor` and never keeps a pool
of its own. Results come back in input order; an exception raised for one item
is captured as that item's error (``ImageRejected`` keeps its reason), never a
lost batch. At most ``2 * workers`` batches are in flight, so memory is bounded
however long the input is. A worker that dies (killed, out of memory) loses no
item: local processes rerun the lost batches in a fresh pool, and the Dask
backend (:mod:`datakit.parallel_dask`, ``scheduler="local-cluster"`` or
``"tcp://HOST:PORT"``) has the scheduler recompute them on another worker.
"""
from __future__ import annotations

import itertools
import logging
import os
import traceback
from collections import deque
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator

from datakit.errors import DatakitError, ImageRejected

logger = logging.getLogger(__name__)

__all__ = ["check_scheduler", "ItemResult", "Executor", "SerialExecutor", "ProcessExecutor", "get_executor", "run_batch"]


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
    """Local worker processes (the default backend).

    A worker process that dies (killed, out of memory, a crash in a C
    extension) breaks a ``ProcessPoolExecutor`` and every batch in it. The
    batches lost that way are run again, one at a time, in a fresh pool; a
    batch that kills its worker again is run item by item, and the item that
    kills its worker becomes an ``error:WorkerDied`` result. Nothing is lost
    or duplicated, and the results stay in input order.
    """

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self._pool = ProcessPoolExecutor(max_workers=workers)
        #: how many times a dead worker broke the pool (for logs and tests)
        self.restarts = 0

    def _restart(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._pool = ProcessPoolExecutor(max_workers=self.workers)
        self.restarts += 1

    def _run_alone(self, fn, batch: list) -> list[ItemResult] | None:
        """Run one batch in the pool by itself; None (and a fresh pool) if its worker died."""
        try:
            return self._pool.submit(run_batch, fn, batch).result()
        except BrokenProcessPool:
            self._restart()
            return None

    def _recover(self, fn, entries: list[list]) -> None:
        """Rerun the batches of ``entries`` (``[future, batch, results]``) lost with a dead worker."""
        lost = 0
        for entry in entries:
            fut = entry[0]
            if entry[2] is None and fut.done() and not fut.cancelled() and fut.exception() is None:
                entry[2] = fut.result()  # finished before the pool broke
            elif entry[2] is None:
                lost += 1
        logger.warning("a worker process died; rerunning %d lost batch(es) one at a time", lost)
        self._restart()
        for entry in entries:
            if entry[2] is not None:
                continue
            results = self._run_alone(fn, entry[1])
            if results is None:  # this batch kills its worker: find the item
                results = []
                for item in entry[1]:
                    one = self._run_alone(fn, [item])
                    results.extend(one if one is not None else [ItemResult(
                        reason="error:WorkerDied", detail="the worker process died while processing this item")])
            entry[2] = results

    def map(self, fn, items, batch_size=256, progress=None):
        pending: deque[list] = deque()  # [future, batch, results or None], in input order
        limit = 2 * self.workers

        def take() -> list[ItemResult]:
            entry = pending[0]
            if entry[2] is None:
                try:
                    entry[2] = entry[0].result()
                except BrokenProcessPool:
                    self._recover(fn, list(pending))
            pending.popleft()
            if progress:
                progress(len(entry[2]))
            return entry[2]

        for batch in _batched(items, batch_size):
            try:
                fut = self._pool.submit(run_batch, fn, batch)
            except BrokenProcessPool:  # broke between two results: recover, then submit
                self._recover(fn, list(pending))
                fut = self._pool.submit(run_batch, fn, batch)
            pending.append([fut, batch, None])
            while len(pending) >= limit:
                yield from take()
        while pending:
            yield from take()

    def close(self) -> None:
        self._pool.shutdown(cancel_futures=True)


def check_scheduler(scheduler: str | None) -> None:
    """Check the form of a scheduler address before any work starts.

    Raises
    ------
    DatakitError
        Unless ``scheduler`` is None, ``"local-cluster"`` or ``tcp://HOST:PORT``.
    """
    if scheduler is None or scheduler == "local-cluster":
        return
    host, _, port = str(scheduler).removeprefix("tcp://").rpartition(":")
    if not str(scheduler).startswith("tcp://") or not host or not port.isdigit():
        raise DatakitError(f"Invalid scheduler {scheduler!r}. Valid values are 'local-cluster' or a Dask "
                           "scheduler address 'tcp://HOST:PORT' (e.g. tcp://127.0.0.1:8786).")


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


class ThreadExecutor(Executor):
    """Threads in this process, for I/O-bound work (downloads, API calls).

    Same contract as the other executors: one :class:`ItemResult` per item,
    in input order, errors captured per item. Items are submitted one by one
    (a slow download does not hold up a whole batch) with at most
    ``4 * workers`` in flight, so memory stays bounded.
    """

    def __init__(self, workers: int) -> None:
        from concurrent.futures import ThreadPoolExecutor

        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        self.workers = workers
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="datakit-io")

    def map(self, fn, items, batch_size=256, progress=None):
        from collections import deque as _deque

        pending = _deque()
        limit = 4 * self.workers
        for item in items:
            pending.append(self._pool.submit(run_batch, fn, [item]))
            while len(pending) >= limit:
                results = pending.popleft().result()
                if progress:
                    progress(len(results))
                yield from results
        while pending:
            results = pending.popleft().result()
            if progress:
                progress(len(results))
            yield from results

    def close(self) -> None:
        self._pool.shutdown(cancel_futures=True)


def get_thread_executor(workers: int = 8) -> Executor:
    """A :class:`ThreadExecutor` for I/O-bound stages (``workers`` <= 1: run serially)."""
    if workers < 0:
        raise ValueError(f"workers must be >= 0, got {workers}")
    return SerialExecutor() if workers <= 1 else ThreadExecutor(workers)


__all__ += ["ThreadExecutor", "get_thread_executor"]
