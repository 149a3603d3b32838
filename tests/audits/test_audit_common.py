"""The audits' shared helpers: groups, class correspondences, sizes, stratified samples, probes."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from audits._common import load_images, make_groups, sample_rows, shared_labels, working_size
from audits._probes import auto_epochs, fit_predict
from datakit import open_dataset
from datakit.store.writer import write_dataset


@pytest.fixture
def mixed(tmp_path):
    x = (np.arange(12, dtype=np.uint8)[:, None, None] * 20) * np.ones((12, 6, 8), np.uint8)
    return open_dataset(write_dataset(tmp_path / "mixed", x, ["a", "b"] * 6, "train",
                                      source=["s1"] * 4 + ["s2"] * 8, name="mixed"))


def test_groups_by_source_and_dataset(mixed, tmp_path):
    groups = make_groups([mixed])
    assert [(g.name, len(g)) for g in groups] == [("s1", 4), ("s2", 8)]
    assert [g.name for g in make_groups([mixed], "dataset")] == ["mixed"]
    other = open_dataset(write_dataset(tmp_path / "o", np.zeros((2, 6, 8), np.uint8) + np.uint8(1), ["a", "b"],
                                       "train", name="mixed"))
    assert [g.name for g in make_groups([mixed, other])] == ["mixed", "mixed#2"]  # names kept unique
    assert [g.name for g in make_groups([mixed, other], "source")] == ["mixed/s1", "mixed/s2", "mixed/arrays"]
    with pytest.raises(ValueError, match=r"Unknown value 'class' for group_by. Valid values are"):
        make_groups([mixed], "class")


def test_shared_labels_by_dataset_or_group_name(mixed):
    g = make_groups([mixed])[0]
    assert shared_labels(g).tolist() == ["a", "b", "a", "b"]
    assert shared_labels(g, {"mixed": {"a": "dog"}}).tolist() == ["dog", "b", "dog", "b"]
    assert shared_labels(g, {"s1": {"b": "truck"}}).tolist() == ["a", "truck", "a", "truck"]


def test_working_size_and_loading(mixed):
    groups = make_groups([mixed])
    assert working_size(groups, cap=32) == ((6, 8), None)
    size, note = working_size(groups, cap=4)
    assert size == (4, 4) and "resized to 4x4" in note
    x = load_images(groups[1], None, (6, 8), "L")
    assert x.shape == (8, 6, 8) and x.dtype == np.uint8
    assert x[:, 0, 0].tolist() == [80, 100, 120, 140, 160, 180, 200, 220]
    assert load_images(groups[0], groups[0].positions[:2], (3, 3), "RGB").shape == (2, 3, 3, 3)


def test_sample_rows_exact_and_stratified():
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"v": range(100)}, index=np.arange(100) * 3)
    labels = pd.Series(["a"] * 70 + ["b"] * 20 + [None] * 10, index=frame.index)
    for n in (1, 7, 33, 99):
        rows = sample_rows(frame, n, rng, stratify=labels)
        assert len(rows) == n and rows.index.is_unique and rows.index.isin(frame.index).all()
    rows = sample_rows(frame, 50, rng, stratify=labels)
    assert labels.loc[rows.index].value_counts(dropna=False).tolist() == [35, 10, 5]
    assert len(sample_rows(frame, 500, rng)) == 100


def test_linear_probe_and_auto_epochs():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 100, (200, 8, 8)).astype(np.uint8)
    y = np.arange(200) % 2
    x[y == 1, 2:6, 2:6] += 120  # class 1 has a bright square
    res = fit_predict("linear", x[:150], y[:150], x[150:], 2)
    assert (res.pred == y[150:]).mean() == 1.0 and res.proba.shape == (50, 2)
    assert np.allclose(res.proba.sum(1), 1)
    assert auto_epochs(2000) == 6 and auto_epochs(10**6) == 3 and auto_epochs(10) == 20
    with pytest.raises(ValueError, match="Unknown probe 'knn'"):
        fit_predict("knn", x, y, x, 2)
