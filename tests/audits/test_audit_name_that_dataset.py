"""name_that_dataset on cases with known answers: real digits split into sources."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from sklearn.datasets import load_digits

from audits import get_audit
from datakit import open_dataset
from datakit.store.writer import write_dataset


def _digits16(n: int = 1000) -> tuple[np.ndarray, np.ndarray]:
    """The first ``n`` of scikit-learn's 1,797 real 8x8 digits, upscaled to 16x16 uint8."""
    d = load_digits()
    x = np.stack([np.asarray(Image.fromarray((im * 255 / 16).astype(np.uint8)).resize((16, 16), Image.BILINEAR))
                  for im in d.images[:n]])
    return x, d.target[:n]


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    """One dataset, two sources: the same real digits, source B with its ink dimmed to 55%."""
    x, y = _digits16()
    rng = np.random.default_rng(0)
    b = rng.random(len(x)) < 0.5
    x = x.copy()
    x[b] = (x[b] * 0.55).astype(np.uint8)
    split = np.where(rng.random(len(x)) < 0.8, "train", "test")
    root = write_dataset(tmp_path_factory.mktemp("ntd") / "two_sources", x, y.tolist(), split.tolist(),
                         source=np.where(b, "dim", "bright").tolist())
    return open_dataset(root)


@pytest.fixture(scope="module")
def same_distribution(tmp_path_factory):
    """Two datasets drawn at random from the same real digits: nothing to tell apart."""
    x, y = _digits16()
    rng = np.random.default_rng(1)
    a = rng.random(len(x)) < 0.5
    base = tmp_path_factory.mktemp("ntd_same")
    return [open_dataset(write_dataset(base / name, x[m], y[m].tolist(), "train", name=name))
            for name, m in (("half_a", a), ("half_b", ~a))]


def test_different_sources_are_told_apart(sources):
    res = get_audit("name_that_dataset")([sources], probes="linear", n_per_dataset=300, n_test_per_dataset=100,
                                         learning_curve=[10, 100, 300], n_per_class=40)
    assert res.skipped is None
    assert res.summary["chance"] == pytest.approx(0.5)
    assert res.summary["accuracy_linear"] > 0.95
    assert res.summary["accuracy"] == res.summary["accuracy_linear"]
    assert res.summary["n_train_per_dataset"] == 300 and res.summary["n_test_per_dataset"] == 100
    # confusion matrix counts every held-out image once
    cm = res.tables["confusion_linear"].set_index("true")
    assert cm.to_numpy().sum() == 200 and list(cm.index) == ["bright", "dim"]
    # learning curve at the requested sizes, accuracy grows with data
    lc = res.tables["learning_curve"]
    assert lc["n_per_dataset"].tolist() == [10, 100, 300]
    assert lc["accuracy"].iloc[-1] >= lc["accuracy"].iloc[0]
    # class-conditional: same digit, different source, still separable
    cc = res.tables["class_conditional"]
    assert len(cc) == 10 and res.summary["class_conditional_accuracy"] > 0.9
    # per-image: held-out images with probability of the true source
    pi = res.per_image
    assert len(pi) == 200 and pi["score"].between(0, 1).all() and pi["flag"].dtype == bool
    assert {"confusion", "learning_curve", "class_conditional"} <= set(res.figures)
    assert all(png.startswith(b"\x89PNG") for png in res.figures.values())


def test_same_distribution_is_near_chance(same_distribution):
    res = get_audit("name_that_dataset")(same_distribution, probes="linear", n_per_dataset=300,
                                         n_test_per_dataset=150, class_conditional=False, learning_curve=[300])
    assert res.summary["chance"] == 0.5
    # 300 held-out images: chance accuracy has a standard error of 0.029
    assert res.summary["accuracy_linear"] < 0.62


@pytest.mark.slow
def test_conv_probe_also_separates(sources):
    res = get_audit("name_that_dataset")([sources], probes="linear,conv", n_per_dataset=150,
                                         n_test_per_dataset=50, class_conditional=False, learning_curve=[150],
                                         conv_epochs=3)
    assert res.summary["accuracy_conv"] > 0.9
    assert res.info["probes"]["conv"]["model"] == "lenet5"
    assert "confusion_conv" in res.tables


def test_needs_two_datasets_or_sources(tmp_path):
    x, y = _digits16()
    ds = open_dataset(write_dataset(tmp_path / "one", x[:50], y[:50].tolist(), "train", source="only"))
    res = get_audit("name_that_dataset")([ds], probes="linear")
    assert res.skipped is not None and "two or more datasets" in res.skipped
    assert "['only']" in res.skipped


def test_small_dataset_shrinks_sample_with_note(tmp_path):
    x, y = _digits16()
    a = open_dataset(write_dataset(tmp_path / "a", x[:40], y[:40].tolist(), "train", name="a"))
    b = open_dataset(write_dataset(tmp_path / "b", (x[40:400] * 0.5).astype(np.uint8), y[40:400].tolist(), "train",
                                   name="b"))
    res = get_audit("name_that_dataset")([a, b], probes="linear", class_conditional=False, learning_curve=[10])
    assert res.summary["n_train_per_dataset"] == 30 and res.summary["n_test_per_dataset"] == 10
    assert any("smallest dataset has 40 images" in n for n in res.notes)


def test_different_sizes_are_resized_with_note(tmp_path):
    x, y = _digits16()
    big = np.stack([np.asarray(Image.fromarray(im).resize((24, 24))) for im in x[:200]])
    a = open_dataset(write_dataset(tmp_path / "a", x[200:400], y[200:400].tolist(), "train", name="a"))
    b = open_dataset(write_dataset(tmp_path / "b", big, y[:200].tolist(), "train", name="b"))
    res = get_audit("name_that_dataset")([a, b], probes="linear", class_conditional=False, learning_curve=[50])
    assert res.info["image_size"] == [16, 16]
    assert any("resized to 16x16" in n for n in res.notes)


def test_unknown_probe_is_rejected(sources):
    with pytest.raises(ValueError, match=r"Unknown probe 'svm'. Valid values are \{linear, conv\}"):
        get_audit("name_that_dataset")([sources], probes="svm")
