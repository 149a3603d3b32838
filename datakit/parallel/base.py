"""The executor interface every backend implements, and the per-item error capture they share."""
from __future__ import annotations

import itertools
import traceback
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, Sequence

from datakit.errors import ImageRejected

__all__ = ["ItemResult", "Executor", "error_result", "run_batch", "_batched"]


@dataclass
class ItemResult:
    """The outcome of one item: ``value`` or an error ``reason`` (+ ``detail``)."""

    value: Any = None
    reason: str | None = None
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.reason is None


def error_result(exc: BaseException) -> ItemResult:
    """The result recorded for an item whose function raised ``exc`` (other than ``ImageRejected``)."""
    detail = "".join(traceback.format_exception_only(type(exc), exc)).strip()
    return ItemResult(reason=f"error:{type(exc).__name__}", detail=detail[:500])


def run_batch(fn: Callable, batch: list) -> list[ItemResult]:
    """Apply ``fn`` to each item of ``batch``, capturing per-item errors.

    A ``fn`` with a ``run_batch(items)`` method (for example the build's
    :class:`~datakit.build.process.BatchWork`, which vectorizes its
    normalizer) is given the whole batch and returns one :class:`ItemResult`
    per item itself.
    """
    whole = getattr(fn, "run_batch", None)
    if whole is not None:
        results = whole(batch)
        if len(results) != len(batch):
            raise RuntimeError(f"{fn!r}.run_batch returned {len(results)} results for {len(batch)} items")
        return results
    out = []
    for item in batch:
        try:
            out.append(ItemResult(value=fn(item)))
        except ImageRejected as exc:
            out.append(ItemResult(reason=exc.reason, detail=exc.detail))
        except Exception as exc:  # recorded as a rejected row, never lost
            out.append(error_result(exc))
    return out


def _batched(items: Iterable, size: int) -> Iterator[list]:
    it = iter(items)
    while batch := list(itertools.islice(it, size)):
        yield batch


class Executor:
    """Base class: ``map(fn, items)`` yields one :class:`ItemResult` per item, in order.

    A backend implements :meth:`map_batches` (the results of each batch, in
    order); :meth:`map` flattens them.
    """

    workers: int = 1

    def map_batches(self, fn: Callable, items: Iterable, batch_size: int = 256,
                    progress: Callable[[int], None] | None = None) -> Iterator[Sequence[ItemResult]]:
        """Yield the results of each batch of ``items``, in input order: a sequence of one :class:`ItemResult` per item.

        Whatever :func:`run_batch` returned for the batch (a ``fn`` with its own
        ``run_batch`` may return a sequence of its own), or a list when the
        backend had to rebuild the results (a batch rerun item by item).
        ``progress`` is called with the number of items of each batch as it is yielded.
        """
        raise NotImplementedError

    def map(self, fn: Callable, items: Iterable, batch_size: int = 256,
            progress: Callable[[int], None] | None = None) -> Iterator[ItemResult]:
        for results in self.map_batches(fn, items, batch_size=batch_size, progress=progress):
            yield from results

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

