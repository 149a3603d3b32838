"""The Dask ``distributed`` backend of :mod:`datakit.parallel`.

``DaskExecutor`` maps a per-item function over batches on a Dask cluster with
the same contract as the local backends: results in input order, at most
``in_flight`` batches submitted at once (bounded memory however long the
input), an exception for one item captured as that item's
:class:`~datakit.parallel.base.ItemResult`, and a batch whose worker died sent
again to another worker. Each batch is scattered to a worker and its task
refers to it (data inside tasks stays in the client and scheduler on the
``distributed`` releases tested here), and the client keeps the batch until
its results are in, so a batch lost with its worker is sent again (up to
``retries`` times). A batch that still cannot run becomes one error result per
item, so the caller always receives exactly one result per input item.

Use it through :func:`datakit.parallel.get_executor`::

    get_executor(scheduler="local-cluster", workers=2)      # start a cluster here
    get_executor(scheduler="tcp://10.0.0.5:8786")           # join an existing one

A cluster started here binds 127.0.0.1 only (scheduler, workers, nannies) and
has no dashboard; ``close()`` shuts down what this executor started and only
disconnects from a cluster it joined.
"""
from __future__ import annotations

import logging
import traceback
import uuid
from collections import deque
from typing import Any, Callable, Iterable, Iterator, Sequence

from datakit.errors import DatakitError
from datakit.parallel.base import Executor, ItemResult, _batched, run_batch

__all__ = ["DaskExecutor", "LOCAL_CLUSTER"]

logger = logging.getLogger(__name__)

#: The ``scheduler`` value that starts a cluster on this machine.
LOCAL_CLUSTER = "local-cluster"


def _import_distributed():
    try:
        import distributed
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise DatakitError(
            f"The Dask backend needs the `distributed` package ({exc}). "
            "Install it with `pip install datakit[dask]`."
        ) from None
    return distributed


def _quiet_dask_logs() -> None:
    """Let Dask's own INFO chatter through only when the application logs at INFO or below.

    ``distributed`` sets its loggers to INFO by default, so a cluster start
    would print a screen of messages under the CLI's WARNING-level logging;
    ``datakit -v`` (INFO) still shows them.
    """
    root = logging.getLogger().getEffectiveLevel()
    dask_logger = logging.getLogger("distributed")
    if dask_logger.getEffectiveLevel() < root:
        dask_logger.setLevel(root)


class DaskExecutor(Executor):
    """Run per-item work on a Dask ``distributed`` cluster.

    Parameters
    ----------
    scheduler : str
        ``"tcp://HOST:PORT"`` to connect to a running scheduler, or
        ``"local-cluster"`` to start a ``LocalCluster`` on 127.0.0.1.
    workers : int, optional
        Worker processes of a local cluster (default 2, one thread each).
        Ignored, with a log message, when connecting to a running scheduler
        (its size is whatever was started there).
    in_flight_per_worker : int, default 2
        Batches submitted per worker before waiting for the oldest one; bounds
        the memory held by results and inputs on the client.
    retries : int, default 2
        How often a batch that failed as a whole is run again: by Dask on the
        same data, and by this executor with its data sent again (a batch
        whose worker died with its data). Per-item exceptions are captured by
        :func:`~datakit.parallel.run_batch` and are not retried.
    connect_timeout : float, default 30
        Seconds to wait for the scheduler (``tcp://``) or cluster start.

    Attributes
    ----------
    client : distributed.Client
    cluster : distributed.LocalCluster or None
        The cluster this executor started (None when it joined one).

    Raises
    ------
    DatakitError
        For a malformed scheduler address, or a scheduler that cannot be reached.
    """

    def __init__(self, scheduler: str, workers: int | None = None, *, in_flight_per_worker: int = 2,
                 retries: int = 2, connect_timeout: float = 30.0) -> None:
        if not isinstance(scheduler, str) or not scheduler:
            raise DatakitError(
                f"Invalid scheduler {scheduler!r}. Valid values are 'local-cluster' or a Dask "
                "scheduler address 'tcp://HOST:PORT'."
            )
        if workers is not None and (not isinstance(workers, int) or workers < 0):
            raise ValueError(f"workers must be an int >= 0 or None, got {workers!r}")
        if not isinstance(in_flight_per_worker, int) or in_flight_per_worker < 1:
            raise ValueError(f"in_flight_per_worker must be an int >= 1, got {in_flight_per_worker!r}")
        if not isinstance(retries, int) or retries < 0:
            raise ValueError(f"retries must be an int >= 0, got {retries!r}")
        distributed = _import_distributed()
        self.scheduler = scheduler
        self.retries = retries
        self.in_flight_per_worker = in_flight_per_worker
        self.cluster = None
        if scheduler == LOCAL_CLUSTER:
            n = 2 if workers in (None, 0) else workers
            _quiet_dask_logs()
            try:
                self.cluster = distributed.LocalCluster(
                    n_workers=n, threads_per_worker=1, processes=True, host="127.0.0.1",
                    scheduler_port=0, dashboard_address=None, protocol="tcp",
                    worker_dashboard_address=None, silence_logs=logging.WARNING,
                    # the scheduler's small HTTP endpoint (health, metrics) takes any free loopback port
                    scheduler_kwargs={"dashboard": False, "dashboard_address": "127.0.0.1:0"},
                )
                self.client = distributed.Client(self.cluster, timeout=connect_timeout)
            except Exception:
                if self.cluster is not None:
                    self.cluster.close()
                raise
            logger.info("started a Dask LocalCluster with %d workers at %s", n, self.cluster.scheduler_address)
        elif scheduler.startswith("tcp://"):
            hostport = scheduler[len("tcp://"):]
            host, _, port = hostport.rpartition(":")
            if not host or not port.isdigit():
                raise DatakitError(
                    f"Invalid scheduler address {scheduler!r}: expected 'tcp://HOST:PORT', e.g. 'tcp://127.0.0.1:8786'."
                )
            if workers not in (None, 0):
                logger.info("workers=%s ignored: the cluster at %s has its own workers", workers, scheduler)
            try:
                self.client = distributed.Client(scheduler, timeout=connect_timeout)
            except OSError as exc:
                raise DatakitError(
                    f"Cannot reach the Dask scheduler at {scheduler} ({exc}). Start one with "
                    "`dask scheduler --host 127.0.0.1` and `dask worker tcp://...`, or use "
                    "`--scheduler local-cluster`."
                ) from None
        else:
            raise DatakitError(
                f"Invalid scheduler {scheduler!r}. Valid values are 'local-cluster' or a Dask "
                "scheduler address 'tcp://HOST:PORT'."
            )

    @property
    def workers(self) -> int:  # type: ignore[override]
        """Number of workers the scheduler knows now (at least 1)."""
        try:
            return max(1, len(self.client.scheduler_info()["workers"]))
        except Exception:  # a closed client has no scheduler info
            return 1

    @property
    def address(self) -> str:
        """The scheduler address (``tcp://127.0.0.1:PORT`` for a local cluster)."""
        return self.client.scheduler.address

    def _wait_for_workers(self) -> None:
        if self.cluster is None:
            try:
                self.client.wait_for_workers(1, timeout=60)
            except TimeoutError:
                raise DatakitError(
                    f"The Dask scheduler at {self.scheduler} has no workers. Start some with "
                    f"`dask worker {self.scheduler}`."
                ) from None

    def _submit(self, fn: Callable[[Any], Any], batch: list, key: str):
        """Send ``batch`` to a worker (``scatter``) and run it there; returns (future, data future) or the error.

        The batch travels as scattered data, not inside the task: on the
        ``distributed`` releases tested here a task's embedded arguments stay in
        the client and scheduler after the task is released (about 3 KB an
        image, dask/distributed#8859), while scattered data is freed with its
        future.
        """
        try:
            [data] = self.client.scatter([batch], hash=False)
        except Exception as exc:  # e.g. an item that cannot be pickled
            return exc
        return self.client.submit(run_batch, fn, data, pure=False, retries=self.retries, key=key), data

    def _collect(self, fn: Callable[[Any], Any], batch: list, key: str, sent) -> list[ItemResult]:
        """The results of one batch, in order.

        A batch that failed as a whole (its worker died with its data, or it
        could not be sent) is sent again, up to ``retries`` times; one that still
        fails becomes one error result per item.
        """
        exc: Exception | None = None  # the last failure
        for attempt in range(self.retries + 1):
            if attempt:
                logger.info("batch %s failed as a whole (%s: %s); sending it again (%d of %d)", key,
                            type(exc).__name__, str(exc)[:200], attempt, self.retries)
                sent = self._submit(fn, batch, f"{key}-retry{attempt}")
            if isinstance(sent, Exception):
                exc = sent
                continue
            future, data = sent
            try:
                return future.result()
            except Exception as err:  # the batch itself failed (e.g. KilledWorker, its data lost with a worker)
                exc = err
            finally:
                future.release()
                data.release()
        detail = "".join(traceback.format_exception_only(type(exc), exc)).strip()[:500]
        logger.warning("a batch of %d items failed on the cluster: %s", len(batch), detail)
        return [ItemResult(reason=f"error:{type(exc).__name__}", detail=detail) for _ in range(len(batch))]

    def map_batches(self, fn: Callable[[Any], Any], items: Iterable, batch_size: int = 256,
                    progress: Callable[[int], None] | None = None) -> Iterator[Sequence[ItemResult]]:
        """Apply ``fn`` to every item on the cluster; yield each batch's results in input order.

        Parameters
        ----------
        fn : callable
            Picklable (cloudpickle) function of one item.
        items : iterable
            Consumed lazily: only the batches in flight are held in memory.
        batch_size : int, default 256
            Items per Dask task.
        progress : callable, optional
            Called with the number of items of each batch as it is yielded.

        Yields
        ------
        sequence of ItemResult
            One a batch: exactly one result per input item, in input order (:meth:`map` flattens them).
        """
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
        self._wait_for_workers()
        limit = self.in_flight_per_worker * self.workers
        tag = uuid.uuid4().hex[:8]
        pending: deque = deque()
        for i, batch in enumerate(_batched(items, batch_size)):
            key = f"datakit-batch-{tag}-{i}"
            pending.append((batch, key, self._submit(fn, batch, key)))  # the batch is kept until its results are in
            del batch
            while len(pending) >= limit:
                results = self._collect(fn, *pending.popleft())
                if progress:
                    progress(len(results))
                yield results
        while pending:
            results = self._collect(fn, *pending.popleft())
            if progress:
                progress(len(results))
            yield results

    def close(self) -> None:
        """Disconnect; shut down the cluster if this executor started it."""
        client, self.client = getattr(self, "client", None), None
        if client is not None:
            try:
                client.close()
            except Exception as exc:  # closing must not mask the error that led here
                logger.debug("closing the Dask client failed: %s", exc)
        cluster, self.cluster = self.cluster, None
        if cluster is not None:
            # a worker slow to exit (a busy machine) is killed after 4 s: expected when we stop our own cluster
            nanny = logging.getLogger("distributed.nanny")
            level = nanny.level
            nanny.setLevel(max(level, logging.ERROR))
            try:
                cluster.close()
            except Exception as exc:
                logger.debug("closing the Dask cluster failed: %s", exc)
            finally:
                nanny.setLevel(level)

    def __repr__(self) -> str:
        where = self.address if self.client is not None else "closed"
        return f"DaskExecutor({self.scheduler!r}, address={where!r})"
