"""Local worker processes: the default backend, which survives a worker that dies."""
from __future__ import annotations

import logging
from collections import deque
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from datakit.parallel.base import Executor, ItemResult, _batched, run_batch

__all__ = ["ProcessExecutor"]

logger = logging.getLogger(__name__)


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

    def map_batches(self, fn, items, batch_size=256, progress=None):
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
                yield take()
        while pending:
            yield take()

    def close(self) -> None:
        self._pool.shutdown(cancel_futures=True)

