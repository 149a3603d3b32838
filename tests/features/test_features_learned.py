"""learned: a conv net trained on the datasets' training rows; seeded; shared cache key; the probe task on photos."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from datakit import open_dataset
from datakit.features import FeatureError, extract_features, get_extractor
from datakit.features.learned import balanced_sample
from datakit.store.writer import write_dataset

#: small and fast: a few hundred images, 2 epochs
FAST = {"epochs": 2, "size": 32, "max_train": 400}


def _photos(folder, per_class: int) -> tuple[np.ndarray, list[str]]:
    """The first ``per_class`` images of every class folder, as RGB arrays (original sizes)."""
    x, y = [], []
    for c in sorted(p for p in folder.iterdir() if p.is_dir()):
        for f in sorted(c.iterdir())[:per_class]:
            with Image.open(f) as im:
                x.append(np.asarray(im.convert("RGB")))
            y.append(c.name)
    return np.stack(x), y


@pytest.fixture(scope="module")
def cifar_imagenette(tmp_path_factory, shared_data):
    """150 real CIFAR-10 test images (32x32) and 150 real Imagenette images (224x224), 2/3 train, 1/3 test."""
    base = tmp_path_factory.mktemp("natural")
    out = []
    for name, folder in (("cifar10", "cifar10_test_jpg"), ("imagenette", "imagenette_val_224_subset")):
        x, y = _photos(shared_data / folder, 15)
        split = np.where(np.random.default_rng(len(out)).random(len(x)) < 2 / 3, "train", "test")
        out.append(open_dataset(write_dataset(base / name, x, y, split.tolist(), name=name, source=folder)))
    return out


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    """Two small synthetic datasets (seeded): A has bright squares, B dark ones; labels by square position."""
    rng = np.random.default_rng(0)
    base = tmp_path_factory.mktemp("toy")
    out = []
    for k, name in enumerate(("bright", "dark")):
        x = rng.integers(0, 60, (60, 40, 40, 3), dtype=np.uint8)
        y = np.arange(60) % 2
        for i in range(60):
            r = 4 if y[i] == 0 else 24
            x[i, r:r + 12, 10:22] = 230 if k == 0 else 120
        split = ["train"] * 40 + ["test"] * 20
        out.append(open_dataset(write_dataset(base / name, x, [f"c{v}" for v in y], split, name=name)))
    return out


def test_balanced_sample():
    g = np.array([0] * 10 + [1] * 3 + [2] * 50)
    idx = balanced_sample(g, 15, np.random.default_rng(0))
    assert np.bincount(g[idx]).tolist() == [6, 3, 6] and len(np.unique(idx)) == 15
    assert np.array_equal(balanced_sample(g, 15, np.random.default_rng(0)), idx)  # seeded
    assert len(balanced_sample(g, None, np.random.default_rng(0))) == 63
    two = balanced_sample(g, 2, np.random.default_rng(0))  # fewer than groups: one each for the largest
    assert np.bincount(g[two], minlength=3).tolist() == [1, 0, 1]


def test_shapes_rows_and_info(toy):
    ext = get_extractor("learned", **FAST).prepare(toy)
    assert ext.target_ == "dataset" and ext.classes_ == ["bright", "dark"]  # auto: two datasets
    for ds, t in zip(toy, ext.training_):
        m = ds.manifest
        # only training rows trained the net (so held-out rows stay unseen)
        assert t["rows"] == "train" and len(t["positions"]) == 40
        assert set(m["split"].iloc[t["positions"]]) == {"train"}
    fm = extract_features(toy[0], ext)
    assert fm.values.shape == (60, 128) and fm.values.dtype == np.float32 and np.isfinite(fm.values).all()
    assert ext.info_["n_train"] == 80 and ext.info_["per_class"] == {"bright": 40, "dark": 40}
    assert len(ext.info_["history"]) == 2 and ext.info_["failed"] == []


def test_deterministic_with_seed(toy):
    x = np.stack([np.asarray(Image.open(toy[0].root / p).convert("RGB").resize((32, 32), Image.BILINEAR))
                  for p in toy[0].manifest["path"][:8]])
    a = get_extractor("learned", seed=3, **FAST).prepare(toy).transform(x)
    b = get_extractor("learned", seed=3, **FAST).prepare(toy).transform(x)
    c = get_extractor("learned", seed=4, **FAST).prepare(toy).transform(x)
    assert np.array_equal(a, b)
    assert np.abs(a - c).mean() > 0.05 * np.abs(a).mean()


def test_cache_key_shares_one_net_and_tracks_training_data(toy):
    opts = {**FAST, "seed": 7}
    ext = get_extractor("learned", **opts).prepare(toy)
    first = [extract_features(ds, ext) for ds in toy]
    assert [f.info["computed"] for f in first] == [60, 60]
    again = [extract_features(ds, ext) for ds in toy]
    assert [f.info["from_cache"] for f in again] == [60, 60]
    np.testing.assert_array_equal(again[1].values, first[1].values)
    # the same settings on the same data (a deterministic net): the cache is reused
    twin = get_extractor("learned", **opts).prepare(toy)
    assert extract_features(toy[0], twin).info["from_cache"] == 60
    key = ext.cache_key()
    assert [t["checksum"] for t in key["training"][:2]] == [ds.checksum for ds in toy]
    assert key["params"]["epochs"] == 2 and key["training"][2]["target"] == "dataset"
    # a net trained on one dataset's labels is another feature space: a miss
    alone = get_extractor("learned", **opts).prepare(toy[:1])
    assert alone.target_ == "label" and alone.classes_ == ["c0", "c1"]
    assert extract_features(toy[0], alone).info["computed"] == 60
    # and so is another number of epochs
    assert extract_features(toy[0], get_extractor("learned", **{**opts, "epochs": 1}).prepare(toy)) \
        .info["computed"] == 60


def test_label_target_uses_the_union_of_labels(toy, tmp_path):
    x = np.random.default_rng(1).integers(0, 256, (10, 40, 40, 3), dtype=np.uint8)
    other = open_dataset(write_dataset(tmp_path / "other", x, ["c1", "c9"] * 5, "test", name="other"))
    ext = get_extractor("learned", target="label", **FAST).prepare([toy[0], other])
    assert ext.classes_ == ["c0", "c1", "c9"]
    # "other" has no train split: all its rows trained the net, which is said
    assert ext.training_[1]["rows"] == "all" and len(ext.training_[1]["positions"]) == 10
    assert any("other has no 'train' rows" in n for n in ext.info_["notes"])


def test_name_that_dataset_on_photos(cifar_imagenette):
    """target="dataset" on real CIFAR-10 vs Imagenette: held-out images are told apart by a linear probe."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    ext = get_extractor("learned", target="dataset", epochs=2, seed=0).prepare(cifar_imagenette)
    assert ext.info_["n_train"] == sum(int((ds.manifest["split"] == "train").sum()) for ds in cifar_imagenette)
    z, y, split = [], [], []
    for k, ds in enumerate(cifar_imagenette):
        fm = extract_features(ds, ext)
        assert fm.values.shape == (150, 128) and fm.info["failed"] == 0
        z.append(fm.values)
        y.append(np.full(150, k))
        split.append(ds.manifest["split"].to_numpy())
    z, y, split = np.concatenate(z), np.concatenate(y), np.concatenate(split)
    train, test = split == "train", split == "test"
    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)).fit(z[train], y[train])
    acc = [(probe.predict(z[test & (y == k)]) == k).mean() for k in (0, 1)]
    # observed 0.86 (CIFAR-10) and 0.90 (Imagenette) with 100 training images each; chance is 0.5
    assert min(acc) > 0.75 and np.mean(acc) > 0.8, acc


@pytest.mark.parametrize("options, match", [
    ({"target": "names"}, r"Unknown value 'names' for target\. Valid values are \{auto, label, dataset, source\}"),
    ({"model": "lenet6"}, r"Unknown model 'lenet6'\. Did you mean 'lenet5'\?"),
    ({"epochs": 0}, "epochs must be a positive integer"),
    ({"max_train": 0}, "max_train must be a positive integer or None"),
    ({"seed": -1}, "seed must be a non-negative integer"),
    ({"train_split": 3}, "train_split must be a split name or None"),
    ({"size": 4}, "size must be an integer >= 8"),
    ({"augment": "flip"}, r"Unknown value 'flip' for augment"),
    ({"device": "gpu"}, r"Unknown value 'gpu' for device"),
    ({"width": 8}, "unexpected keyword argument 'width'"),
])
def test_bad_options(options, match):
    with pytest.raises(FeatureError, match=match):
        get_extractor("learned", **options)


def test_bad_use(toy, tmp_path):
    ext = get_extractor("learned", **FAST)
    with pytest.raises(FeatureError, match=r"call prepare\(datasets\) first"):
        ext.transform(np.zeros((1, 32, 32, 3), np.uint8))
    with pytest.raises(FeatureError, match=r"call prepare\(datasets\) first"):
        extract_features(toy[0], ext)
    with pytest.raises(FeatureError, match=r"pass them to prepare\(\[dataset, \.\.\.\]\)"):
        ext.prepare([])
    with pytest.raises(FeatureError, match="target='dataset' needs two or more datasets"):
        get_extractor("learned", target="dataset", **FAST).prepare(toy[:1])
    with pytest.raises(FeatureError, match=r"target='source' needs two or more sources.*found 1"):
        get_extractor("learned", target="source", **FAST).prepare(toy[:1])
    x = np.zeros((4, 40, 40, 3), np.uint8)
    unlabeled = open_dataset(write_dataset(tmp_path / "unlabeled", x, [None] * 4, "train", name="unlabeled"))
    with pytest.raises(FeatureError, match="target='label' needs two or more labeled classes"):
        get_extractor("learned", **FAST).prepare([unlabeled])
