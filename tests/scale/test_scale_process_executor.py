"""The local-process backend survives a dead worker: nothing lost, nothing duplicated."""
from __future__ import annotations

import os
import signal
import time

from datakit.parallel import ProcessExecutor, SerialExecutor, get_executor

POISON = 13


def _pid_after_nap(x: int) -> tuple[int, int]:
    time.sleep(0.01)
    return x, os.getpid()


def _dies_on_poison(x: int) -> int:
    if x == POISON:
        os._exit(3)  # a hard crash, as a segfault or the OOM killer would cause
    return x * 10


def test_killed_worker_process_loses_and_duplicates_nothing():
    killed = []
    with get_executor(workers=2) as ex:
        assert isinstance(ex, ProcessExecutor)

        def progress(n: int) -> None:
            if not killed:
                pid = next(iter(ex._pool._processes))  # a live worker of the pool
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)

        items = list(range(200))
        got = list(ex.map(_pid_after_nap, items, batch_size=5, progress=progress))
        assert killed and ex.restarts >= 1
    assert all(r.ok for r in got)
    assert [r.value[0] for r in got] == items
    assert killed[0] not in {r.value[1] for r in got[-5:]}


def test_item_that_kills_its_worker_becomes_one_error_row():
    with ProcessExecutor(2) as ex:
        got = list(ex.map(_dies_on_poison, range(40), batch_size=4))
    assert len(got) == 40
    bad = [i for i, r in enumerate(got) if not r.ok]
    assert bad == [POISON]
    assert got[POISON].reason == "error:WorkerDied"
    want = [r.value for r in SerialExecutor().map(abs, [x * 10 for x in range(40)])]
    assert [r.value for i, r in enumerate(got) if i != POISON] == [v for i, v in enumerate(want) if i != POISON]
