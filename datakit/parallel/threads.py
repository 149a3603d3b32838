"""Threads in this process, for I/O-bound stages (downloads, API calls)."""
from __future__ import annotations

from collections import deque
from concurrent.futures import ThreadPoolExecutor

from datakit.parallel.base import Executor, run_batch
from datakit.parallel.serial import SerialExecutor

__all__ = ["ThreadExecutor", "get_thread_executor"]


class ThreadExecutor(Executor):
    """Threads in this process, for I/O-bound work (downloads, API calls).

    Same contract as the other executors: one :class:`ItemResult` per item,
    in input order, errors captured per item. Items are submitted one by one
    (a slow download does not hold up a whole batch) with at most
    ``4 * workers`` in flight, so memory stays bounded.
    """

    def __init__(self, workers: int) -> None:
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        self.workers = workers
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="datakit-io")

    def map_batches(self, fn, items, batch_size=256, progress=None):  # one item a "batch"
        pending = deque()
        limit = 4 * self.workers
        for item in items:
            pending.append(self._pool.submit(run_batch, fn, [item]))
            while len(pending) >= limit:
                results = pending.popleft().result()
                if progress:
                    progress(len(results))
                yield results
        while pending:
            results = pending.popleft().result()
            if progress:
                progress(len(results))
            yield results

    def close(self) -> None:
        self._pool.shutdown(cancel_futures=True)


def get_thread_executor(workers: int = 8) -> Executor:
    """A :class:`ThreadExecutor` for I/O-bound stages (``workers`` <= 1: run serially)."""
    if workers < 0:
        raise ValueError(f"workers must be >= 0, got {workers}")
    return SerialExecutor() if workers <= 1 else ThreadExecutor(workers)
