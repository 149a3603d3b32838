"""One executor interface for per-item work: in-process, local processes, Dask.

Every stage that does per-image work (decode, validate, hash, normalize, store)
maps a function over items through :func:`get_executor` and never keeps a pool
of its own. Results come back in input order; an exception raised for one item
is captured as that item's error (``ImageRejected`` keeps its reason), never a
lost batch. At most ``2 * workers`` batches are in flight, so memory is bounded
however long the input is. A worker that dies (killed, out of memory) loses no
item: local processes rerun the lost batches in a fresh pool, and the Dask
backend (:mod:`datakit.parallel.dask_backend`, ``scheduler="local-cluster"`` or
``"tcp://HOST:PORT"``) has the scheduler recompute them on another worker.

One module a backend: :mod:`~datakit.parallel.base` (the interface),
:mod:`~datakit.parallel.serial`, :mod:`~datakit.parallel.processes`,
:mod:`~datakit.parallel.threads` and :mod:`~datakit.parallel.dask_backend`
(imported only when a scheduler is given). The backends import
:mod:`~datakit.parallel.base` (and the serial one); none imports this package back, so there is no cycle.
"""
from __future__ import annotations

import os

from datakit.errors import DatakitError
from datakit.parallel.base import Executor, ItemResult, run_batch
from datakit.parallel.processes import ProcessExecutor
from datakit.parallel.serial import SerialExecutor
from datakit.parallel.threads import ThreadExecutor, get_thread_executor

__all__ = ["check_scheduler", "ItemResult", "Executor", "SerialExecutor", "ProcessExecutor", "ThreadExecutor",
           "get_executor", "get_thread_executor", "run_batch"]


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
            from datakit.parallel.dask_backend import DaskExecutor
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
