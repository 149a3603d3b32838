"""The Dask backend of the executor interface: order, errors, bounds, loopback, worker loss."""
from __future__ import annotations

import os
import signal
import time

import pytest

distributed = pytest.importorskip("distributed", reason="the Dask backend needs `distributed` (pip install datakit[dask])")
psutil = pytest.importorskip("psutil", reason="psutil (a dependency of distributed) lists the cluster's sockets")

from datakit.errors import DatakitError  # noqa: E402
from datakit.parallel import ItemResult, SerialExecutor, get_executor  # noqa: E402
from datakit.parallel.dask_backend import DaskExecutor  # noqa: E402


def _double_or_fail(x: int) -> int:
    if x % 7 == 3:
        raise ValueError(f"bad item {x}")
    return 2 * x


def _slow_pid(x: int) -> tuple[int, int]:
    time.sleep(0.02)
    return x, os.getpid()


def _raise_on_unpickle():
    raise RuntimeError("this item cannot be unpickled on a worker")


class _Unpicklable:
    """Pickles fine, fails to unpickle: a batch-level failure on the worker."""

    def __reduce__(self):
        return (_raise_on_unpickle, ())


@pytest.fixture(scope="module")
def dask_executor():
    ex = get_executor(workers=2, scheduler="local-cluster")
    yield ex
    ex.close()


def test_get_executor_local_cluster_has_two_loopback_workers(dask_executor):
    assert isinstance(dask_executor, DaskExecutor)
    assert dask_executor.workers == 2
    assert dask_executor.address.startswith("tcp://127.0.0.1:")
    me = psutil.Process()
    listening = [c.laddr for p in [me, *me.children(recursive=True)]
                 for c in p.net_connections(kind="inet") if c.status == psutil.CONN_LISTEN]
    assert listening, "the cluster should listen on some port"
    assert {addr.ip for addr in listening} == {"127.0.0.1"}


def test_map_matches_serial_in_order_with_item_errors(dask_executor):
    items = list(range(50))
    seen = []
    got = list(dask_executor.map(_double_or_fail, items, batch_size=4, progress=seen.append))
    want = list(SerialExecutor().map(_double_or_fail, items, batch_size=4))
    assert [r.value for r in got] == [r.value for r in want]
    assert [r.reason for r in got] == [r.reason for r in want]
    bad = [i for i, r in enumerate(got) if not r.ok]
    assert bad == [i for i in items if i % 7 == 3]
    assert got[3].reason == "error:ValueError" and "bad item 3" in got[3].detail
    assert sum(seen) == len(items) and len(seen) == 13  # one call per batch of 4


def test_map_keeps_bounded_batches_in_flight(dask_executor):
    pulled = []

    def items():
        for i in range(400):
            pulled.append(i)
            yield i

    results = dask_executor.map(_double_or_fail, items(), batch_size=10)
    first = next(results)
    assert first.value == 0
    # at most 2 batches per worker are submitted before the first result is taken
    assert len(pulled) <= 2 * 2 * 10 + 1
    rest = list(results)
    assert len(rest) == 399


def test_batch_that_cannot_run_becomes_one_error_per_item(dask_executor):
    items = [1, 2, _Unpicklable(), 4, 5, 6]
    got = list(dask_executor.map(abs, items, batch_size=3))
    assert len(got) == 6
    assert [r.value for r in got[3:]] == [4, 5, 6]
    assert all(not r.ok for r in got[:3])
    assert all(r.reason.startswith("error:") for r in got[:3])


def test_connect_to_running_scheduler_and_close_leaves_it_running(dask_executor):
    with get_executor(scheduler=dask_executor.address) as joined:
        assert joined.cluster is None
        got = [r.value for r in joined.map(abs, [-3, -2, -1], batch_size=2)]
    assert got == [3, 2, 1]
    # the cluster started by the fixture still works after the joined client closed
    assert [r.value for r in dask_executor.map(abs, [-5], batch_size=1)] == [5]


@pytest.mark.parametrize("scheduler, match", [
    ("local", r"Invalid scheduler 'local'\. Valid values are 'local-cluster' or .*tcp://HOST:PORT"),
    ("tcp://nohostport", r"Invalid scheduler address 'tcp://nohostport'"),
    ("", r"Invalid scheduler ''"),
])
def test_invalid_scheduler_is_a_clean_error(scheduler, match):
    with pytest.raises(DatakitError, match=match):
        DaskExecutor(scheduler)


def test_unreachable_scheduler_says_what_to_do():
    # port 1 on loopback: nothing listens there
    with pytest.raises(DatakitError, match=r"Cannot reach the Dask scheduler at tcp://127\.0\.0\.1:1 .*local-cluster"):
        DaskExecutor("tcp://127.0.0.1:1", connect_timeout=2)


@pytest.mark.parametrize("kwargs, match", [
    ({"workers": -1}, r"workers must be an int >= 0"),
    ({"in_flight_per_worker": 0}, r"in_flight_per_worker must be an int >= 1"),
    ({"retries": -1}, r"retries must be an int >= 0"),
])
def test_invalid_options(kwargs, match):
    with pytest.raises(ValueError, match=match):
        DaskExecutor("local-cluster", **kwargs)


def test_invalid_batch_size(dask_executor):
    with pytest.raises(ValueError, match=r"batch_size must be an int >= 1, got 0"):
        list(dask_executor.map(abs, [1], batch_size=0))


def test_killed_worker_loses_and_duplicates_nothing(dask_executor, caplog):
    """Kill a busy worker process after the first batch comes back: every item still comes back once
    (the batches whose data died with it are sent again)."""
    client = dask_executor.client
    client.wait_for_workers(2, timeout=60)
    pids = client.run(os.getpid)  # worker address -> pid
    killed = {}

    def progress(n: int) -> None:
        if killed:
            return
        busy = {addr: keys for addr, keys in client.processing().items() if keys}
        addr = sorted(busy)[0]  # a worker with batches running or queued on it
        killed["pid"], killed["lost"] = pids[addr], list(busy[addr])
        os.kill(pids[addr], signal.SIGKILL)

    items = list(range(240))
    with caplog.at_level("INFO", logger="datakit.parallel.dask_backend"):
        got = list(dask_executor.map(_slow_pid, items, batch_size=8, progress=progress))
    assert any("sending it again" in r.getMessage() for r in caplog.records)
    assert killed["lost"], "the killed worker had batches in progress"
    assert not psutil.pid_exists(killed["pid"]) or psutil.Process(killed["pid"]).status() == psutil.STATUS_ZOMBIE
    assert all(isinstance(r, ItemResult) and r.ok for r in got)
    assert [r.value[0] for r in got] == items  # none lost, none duplicated, in order
    # the batches that were on the killed worker were recomputed elsewhere
    assert killed["pid"] not in {r.value[1] for r in got[-8:]}


def _thumb(x):
    return bytes(1024)


def _rss_mb() -> float:
    return psutil.Process().memory_info().rss / 2**20


def test_client_memory_does_not_grow_with_the_batches_sent(dask_executor):
    """Batches travel as scattered data, freed with their futures: 24,000 items of 784 bytes (a build's
    pixels) leave the client and in-process scheduler about where they were after the first 4,000.
    (Inside tasks they stayed behind: about 3 KB an item, 60 MB here, dask/distributed#8859.)"""
    import numpy as np

    marks = {}
    items = (np.zeros(784, np.uint8) for _ in range(24_000))
    for k, result in enumerate(dask_executor.map(_thumb, items, batch_size=256), start=1):
        assert result.ok
        if k in (4_000, 24_000):
            marks[k] = _rss_mb()
    assert marks[24_000] - marks[4_000] < 20, marks
