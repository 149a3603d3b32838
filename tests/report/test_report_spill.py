"""Per-image tables wait on disk between audits, and report.json is written a table at a time (issue 13)."""
from __future__ import annotations

import gc
import io
import pickle

import numpy as np
import pandas as pd
import pytest

import datakit
from audits.base import AuditResult, SpillFolder
from datakit.report import json_report, render_html, render_json, run_audits, write_json, write_report
from datakit.store.writer import write_dataset

AUDITS = "balance,duplicates,orientation_artifacts,low_level_stats"


@pytest.fixture(scope="module")
def digits_dir(tmp_path_factory):
    from sklearn.datasets import load_digits

    d = load_digits()
    images = np.round(d.images[:300] * (255 / 16)).astype(np.uint8)
    images[250:260] = images[:10]  # exact copies for the duplicates audit to find
    splits = ["train"] * 200 + ["test"] * 100
    return write_dataset(tmp_path_factory.mktemp("spill") / "digits", images, [str(t) for t in d.target[:300]],
                         splits, source="sklearn_digits")


@pytest.fixture(scope="module")
def runs(digits_dir):
    ds = [datakit.open_dataset(digits_dir)]
    kept = run_audits(ds, names=AUDITS, spill_rows=None)
    spilled = run_audits(ds, names=AUDITS, spill_rows=1)
    return kept, spilled


def test_large_tables_are_spilled_and_read_back_equal(runs):
    kept, spilled = runs
    with_tables = [r.name for r in kept.results if r.per_image is not None]
    assert {"duplicates", "orientation_artifacts"} <= set(with_tables)
    for name in with_tables:
        a, b = kept.result(name), spilled.result(name)
        assert not a.spilled and b.spilled
        assert b.per_image_rows == len(a.per_image)
        pd.testing.assert_frame_equal(b.per_image, a.per_image)  # dtypes included
        assert b.summary == a.summary
    assert kept.result("duplicates").per_image["flag"].sum() >= 20  # the ten copies and their originals


def test_a_spilled_table_is_read_once_while_held(runs):
    r = runs[1].result("orientation_artifacts")
    held = r.per_image
    assert r.per_image is held
    del held
    gc.collect()
    assert r.per_image is not None  # read again from its file


def test_reports_are_the_same_whether_tables_were_spilled(runs):
    kept, spilled = runs
    for run in (kept, spilled):
        run.created = "2026-01-01T00:00:00+00:00"
        for name in run.seconds:
            run.seconds[name] = run.cpu_seconds[name] = 1.0
        for r in run.results:
            r.info["seconds"] = r.info["cpu_seconds"] = 1.0
    assert render_json(kept) == render_json(spilled)
    assert render_html(kept) == render_html(spilled)


@pytest.mark.parametrize("chunk", [1, 7, 100_000])
def test_write_json_gives_render_jsons_text(runs, monkeypatch, chunk):
    monkeypatch.setattr(json_report, "JSON_ROW_CHUNK", chunk)
    for run in runs:
        fh = io.StringIO()
        write_json(run, fh)
        assert fh.getvalue() == render_json(run)


def test_write_report_writes_the_streamed_json(runs, tmp_path):
    import json

    paths = write_report(runs[1], tmp_path, ["json"])
    doc = json.loads(paths[0].read_text())
    pi = doc["audits"]["orientation_artifacts"]["per_image"]
    assert len(pi["rows"]) == runs[1].result("orientation_artifacts").per_image_rows == 300


def test_spill_folder_lives_as_long_as_a_result_needs_it(tmp_path):
    frame = pd.DataFrame({"id": pd.array(["a", "b", "c"], dtype="string"), "score": [0.1, 0.5, 0.2],
                          "flag": [False, True, False], "label": pd.Categorical(["x", "y", "x"])})
    folder = SpillFolder(tmp_path)
    r = AuditResult("probe", per_image=frame.copy())
    assert not r.spill(folder, min_rows=4)  # too small: stays in memory
    assert r.spill(folder, min_rows=3) and r.spilled
    path = folder.path
    del folder
    gc.collect()
    assert path.exists()  # the result still refers to its file
    copy = pickle.loads(pickle.dumps(r))  # pickled: the table itself travels
    assert not copy.spilled
    pd.testing.assert_frame_equal(copy.per_image, frame)
    del r
    gc.collect()
    assert not path.exists()


def test_a_table_parquet_cannot_give_back_stays_in_memory(tmp_path):
    frame = pd.DataFrame({"id": ["a", "b"], "matches": [[1, 2], [3]]})  # lists come back as arrays
    r = AuditResult("probe", per_image=frame)
    assert not r.spill(SpillFolder(tmp_path))
    assert r.per_image is frame


def test_a_table_is_written_in_slices_and_read_back_whole(tmp_path, monkeypatch):
    import pyarrow.parquet as pq

    from audits import base

    monkeypatch.setattr(base, "SPILL_SLICE", 4)
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"dataset": pd.Categorical(["a", "b"] * 5 + ["a"]),
                          "id": pd.array([f"{i:064x}" for i in range(11)], dtype="string"),
                          "score": rng.random(11), "flag": rng.random(11) > 0.5,
                          "label": pd.array(["1", None, "3"] * 3 + ["1", "2"], dtype="string")})
    r = AuditResult("probe", per_image=frame.copy())
    assert r.spill(SpillFolder(tmp_path))
    files = list(tmp_path.glob("datakit-audit-*/*.parquet"))
    assert len(files) == 1 and pq.ParquetFile(files[0]).num_row_groups == 3  # 4 + 4 + 3 rows
    pd.testing.assert_frame_equal(r.per_image, frame)


def test_a_table_with_its_own_index_stays_in_memory(tmp_path):
    frame = pd.DataFrame({"score": [0.1, 0.2]}, index=[5, 9])
    r = AuditResult("probe", per_image=frame)
    assert not r.spill(SpillFolder(tmp_path)) and r.per_image is frame
