"""average_image, low_level_stats and balance on inputs with known answers."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageFilter
from sklearn.datasets import load_digits

from audits import get_audit
from audits.average_image import nearest_class_mean
from audits.low_level_stats import cohens_d, image_stats
from datakit import open_dataset
from datakit.store.writer import write_dataset


def _digits16(n: int = 600) -> tuple[np.ndarray, np.ndarray]:
    d = load_digits()
    x = np.stack([np.asarray(Image.fromarray((im * 255 / 16).astype(np.uint8)).resize((16, 16), Image.BILINEAR))
                  for im in d.images[:n]])
    return x, d.target[:n]


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    x, y = _digits16()
    split = np.where(np.random.default_rng(0).random(len(x)) < 0.7, "train", "test")
    return open_dataset(write_dataset(tmp_path_factory.mktemp("stats") / "digits", x, y.tolist(), split.tolist(),
                                      name="digits"))


# --- average_image -------------------------------------------------------------------------------------------

def test_nearest_class_mean_exact():
    means = np.array([[0.0, 0.0], [1.0, 1.0]])
    assert nearest_class_mean(means, np.array([[0.1, 0.2], [0.9, 0.7], [0.6, 0.6]])).tolist() == [0, 1, 1]


def test_average_image_real_digits_far_above_chance(digits):
    res = get_audit("average_image")([digits])
    assert res.skipped is None
    assert res.summary["chance"] == pytest.approx(0.1)
    assert res.summary["accuracy"] > 0.7  # digits' class means still look like the digits
    table = res.tables["per_dataset"]
    assert table["n_classes"].iloc[0] == 10 and table["n_test_images"].iloc[0] == (digits.manifest["split"] == "test").sum()
    assert res.figures["mean_images"].startswith(b"\x89PNG") and res.figures["std_images"].startswith(b"\x89PNG")


def test_average_image_random_labels_near_chance(tmp_path):
    x, _ = _digits16()
    labels = np.random.default_rng(3).integers(0, 10, len(x))
    ds = open_dataset(write_dataset(tmp_path / "shuffled", x, labels.tolist(), "train"))
    res = get_audit("average_image")([ds])
    assert res.summary["accuracy"] < 0.25
    assert any("held out a random 30%" in n for n in res.notes)


def test_average_image_unlabeled_is_skipped(tmp_path):
    x, _ = _digits16(10)
    ds = open_dataset(write_dataset(tmp_path / "u", x, [None] * 10, "train"))
    res = get_audit("average_image")([ds])
    assert res.skipped == "needs labels: no dataset has a labeled image"


# --- low_level_stats -----------------------------------------------------------------------------------------

def test_image_stats_exact():
    x = np.zeros((2, 10, 10))
    x[0, 2:4, 6:10] = 1.0           # a 2x4 bar, top right
    x[1] = 0.5                       # flat gray: no foreground
    s = image_stats(x)
    assert s.loc[0, "ink_area"] == pytest.approx(0.08) and s.loc[0, "bbox_aspect"] == pytest.approx(2.0)
    assert s.loc[0, "com_x"] == pytest.approx(0.8) and s.loc[0, "com_y"] == pytest.approx(0.3)
    assert s.loc[0, "intensity"] == pytest.approx(0.08)
    assert s.loc[1, "ink_area"] == 0 and np.isnan(s.loc[1, "bbox_area"]) and s.loc[1, "contrast"] == 0


def test_cohens_d_exact():
    assert cohens_d(np.array([1.0, 2, 3]), np.array([3.0, 4, 5])) == pytest.approx(-2.0)
    assert np.isnan(cohens_d(np.array([1.0]), np.array([2.0, 3.0])))


def test_low_level_flags_a_known_difference(tmp_path):
    x, y = _digits16()
    # thin / thin2: a random halving of the same real digits; thick: thin2's digits with strokes dilated
    half = np.random.default_rng(5).random(len(x)) < 0.5
    thick = np.stack([np.asarray(Image.fromarray(im).filter(ImageFilter.MaxFilter(3))) for im in x[~half]])
    a = open_dataset(write_dataset(tmp_path / "thin", x[half], y[half].tolist(), "train", name="thin"))
    b = open_dataset(write_dataset(tmp_path / "thick", thick, y[~half].tolist(), "train", name="thick"))
    c = open_dataset(write_dataset(tmp_path / "thin2", x[~half], y[~half].tolist(), "train", name="thin2"))
    res = get_audit("low_level_stats")([a, b, c])
    d = res.tables["differences"]
    ink = d[d["metric"] == "ink_area"].set_index(["dataset_a", "dataset_b"])
    assert ink.loc[("thin", "thick"), "flag"] and ink.loc[("thin", "thick"), "cohens_d"] < -0.8
    assert not ink.loc[("thin", "thin2"), "flag"] and abs(ink.loc[("thin", "thin2"), "cohens_d"]) < 0.3
    assert res.summary["ink_area[thick]"] > res.summary["ink_area[thin]"]
    assert res.summary["n_large_differences"] == int(d["flag"].sum())
    assert len(res.per_image) == len(x) + (~half).sum() and {"center_of_mass", "effect_sizes"} <= set(res.figures)
    assert "class_differences" in res.tables


# --- balance ---------------------------------------------------------------------------------------------------

def test_balance_exact(tmp_path):
    x = np.zeros((40, 4, 4), np.uint8)
    x[:, 0, 0] = np.arange(40)  # distinct images
    labels = ["a"] * 30 + ["b"] * 10
    splits = ["train"] * 25 + ["test"] * 5 + ["train"] * 10
    ds = open_dataset(write_dataset(tmp_path / "b", x, labels, splits, classes=["a", "b", "c"]))
    res = get_audit("balance")([ds])
    s = res.summary
    assert s["imbalance_ratio"] == 3.0 and s["n_classes"] == 2 and s["n_images"] == 40
    p = np.array([0.75, 0.25])
    assert s["normalized_entropy"] == pytest.approx(-(p * np.log(p)).sum() / np.log(2))
    assert s["classes_missing_from_test"] == 1  # "b" has no test image
    counts = res.tables["counts"].set_index("label")
    assert counts.loc["a", "count_test"] == 5 and counts.loc["b", "count"] == 10
    assert any("no images: ['c']" in n for n in res.notes)
    assert res.figures["long_tail"].startswith(b"\x89PNG")


def test_balance_unlabeled_is_skipped(tmp_path):
    ds = open_dataset(write_dataset(tmp_path / "u", np.arange(3, dtype=np.uint8)[:, None, None] * np.ones((3, 4, 4), np.uint8),
                                    [None] * 3, "train"))
    assert get_audit("balance")([ds]).skipped == "needs labels: no dataset has a labeled image"
