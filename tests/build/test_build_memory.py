"""The compact finalize pass: same manifest as before, no whole-table load, vectorized split assignment."""
from __future__ import annotations

import textwrap
import zlib

import numpy as np
import pandas as pd
import pytest

import datakit
import datakit.build.staging as build_staging
import datakit.build.streaming as build_streaming
from datakit.build import build_dataset
from datakit.store.splits import SPLIT_ORDER, assign_split_codes, assign_splits

from image_helpers import save_png as _png


# --------------------------------------------------------------------------- reference split assignment


def _reference_assign_splits(labels, groups, *, strategy, fractions=(0.8, 0.1, 0.1), per_class=None,
                             val_per_class=0, seed=0, fixed=None):
    """The per-group loop ``assign_splits`` used before it was vectorized (its output must not change)."""
    labels = pd.Series(list(labels), dtype=object)
    n = len(labels)
    groups = np.arange(n, dtype=np.int64) if groups is None else np.asarray(groups, dtype=np.int64)
    fixed_arr = [None] * n if fixed is None else list(fixed)
    out = np.empty(n, dtype=object)
    if n == 0:
        return out.astype(str)
    keys = labels.map(lambda v: "\x00unlabeled" if v is None or (isinstance(v, float) and np.isnan(v)) else str(v))
    frame = pd.DataFrame({"g": groups, "key": keys.to_numpy(),
                          "fixed": pd.Series(fixed_arr, dtype=object).where(lambda s: s.notna(), None)})
    group_fixed = frame[frame["fixed"].notna()].groupby("g", sort=False)["fixed"].first()
    is_fixed = frame["g"].isin(group_fixed.index).to_numpy()
    if is_fixed.any():
        out[is_fixed] = frame.loc[is_fixed, "g"].map(group_fixed).to_numpy()
    free = frame[~is_fixed]
    if len(free):
        sizes = free.groupby("g", sort=False).size()
        glabel = free.groupby("g", sort=False)["key"].agg(lambda s: s.value_counts(sort=True).index[0]
                                                          if s.nunique() > 1 else s.iloc[0])
        gsplit = {}
        for key in sorted(glabel.unique()):
            gids = np.sort(glabel.index[glabel.to_numpy() == key].to_numpy())
            rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, zlib.crc32(key.encode())])
            order = gids[rng.permutation(len(gids))]
            gsize = sizes.loc[order].to_numpy()
            if strategy == "fractions":
                total = int(gsize.sum())
                train = min(int(round(total * fractions[0])), total)
                val = min(int(round(total * fractions[1])), total - train)
                target = np.array([train, val, total - train - val])
                have = np.zeros(3, dtype=np.int64)
                for g, size in zip(order, gsize):
                    k = int(np.argmax(target - have))
                    have[k] += size
                    gsplit[int(g)] = SPLIT_ORDER[k]
            else:
                have = np.zeros(2, dtype=np.int64)
                for g, size in zip(order, gsize):
                    if have[0] + size <= per_class:
                        have[0] += size
                        gsplit[int(g)] = "train"
                    elif have[1] + size <= val_per_class:
                        have[1] += size
                        gsplit[int(g)] = "val"
                    else:
                        gsplit[int(g)] = "test"
        out[~is_fixed] = free["g"].map(gsplit).to_numpy()
    return out.astype(str)


def _random_case(rng: np.random.Generator) -> tuple[list, np.ndarray | None, list | None, dict]:
    n = int(rng.integers(1, 400))
    n_labels = int(rng.integers(1, 6))
    labels = [None if rng.random() < 0.1 else f"c{int(rng.integers(n_labels))}" for _ in range(n)]
    # mostly singletons with a few larger groups (mixed labels inside some), or many merged groups
    groups = None
    if rng.random() < 0.8:
        groups = rng.integers(0, max(1, int(n * rng.uniform(0.2, 1.0))), n) * int(rng.choice([1, 5]))
    fixed = None
    if rng.random() < 0.4:
        fixed = [None if rng.random() < 0.7 else str(rng.choice(["train", "val", "test", "extra"])) for _ in range(n)]
    if rng.random() < 0.5:
        kw = {"strategy": "fractions", "fractions": tuple(float(x) for x in rng.dirichlet([1.0, 1.0, 1.0]))}
    else:
        kw = {"strategy": "per-class", "per_class": int(rng.integers(1, 60)),
              "val_per_class": int(rng.integers(0, 15))}
    kw["seed"] = int(rng.integers(0, 1000))
    return labels, groups, fixed, kw


def test_vectorized_assign_splits_matches_the_per_group_loop():
    rng = np.random.default_rng(7)
    for _ in range(150):
        labels, groups, fixed, kw = _random_case(rng)
        got = assign_splits(labels, groups, fixed=fixed, **kw)
        want = _reference_assign_splits(labels, groups, fixed=fixed, **kw)
        assert got.dtype == want.dtype
        np.testing.assert_array_equal(got, want)


def test_vectorized_assign_splits_matches_on_long_runs_of_singletons():
    rng = np.random.default_rng(3)
    n = 20000
    labels = [f"k{v}" for v in rng.integers(0, 7, n)]
    groups = np.arange(n)
    groups[rng.choice(n, 300, replace=False)] = rng.integers(0, n, 300)  # a few merged groups between the runs
    for kw in ({"strategy": "fractions", "fractions": (0.7, 0.2, 0.1)},
               {"strategy": "per-class", "per_class": 1500, "val_per_class": 300}):
        np.testing.assert_array_equal(assign_splits(labels, groups, seed=11, **kw),
                                      _reference_assign_splits(labels, groups, seed=11, **kw))


def test_assign_split_codes_gives_names_in_split_order_then_fixed():
    codes, names = assign_split_codes(np.zeros(4, np.int64), ["a"], np.arange(4),
                                      fixed_codes=np.array([0, -1, -1, 1]), fixed_names=["extra", "test"],
                                      strategy="fractions", fractions=(1.0, 0.0, 0.0))
    assert names == ["train", "val", "test", "extra"]
    assert [names[c] for c in codes] == ["extra", "train", "train", "test"]


def test_assign_splits_still_rejects_bad_options():
    with pytest.raises(ValueError, match="Unknown split strategy"):
        assign_splits(["a"], strategy="random")
    with pytest.raises(ValueError, match="same length"):
        assign_splits(["a", "b"], [0])
    with pytest.raises(ValueError, match="per_class must be a positive integer"):
        assign_splits(["a"], strategy="per-class", per_class=0)


# --------------------------------------------------------------------------- streaming finalize


def _image(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    a = np.zeros((28, 28), np.uint8)
    r, c = rng.integers(2, 14, 2)
    a[r:r + 12, c:c + int(rng.integers(3, 12))] = 255
    a[rng.integers(0, 28, 30), rng.integers(0, 28, 30)] = 255
    return a


@pytest.fixture
def messy_recipe(tmp_path):
    """Two labeled folder sources and an unlabeled one: exact duplicates within and across sources,
    near duplicates, an unreadable file, unmapped labels (kept and dropped)."""
    data = tmp_path / "data"
    images = [_image(s) for s in range(60)]
    for i in range(40):
        _png(data / "one" / f"k{i % 3}" / f"{i:02d}.png", images[i])
    for i in range(5):
        _png(data / "one" / "k0" / f"dup{i}.png", images[i])          # duplicates in the same source
    near = images[7].copy()
    near[0, 0] = 255 - near[0, 0]
    _png(data / "one" / "k1" / "near.png", near)
    (data / "one" / "k0" / "broken.png").write_bytes(b"not an image")
    for i in range(30, 60):
        _png(data / "two" / f"k{i % 4}" / f"{i:02d}.png", images[i])  # 10 duplicates of source one
    for i in range(0, 60, 6):
        _png(data / "pool" / f"u{i}.png", images[i])                  # duplicates of labeled images
        _png(data / "pool" / f"v{i}.png", _image(1000 + i))           # new, unlabeled
    recipe = tmp_path / "r.toml"
    recipe.write_text(textwrap.dedent("""
        name = "messy"
        [[sources]]
        name = "one"
        kind = "folder"
        path = "one"
        label_map = { k0 = "A", k1 = "B" }
        [[sources]]
        name = "two"
        kind = "folder"
        path = "two"
        label_map = { k0 = "A", k1 = "B", k2 = "C" }
        drop_unmapped = true
        [[sources]]
        name = "pool"
        kind = "folder"
        path = "pool"
        labeled = false
        [normalize]
        style = "none"
        [splits]
        train = 0.5
        val = 0.25
        test = 0.25
        near_duplicate_distance = 4
        [categories]
        A = "alpha"
    """))
    return recipe, data


def _read(out):
    ds = datakit.open_dataset(out)
    return ds.manifest, ds.rejected, ds.info


def test_finalize_never_loads_the_whole_staged_table(messy_recipe, monkeypatch):
    recipe, data = messy_recipe
    root = data.parent

    def whole_table(self, name):
        raise AssertionError("the finalize pass read every staged chunk into one frame")

    monkeypatch.setattr(build_staging._Staging, "read", whole_table)
    result = build_dataset(recipe, root / "out", data_root=data, workers=0, chunk_size=8)
    m, rej, info = _read(result.out)
    assert result.kept == len(m) == info["counts"]["kept"]
    assert sorted(rej["reason"].unique()) == ["duplicate", "not_an_image", "unmapped_label"]
    dups = rej[rej["reason"] == "duplicate"]
    assert info["deduplication"]["exact_duplicates"] == len(dups) >= 10
    assert m["id"].is_unique and dups["id"].isin(m["id"]).all()
    # the kept copy is the first occurrence, and the detail names it
    dup = rej[rej["source_ref"] == "k0/dup3.png"].iloc[0]
    first = m[m["source_ref"] == "k0/03.png"].iloc[0]
    assert dup["id"] == first["id"] and f"kept image {first['id']} (one: k0/03.png)" in dup["detail"]
    dropped = rej[(rej["source"] == "two") & (rej["reason"] == "unmapped_label")]
    assert len(dropped) and dropped["detail"].str.startswith("dropped (drop_unmapped = true)").all()
    assert (m["label"].isna() == (m["source"] == "pool")).all()
    assert m.loc[m["label"] == "A", "label_name"].eq("alpha").all()
    assert m.loc[m["label"] == "B", "label_name"].eq("B").all()
    near = m.set_index("source_ref").loc[["k1/07.png", "k1/near.png"]]
    assert near["near_dup_group"].nunique() == 1 and near["split"].nunique() == 1
    assert info["checksums"]["data_sha256"] == datakit.open_dataset(result.out).checksum
    assert info["counts"]["by_class"]["<NA>"]["total"] == int(m["label"].isna().sum()) == 10


def test_manifest_does_not_depend_on_chunking(messy_recipe):
    recipe, data = messy_recipe
    root = data.parent
    small = build_dataset(recipe, root / "small", data_root=data, workers=0, chunk_size=3)
    large = build_dataset(recipe, root / "large", data_root=data, workers=0, chunk_size=4096)
    (ma, ra, ia), (mb, rb, ib) = _read(small.out), _read(large.out)
    pd.testing.assert_frame_equal(ma, mb)
    pd.testing.assert_frame_equal(ra, rb)
    assert ia["counts"] == ib["counts"] and ia["deduplication"] == ib["deduplication"]
    assert ia["checksums"]["data_sha256"] == ib["checksums"]["data_sha256"]


def test_digest_collisions_are_checked_on_full_ids(messy_recipe, monkeypatch):
    """With every id digest equal, every row is a duplicate candidate: the full ids still decide."""
    recipe, data = messy_recipe
    root = data.parent
    normal = build_dataset(recipe, root / "normal", data_root=data, workers=0, chunk_size=16)
    monkeypatch.setattr(build_streaming, "_id_digest", lambda ids: np.zeros(len(ids), dtype=np.uint64))
    colliding = build_dataset(recipe, root / "colliding", data_root=data, workers=0, chunk_size=16)
    (ma, ra, ia), (mb, rb, ib) = _read(normal.out), _read(colliding.out)
    pd.testing.assert_frame_equal(ma, mb)
    pd.testing.assert_frame_equal(ra, rb)
    assert ia["deduplication"] == ib["deduplication"]
