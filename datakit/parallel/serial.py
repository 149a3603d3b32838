"""The in-process backend (``workers=0`` or 1)."""
from __future__ import annotations

from datakit.parallel.base import Executor, _batched, run_batch

__all__ = ["SerialExecutor"]


class SerialExecutor(Executor):
    """Runs in the calling process (``workers=0`` or 1): easiest to debug."""

    def map_batches(self, fn, items, batch_size=256, progress=None):
        for batch in _batched(items, batch_size):
            results = run_batch(fn, batch)
            if progress:
                progress(len(results))
            yield results

