"""`datakit audit --workers/--scheduler` reach the audits that do per-image work."""
from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner

import datakit.parallel as parallel
from datakit.cli import cli
from datakit.store.writer import write_dataset


@pytest.fixture()
def tiny(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 255, size=(12, 16, 16), dtype=np.uint8)
    x[6:] = x[:6]
    x[6:, 0, 0] ^= 1  # near copies across the two halves (one pixel differs): checked by pixels
    return write_dataset(tmp_path / "tiny", x, [i % 2 for i in range(12)], ["train"] * 6 + ["test"] * 6)


def test_audit_passes_workers_and_scheduler_to_the_executor(tiny, tmp_path, monkeypatch):
    seen = []
    real = parallel.get_executor

    def spy(workers=None, scheduler=None):
        seen.append((workers, scheduler))
        return real(0)  # run here; the test checks the wiring, not Dask

    monkeypatch.setattr(parallel, "get_executor", spy)
    result = CliRunner().invoke(cli, ["audit", str(tiny), "--audits", "duplicates", "--out", str(tmp_path / "r"),
                                      "--workers", "3", "--scheduler", "tcp://127.0.0.1:1", "--quiet"])
    assert result.exit_code == 0, result.output
    assert seen and all(call == (3, "tcp://127.0.0.1:1") for call in seen)
    assert "leakage_test_in_train=6" in result.output


def test_audit_with_a_bad_scheduler_fails_cleanly(tiny, tmp_path):
    result = CliRunner().invoke(cli, ["audit", str(tiny), "--audits", "duplicates", "--out", str(tmp_path / "r"),
                                      "--scheduler", "not-a-scheduler", "--quiet"])
    assert result.exit_code == 2
    assert "Invalid scheduler 'not-a-scheduler'" in result.output
    assert "Traceback" not in result.output
