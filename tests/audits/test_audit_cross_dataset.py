"""cross_dataset: the generalization matrix, the drop, class correspondences, skip reasons."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from sklearn.datasets import load_digits

from audits import get_audit
from audits.cross_dataset import ADDA_SOURCE_ONLY
from datakit import open_dataset
from datakit.store.writer import write_dataset


def _digits16(n: int = 900) -> tuple[np.ndarray, np.ndarray]:
    d = load_digits()
    x = np.stack([np.asarray(Image.fromarray((im * 255 / 16).astype(np.uint8)).resize((16, 16), Image.BILINEAR))
                  for im in d.images[:n]])
    return x, d.target[:n]


@pytest.fixture(scope="module")
def digit_sets(tmp_path_factory):
    """Three datasets of real digits: mnist-like A, same-distribution B, and inverted C (white background)."""
    x, y = _digits16()
    rng = np.random.default_rng(0)
    part = rng.integers(0, 3, len(x))
    split = np.where(rng.random(len(x)) < 0.7, "train", "test")
    base = tmp_path_factory.mktemp("cross")
    out = {}
    for i, name in enumerate(["mnist", "usps", "inverted"]):
        m = part == i
        images = 255 - x[m] if name == "inverted" else x[m]
        out[name] = open_dataset(write_dataset(base / name, images, y[m].tolist(), split[m].tolist(), name=name))
    return out


def test_matrix_and_drop(digit_sets):
    res = get_audit("cross_dataset")(list(digit_sets.values()), model="linear")
    assert res.skipped is None
    m = res.tables["matrix"].set_index("trained_on")
    assert list(m.index) == ["mnist", "usps", "inverted"] and list(m.columns) == ["mnist", "usps", "inverted"]
    assert res.summary["n_shared_classes"] == 10 and res.summary["chance"] == pytest.approx(0.1)
    # same distribution transfers; inverted images do not
    assert m.loc["mnist", "mnist"] > 0.8 and m.loc["mnist", "usps"] > 0.75
    assert m.loc["mnist", "inverted"] < 0.5 and m.loc["inverted", "mnist"] < 0.5
    per = res.tables["per_dataset"].set_index("dataset")
    inv = per.loc["inverted"]
    assert inv["drop_pct"] == pytest.approx(100 * (inv["self_accuracy"] - inv["others_accuracy"])
                                            / inv["self_accuracy"])
    assert res.summary["accuracy[mnist->usps]"] == pytest.approx(m.loc["mnist", "usps"])
    assert res.summary["drop_pct"] == pytest.approx(per["drop_pct"].mean())
    # ADDA's source-only numbers sit next to ours when MNIST and USPS are among the datasets
    ref = res.tables["adda_reference"]
    assert ref["adda_source_only"].tolist() == [ADDA_SOURCE_ONLY[("mnist", "usps")],
                                                ADDA_SOURCE_ONLY[("usps", "mnist")]]
    assert ref["ours"].iloc[0] == pytest.approx(m.loc["mnist", "usps"])
    assert "75.2%" in res.info["reference"] and res.figures["matrix"].startswith(b"\x89PNG")


def test_no_shared_classes_is_skipped_and_map_fixes_it(tmp_path):
    x, _ = _digits16(200)
    a = open_dataset(write_dataset(tmp_path / "cifar", x[:100], ["dog", "truck"] * 50, "train", name="cifar"))
    b = open_dataset(write_dataset(tmp_path / "imagenette", x[100:], ["n02102040", "n03417042"] * 50, "train",
                                   name="imagenette"))
    res = get_audit("cross_dataset")([a, b], model="linear")
    assert res.skipped is not None and "no shared classes" in res.skipped and "--map" in res.skipped
    mapped = get_audit("cross_dataset")([a, b], model="linear",
                                        class_map={"imagenette": {"n02102040": "dog", "n03417042": "truck"}})
    assert mapped.skipped is None
    assert mapped.info["shared_classes"] == ["dog", "truck"]
    assert any("held out a random 25%" in n for n in mapped.notes)


def test_one_dataset_without_sources_is_skipped(digit_sets):
    res = get_audit("cross_dataset")([digit_sets["mnist"]])
    assert res.skipped is not None and "two or more datasets" in res.skipped


def test_unlabeled_dataset_is_skipped(tmp_path, digit_sets):
    x, _ = _digits16(20)
    u = open_dataset(write_dataset(tmp_path / "u", x, [None] * 20, "train", name="unlabeled"))
    res = get_audit("cross_dataset")([digit_sets["mnist"], u])
    assert res.skipped is not None and "needs labels" in res.skipped
