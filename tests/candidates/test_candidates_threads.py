"""The thread executor added to datakit.parallel for I/O-bound downloads."""
from __future__ import annotations

import threading
import time

import pytest

from datakit.errors import ImageRejected
from datakit.parallel import SerialExecutor, ThreadExecutor, get_thread_executor


def _work(x):
    time.sleep(0.01 * (x % 3))          # finish out of order
    if x == 4:
        raise ImageRejected("too_small", "4 is too small")
    if x == 6:
        raise KeyError("boom")
    return x * 10


def test_results_in_input_order_with_errors_captured():
    with ThreadExecutor(4) as ex:
        progress = []
        results = list(ex.map(_work, range(10), progress=progress.append))
    assert [r.value for r in results if r.ok] == [x * 10 for x in range(10) if x not in (4, 6)]
    assert (results[4].reason, results[4].detail) == ("too_small", "4 is too small")
    assert results[6].reason == "error:KeyError"
    assert sum(progress) == 10


def test_concurrency_is_bounded_by_workers():
    active, peak, lock = [0], [0], threading.Lock()

    def slow(x):
        with lock:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
        time.sleep(0.02)
        with lock:
            active[0] -= 1
        return x

    with ThreadExecutor(3) as ex:
        assert [r.value for r in ex.map(slow, range(12))] == list(range(12))
    assert 1 < peak[0] <= 3


def test_get_thread_executor():
    assert isinstance(get_thread_executor(0), SerialExecutor)
    assert isinstance(get_thread_executor(1), SerialExecutor)
    ex = get_thread_executor(2)
    assert isinstance(ex, ThreadExecutor)
    ex.close()
    with pytest.raises(ValueError, match="workers must be >= 0"):
        get_thread_executor(-1)
