"""The audits on real photos: CIFAR-10 test images vs Imagenette (feature probes, map, typical images)."""
from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from audits import get_audit
from datakit import open_dataset
from datakit.registry import UnknownNameError
from datakit.store.writer import write_dataset

CLASS_MAP = {"imagenette": {"n02102040": "dog", "n03417042": "truck"}}
PER_CLASS = 40


def _folder(root, classes, size=None):
    x, y = [], []
    for cls in classes:
        files = sorted((root / cls).iterdir())[:PER_CLASS]
        for f in files:
            with Image.open(f) as im:  # Imagenette has greyscale JPEGs: the recipe converts them to RGB
                im = im.convert("RGB")
                x.append(np.asarray(im if size is None else im.resize((size, size))))
            y.append(cls)
    return np.stack(x), y


@pytest.fixture(scope="module")
def photos(shared_data, tmp_path_factory):
    """120 real CIFAR-10 test images (dog, truck, airplane) and 120 Imagenette images (springer, garbage
    truck, tench), each split 75/25 with a fixed seed."""
    base = tmp_path_factory.mktemp("natural")
    rng = np.random.default_rng(0)
    out = []
    for name, folder, classes in (("cifar", "cifar10_test_jpg", ["dog", "truck", "airplane"]),
                                  ("imagenette", "imagenette_val_224_subset", ["n02102040", "n03417042",
                                                                               "n01440764"])):
        x, y = _folder(shared_data / folder, classes, size=None if name == "cifar" else 96)
        split = np.where(rng.random(len(x)) < 0.75, "train", "test").tolist()
        out.append(open_dataset(write_dataset(base / name, x, y, split, source=name, name=name)))
    return out


def test_feature_probes_tell_photos_apart(photos):
    ntd = get_audit("name_that_dataset")
    res = ntd(photos, probes="linear", n_per_dataset=90, n_test_per_dataset=30, learning_curve=[10, 90],
              n_per_class=40, class_map=CLASS_MAP, n_typical=4)
    assert res.skipped is None, res.skipped
    s = res.summary
    # colour photos: HOG, GIST and colour histograms join the pixel probe by default, side by side
    assert {"accuracy_linear", "accuracy_hog", "accuracy_gist", "accuracy_color_hist"} <= set(s)
    assert list(res.tables["probes"]["probe"]) == ["linear", "hog", "gist", "color_hist"]
    # GIST sees what pixels at 32x32 do not: CIFAR's upsampled 32 px images vs Imagenette's detail
    assert s["accuracy_gist"] >= 0.9
    assert s["accuracy_gist"] > s["accuracy_linear"] + 0.1
    assert s["accuracy"] == max(s[f"accuracy_{p}"] for p in ("linear", "hog", "gist", "color_hist"))
    assert s["best_probe"] in ("hog", "gist", "color_hist")
    # same class, different dataset (CIFAR dog vs English springer, truck vs garbage truck)
    cc = res.tables["class_conditional"]
    assert set(cc["class"]) == {"dog", "truck"}
    assert s["class_conditional_probe"] in ("linear", "hog", "gist", "color_hist")
    assert s["class_conditional_accuracy"] == pytest.approx(cc[f"accuracy_{s['class_conditional_probe']}"].mean())
    assert s["class_conditional_accuracy"] >= 0.8
    # the learning curve uses the best linear-type probe
    assert set(res.tables["learning_curve"]["probe"]) == {res.info["learning_curve_probe"]}
    # most and least typical held-out images of each dataset, as a table and thumbnails
    typ = res.tables["typical"]
    assert len(typ) == 2 * 2 * 4
    for (_, kind), part in typ.groupby(["dataset", "kind"]):
        scores = part.sort_values("rank")["score"].to_numpy()
        assert (np.diff(scores) <= 0).all() if kind == "most" else (np.diff(scores) >= 0).all()
    most = typ[typ["kind"] == "most"].groupby("dataset")["score"].min()
    least = typ[typ["kind"] == "least"].groupby("dataset")["score"].max()
    assert (most >= least).all()
    assert res.figures["typical"].startswith(b"\x89PNG")
    # the features were cached in each dataset directory: a second run computes nothing
    again = ntd(photos, probes="linear", n_per_dataset=90, n_test_per_dataset=30, learning_curve=[90],
                class_conditional=False, n_typical=0)
    for p in ("hog", "gist", "color_hist"):
        assert again.info["probes"][p]["computed"] == 0 and again.info["probes"][p]["from_cache"] > 0
        assert again.summary[f"accuracy_{p}"] == pytest.approx(s[f"accuracy_{p}"])
    assert "typical" not in again.figures


def test_features_none_and_unknown(photos):
    ntd = get_audit("name_that_dataset")
    res = ntd(photos, probes="linear", features="none", n_per_dataset=60, n_test_per_dataset=20,
              class_conditional=False, learning_curve=[60])
    assert set(res.tables["probes"]["probe"]) == {"linear"}
    with pytest.raises(UnknownNameError, match=r"Unknown feature extractor 'sift'.*Valid values are \{.*gist.*hog"):
        ntd(photos, probes="linear", features="sift")


def test_learned_features_are_scored_only_on_unseen_images(photos):
    res = get_audit("name_that_dataset")(photos, probes="linear", features="learned", n_per_dataset=60,
                                         n_test_per_dataset=30, class_conditional=False, learning_curve=[60],
                                         n_typical=0)
    assert "accuracy_learned" in res.summary
    note = [n for n in res.notes if n.startswith("learned:")]
    # held-out rows are drawn from every split, and the net trained on the train split: those are left out
    assert note and "not a candidate for the best probe" in note[0]
    assert res.summary["best_probe"] != "learned"
    cm = res.tables["confusion_learned"].set_index("true").to_numpy().sum()
    assert 0 < cm < 60


def test_dataset_map_separates_photos_not_halves(photos, tmp_path):
    dm = get_audit("dataset_map")
    res = dm(photos, n_per_dataset=100, class_map=CLASS_MAP)
    s = res.summary
    assert res.info["features"].startswith("gist(")
    assert s["expected_if_mixed"] == pytest.approx((99 / 199), abs=1e-9)
    assert s["neighbour_same_dataset"] > 0.8 and s["separation"] > 0.6
    assert len(res.per_image) == 200 and {"x", "y", "score", "flag"} <= set(res.per_image)
    assert res.figures["map"].startswith(b"\x89PNG")
    # two random halves of one dataset: nothing separates them
    cifar = photos[0]
    m = cifar.manifest
    rng = np.random.default_rng(3)
    half = rng.random(len(m)) < 0.5
    x, _ = cifar.load_arrays(None)
    halves = [open_dataset(write_dataset(tmp_path / n, x[sel], m["label"][sel].tolist(), "train", name=n))
              for n, sel in (("a", half), ("b", ~half))]
    mixed = dm(halves, n_per_dataset=100)
    assert abs(mixed.summary["separation"]) < 0.25
    with pytest.raises(ValueError, match=r"Unknown value 'umap' for method. Valid values are \{tsne, pca\}"):
        dm(photos, method="umap")


def test_cross_dataset_on_feature_space(photos):
    res = get_audit("cross_dataset")(photos, model="gist", class_map=CLASS_MAP)
    assert res.skipped is None
    assert res.info["shared_classes"] == ["dog", "truck"] and res.info["image_size"] is None
    assert res.info["model"].startswith("linear on gist(")
    acc = res.tables["matrix"].set_index("trained_on")
    assert acc.loc["cifar", "cifar"] > 0.6 and acc.loc["imagenette", "imagenette"] > 0.6


def test_cross_dataset_natural_default_size(photos):
    res = get_audit("cross_dataset")(photos, class_map=CLASS_MAP, epochs=1)
    assert res.info["model"] == "convnet4" and res.info["image_size"] == [64, 64]
    assert any("resized to 64x64" in n and "upsampled" in n for n in res.notes)


def test_cli_features_and_weights(photos, tmp_path):
    from datakit.cli import cli as main

    runner = CliRunner()
    out = runner.invoke(main, ["audit", "--list-features"])
    assert out.exit_code == 0 and "gist" in out.output and "pretrained" in out.output
    res = runner.invoke(main, ["audit", str(photos[0].root), str(photos[1].root), "--audits", "dataset_map",
                               "--features", "hog", "--out", str(tmp_path / "r"), "-q"])
    assert res.exit_code == 0, res.output
    assert "dataset_map" in res.output and (tmp_path / "r" / "report.html").exists()
    import json

    report = json.loads((tmp_path / "r" / "report.json").read_text())
    assert "hog(" in json.dumps(report)
    missing = runner.invoke(main, ["audit", str(photos[0].root), "--weights", str(tmp_path / "nope.pth")])
    assert missing.exit_code == 2 and "nope.pth" in missing.output
