"""Caltech101's biases found on its real photos (shared/data/caltech101_sample: 5 classes x 5 JPEGs).

Torralba and Efros (2011): Caltech101's objects sit in the same place at the
same scale, so per-class average images still look like the objects and a
nearest-class-mean classifier on raw pixels beats chance. Ponce et al. (2006):
some Caltech101 images were rotated inside their frame, leaving constant-colour
corner triangles a classifier can learn instead of the object. Two of the 25
photos here (butterfly/image_0002, dolphin/image_0004) carry such corners on
all sides; two more (butterfly/image_0005, dolphin/image_0001) carry a single
triangle, which the audit scores but does not flag (it needs three corners).
"""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from audits.average_image import nearest_class_mean
from audits.base import get_audit
from datakit import open_dataset
from datakit.build import build_dataset

RECIPE = Path(__file__).resolve().parents[2] / "recipes" / "caltech101_sample.toml"
CLASSES = ["airplanes", "butterfly", "chair", "dolphin", "grand_piano"]
#: the sample's photos rotated by Caltech with fill on three or four corners (checked by eye)
CALTECH_ROTATED = {"butterfly/image_0002.jpg", "dolphin/image_0004.jpg"}
#: ... and the ones with a single fill triangle
SINGLE_TRIANGLE = {"butterfly/image_0005.jpg", "dolphin/image_0001.jpg"}


@pytest.fixture(scope="module")
def caltech_src(shared_data) -> Path:
    src = shared_data / "caltech101_sample"
    if not src.is_dir():
        pytest.skip(f"{src} not found (see shared/data/SOURCES.md)")
    return src


@pytest.fixture(scope="module")
def caltech(caltech_src, tmp_path_factory):
    """The sample built with recipes/caltech101_sample.toml (``caltech`` normalizer, 300 px wide)."""
    out = tmp_path_factory.mktemp("caltech") / "caltech101_sample"
    result = build_dataset(RECIPE, out, data_root=caltech_src.parent, workers=0)
    return result, open_dataset(out)


def _refs(ds, ids) -> set[str]:
    return set(ds.manifest.set_index("id").loc[list(ids), "source_ref"])


def test_build_keeps_original_sizes_and_scales_to_300_wide(caltech, caltech_src):
    result, ds = caltech
    assert (result.kept, result.rejected) == (25, 0)      # README.md in the folder is not listed
    m = ds.manifest.set_index("source_ref")
    assert sorted(m.index) == sorted(f"{c}/image_000{i}.jpg" for c in CLASSES for i in range(1, 6))
    assert str(m["original_width"].dtype) == "Int64" and str(m["original_height"].dtype) == "Int64"
    for ref, row in m.iterrows():
        with Image.open(caltech_src / ref) as im:
            w, h = im.size
        assert (row["original_width"], row["original_height"]) == (w, h), ref
        assert row["width"] == 300 and row["height"] == max(1, round(h * 300 / w)), ref
        with Image.open(ds.root / row["path"]) as stored:
            assert stored.size == (300, row["height"])
    # the wide airplanes (about 400x165) come out 300x124-134, the upright chairs 300x360-455
    assert m.loc["airplanes/image_0001.jpg", ["width", "height"]].tolist() == [300, 124]
    assert m.loc["chair/image_0002.jpg", ["original_width", "original_height", "height"]].tolist() == [200, 300, 450]
    # Caltech101's protocol: a fixed number of training images per class (3 here), the rest test
    counts = ds.manifest.groupby(["label", "split"]).size().unstack()
    assert counts["train"].tolist() == [3] * 5 and counts["test"].tolist() == [2] * 5
    assert ds.info["normalize"] == {"style": "caltech", "options": {"width": 300, "mode": "RGB"}}


def test_average_images_classify_caltech_above_chance(caltech):
    """Per-class means exist for all 5 classes and a nearest-mean classifier beats chance (Torralba & Efros)."""
    _, ds = caltech
    res = get_audit("average_image")([ds])
    row = res.tables["per_dataset"].iloc[0]
    assert (row["n_classes"], row["n_train_images"], row["n_test_images"]) == (5, 15, 10)
    assert row["image_size"] == "64x64" and res.summary["chance"] == pytest.approx(0.2)
    assert res.summary["accuracy"] >= 0.5                   # 5+ of 10 held-out photos, chance expects 2
    assert res.figures["mean_images"][:8] == b"\x89PNG\r\n\x1a\n"
    # the same number computed here from the stored images
    train_x, train_y = ds.load_arrays("train", size=(64, 64), mode="RGB")
    test_x, test_y = ds.load_arrays("test", size=(64, 64), mode="RGB")
    classes = np.unique(train_y)
    assert len(classes) == 5
    means = np.stack([(train_x[train_y == c].astype(np.float32) / 255).reshape(-1, 64 * 64 * 3).mean(0)
                      for c in classes])
    pred = classes[nearest_class_mean(means, (test_x.astype(np.float32) / 255).reshape(len(test_x), -1))]
    assert float((pred == test_y).mean()) == pytest.approx(res.summary["accuracy"])


def test_orientation_artifacts_finds_caltechs_own_rotated_photos(caltech):
    _, ds = caltech
    res = get_audit("orientation_artifacts")([ds])
    pi = res.per_image
    assert _refs(ds, pi.loc[pi["flag"], "id"]) == CALTECH_ROTATED
    per_class = res.tables["per_class"].set_index("label")
    assert per_class["n_flagged"].to_dict() == {"butterfly": 1, "dolphin": 1, "airplanes": 0, "chair": 0,
                                                "grand_piano": 0}
    scores = dict(zip(ds.manifest.set_index("id").loc[pi["id"], "source_ref"], pi["score"]))
    assert all(scores[r] > 0.6 for r in CALTECH_ROTATED)
    # one fill triangle alone scores a quarter (half a diagonal) and is not flagged
    assert all(0.2 <= scores[r] < 0.6 for r in SINGLE_TRIANGLE)
    assert all(scores[f"{c}/image_000{i}.jpg"] == 0 for c in ("airplanes", "grand_piano") for i in range(1, 6))


@pytest.mark.parametrize("rotated_class", ["airplanes", "chair"])
def test_rotating_part_of_a_class_names_that_class(caltech_src, tmp_path, rotated_class):
    """Rotate 3 of a class's 5 photos by 15-30 degrees with black corners, as Caltech did: that class tops the table.

    airplanes are wide (about 2.4:1): one pair of their corner triangles is
    thin. chair photos are upright, on white studio backgrounds.
    """
    data = tmp_path / "caltech101_rotated"
    shutil.copytree(caltech_src, data)
    rng = np.random.default_rng(11)
    rotated = {f"{rotated_class}/image_000{i}.jpg" for i in (1, 3, 5)}
    for ref in sorted(rotated):
        angle = float(rng.uniform(15, 30) * rng.choice([-1, 1]))
        with Image.open(data / ref) as im:
            turned = im.convert("RGB").rotate(angle, resample=Image.BICUBIC, expand=False, fillcolor=(0, 0, 0))
        turned.save(data / ref, quality=90)            # a JPEG again, as Caltech shipped them
    recipe = tmp_path / "rotated.toml"
    recipe.write_text(RECIPE.read_text().replace('path = "caltech101_sample"', f'path = "{data}"'))
    build_dataset(recipe, tmp_path / "ds", workers=0)
    ds = open_dataset(tmp_path / "ds")
    res = get_audit("orientation_artifacts")([ds])

    flagged = _refs(ds, res.per_image.loc[res.per_image["flag"], "id"])
    assert flagged == rotated | CALTECH_ROTATED
    per_class = res.tables["per_class"]
    top = per_class.iloc[0]
    assert (top["label"], top["n_flagged"], top["flagged_fraction"]) == (rotated_class, 3, pytest.approx(0.6))
    assert (per_class.iloc[1:]["flagged_fraction"] <= 0.2).all()
    assert res.summary["max_class"] == rotated_class and res.summary["max_class_fraction"] == pytest.approx(0.6)
    assert res.summary["n_flagged"] == 5 and "flagged_examples" in res.figures
