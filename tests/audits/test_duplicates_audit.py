"""The `duplicates` audit on fixture datasets with planted copies (exact counts)."""
from __future__ import annotations

import gzip
import io
import itertools

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from sklearn.datasets import load_digits

from audits.base import get_audit, list_audits
from datakit import open_dataset
from datakit.dedup import popcount64
from datakit.errors import DatakitError
from datakit.hashing import phash_many
from datakit.store.writer import DatasetWriter, write_dataset


@pytest.fixture(scope="module")
def bases() -> tuple[np.ndarray, np.ndarray]:
    """Real digits (scikit-learn, 8x8 upscaled to 16x16) whose pHashes are pairwise > 10 bits apart."""
    d = load_digits()
    x = (d.images * 16).clip(0, 255).astype(np.uint8).repeat(2, axis=1).repeat(2, axis=2)
    h = phash_many(x)
    keep: list[int] = []
    for i in range(len(x)):
        if all((int(h[i]) ^ int(h[k])).bit_count() > 10 for k in keep):
            keep.append(i)
        if len(keep) == 140:
            break
    assert len(keep) == 140
    return x[keep], d.target[keep]


def brighten(a: np.ndarray) -> np.ndarray:
    return np.clip(a.astype(int) + 3, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def planted(tmp_path_factory, bases):
    """Two datasets, ``a`` and ``b``, with every kind of copy planted once or a few times."""
    x, y = bases
    root = tmp_path_factory.mktemp("dup")
    images, labels, splits, sources = [], [], [], []

    def add(img, label, split, source="digits"):
        images.append(img), labels.append(int(label)), splits.append(split), sources.append(source)

    for i in range(60):
        add(x[i], y[i], "train")
    for i in range(60, 90):
        add(x[i], y[i], "test")
    for i in (0, 1, 2):  # leak: near copies of train images in test
        add(brighten(x[i]), y[i], "test")
    for i in (3, 4):  # leak: exact copies of train images in test
        add(x[i], y[i], "test")
    add(x[5], y[5], "train")  # exact duplicate within train
    add(brighten(x[6]), y[6], "train")  # near duplicate within train
    add(brighten(x[7]), y[7], "train", source="scan")  # near duplicate from another source
    a = write_dataset(root / "a", np.stack(images), labels, splits, source=sources, name="a")
    b_images = [x[i] for i in range(100, 120)] + [x[8]] + [x[i] for i in range(120, 130)] + [brighten(x[60])]
    b_labels = [y[i] for i in range(100, 120)] + [y[8]] + [y[i] for i in range(120, 130)] + [y[60]]
    b_splits = ["train"] * 21 + ["test"] * 11
    b = write_dataset(root / "b", np.stack(b_images), b_labels, b_splits, source="other", name="b")
    return open_dataset(a), open_dataset(b)


def test_registered():
    assert "duplicates" in list_audits()


def test_planted_copies_are_counted_exactly(planted):
    a, b = planted
    res = get_audit("duplicates")([a, b])
    s = res.summary
    assert res.skipped is None
    assert s["n_images"] == 98 + 32
    assert s["exact_within"] == 2  # train 5 and its copy
    assert s["near_within"] == 6  # 5, 6, 7 and their copies
    assert s["exact_across_splits"] == 4  # train 3, 4 and their test copies
    assert s["near_across_splits"] == 10  # train 0-4 and their test copies
    assert s["leakage_test_in_train"] == 5
    assert s["leakage_exact_test_in_train"] == 2
    assert s["n_test"] == 35 + 11
    assert s["leakage_fraction"] == pytest.approx(5 / 46)
    assert s["cross_dataset_images"] == 4
    assert s["cross_dataset_pairs"] == 2
    assert s["cross_source_images"] == 2
    assert s["cross_source_pairs"] == 1
    assert s["train_test_pairs"] == 5
    assert s["near_pairs"] == 3 + 5 + 2
    assert s["exact_pairs"] == 4
    assert s["flagged_images"] == 20

    leak = res.tables["leakage"]
    row = leak[(leak["dataset"] == "a") & (leak["split"] == "test")].iloc[0]
    assert (row["images"], row["exact_in_train"], row["near_in_train"]) == (35, 2, 5)
    assert leak.loc[leak["dataset"] == "b", "near_in_train"].sum() == 0

    per = res.per_image
    assert len(per) == 130 and {"dataset", "id", "flag", "score", "distance", "match_id", "kind"} <= set(per.columns)
    leaked = per[per["leak"]]
    assert len(leaked) == 5 and set(leaked["split"]) == {"test"} and set(leaked["dataset"]) == {"a"}
    assert set(leaked["match_split"]) == {"train"} and set(leaked["kind"]) == {"leak"}
    assert leaked["exact"].sum() == 2
    assert per.loc[per["exact"], "score"].eq(1.0).all()
    assert per["score"].between(0, 1).all()
    assert (per.loc[~per["flag"], "score"] == 0).all() and per.loc[~per["flag"], "distance"].isna().all()
    assert (per.loc[per["flag"], "distance"] <= 4).all()
    cross = per[per["kind"] == "cross_dataset"]
    assert len(cross) == 4 and set(cross["dataset"]) == {"a", "b"}
    assert set(per.loc[per["kind"] == "cross_source", "source"]) == {"digits", "scan"}
    # every reported match is a real image of the named dataset and split
    ids = {(d, i, s) for d, i, s in per[["dataset", "id", "split"]].itertuples(index=False)}
    for row in per[per["flag"]].itertuples():
        assert (row.match_dataset, row.match_id, row.match_split) in ids

    for name in ("examples", "distances"):
        assert res.figures[name][:8] == b"\x89PNG\r\n\x1a\n"
    assert len(res.info["examples"]) == 8
    assert res.info["examples"][0]["kind"] == "leak"


def test_threshold_zero_keeps_only_identical_hashes(planted):
    a, b = planted
    res = get_audit("duplicates")([a], max_distance=0, n_examples=0)
    assert res.figures == {}
    h = a.manifest["phash"].to_numpy().astype(np.uint64)
    equal = sum(1 for i, j in itertools.combinations(range(len(h)), 2) if h[i] == h[j])
    assert res.summary["near_pairs"] == equal
    assert res.summary["exact_pairs"] == 3  # exact copies of train 3, 4, 5


def test_missing_phash_is_computed_with_a_note(tmp_path, planted):
    a, _ = planted
    frame = a.manifest.copy()
    broken = frame.iloc[[0]].assign(id="0" * 64, path="broken/bad.png", split="val")
    frame = pd.concat([frame, broken], ignore_index=True)
    frame["phash"] = pd.array([None] * len(frame), dtype="UInt64")
    root = tmp_path / "nohash"
    (root / "broken").mkdir(parents=True)
    (root / "broken" / "bad.png").write_bytes(b"not a png")
    (root / "images").symlink_to(a.root / "images")
    DatasetWriter(root).write_manifest(frame)
    res = get_audit("duplicates")([open_dataset(root)], n_examples=0, workers=2)  # through worker processes
    assert any(f"no phash for {len(frame)} of {len(frame)} images" in note for note in res.notes)
    assert any("1 images could not be read" in note and "broken/bad.png: error:UnidentifiedImageError" in note
               for note in res.notes)
    ref = get_audit("duplicates")([a], n_examples=0)
    for key in ("near_within", "leakage_test_in_train", "near_pairs", "cross_source_pairs", "exact_pairs"):
        assert res.summary[key] == ref.summary[key]
    bad = res.per_image[res.per_image["split"] == "val"]
    assert len(bad) == 1 and not bad["flag"].iloc[0]


def test_counts_match_brute_force_on_synthetic_hashes(tmp_path):
    """Many equal and near hashes, three splits, two sources: the sparse counting equals a pair-by-pair count."""
    rng = np.random.default_rng(0)
    n = 120
    base = rng.integers(0, 2**64, 30, dtype=np.uint64)
    flips = [sum(1 << int(b) for b in rng.choice(64, rng.integers(0, 7), replace=False)) for _ in range(n)]
    hashes = base[rng.integers(0, 30, n)] ^ np.array(flips, dtype=np.uint64)
    splits = rng.choice(["train", "val", "test"], n)
    sources = rng.choice(["s1", "s2"], n)
    images = rng.integers(0, 256, (n, 4, 4), dtype=np.uint8)
    root = write_dataset(tmp_path / "syn", images, [0] * n, list(splits), source=list(sources))
    ds = open_dataset(root)
    frame = ds.manifest.copy()
    frame["phash"] = hashes
    DatasetWriter(root).write_manifest(frame)
    ds = open_dataset(root)
    r = 4
    res = get_audit("duplicates")([ds], max_distance=r, n_examples=0, verify="none")  # noise images: hash only
    d = popcount64(hashes[:, None] ^ hashes[None, :]).astype(int)
    near = (d <= r) & ~np.eye(n, dtype=bool)
    same_split = splits[:, None] == splits[None, :]
    same_src = sources[:, None] == sources[None, :]
    train = splits == "train"
    s = res.summary
    assert s["near_pairs"] == near.sum() // 2
    assert s["near_within"] == (near & same_split).any(1).sum()
    assert s["near_across_splits"] == (near & ~same_split).any(1).sum()
    assert s["cross_source_pairs"] == (near & ~same_src).sum() // 2
    assert s["train_test_pairs"] == (near & np.outer(train, splits == "test")).sum()
    assert s["leakage_test_in_train"] == (near[splits == "test"][:, train]).any(1).sum()
    per = res.per_image
    flag = near.any(1)
    assert (per["flag"].to_numpy() == flag).all()
    np.testing.assert_array_equal(per["n_near"].to_numpy(), near.sum(1))
    # score: from the nearest copy
    nearest = np.where(near, d, 99).min(1)
    np.testing.assert_allclose(per["score"].to_numpy()[flag], (r + 1 - nearest[flag]) / (r + 1))
    # reported match: the most serious relation (leak, cross_source, cross_split, within_split here),
    # then the smallest distance
    is_train = splits == "train"
    rank = np.where(splits[:, None] != splits[None, :],
                    np.where(is_train[:, None] != is_train[None, :], 0, 3),
                    np.where(~same_src, 2, 4))
    key = np.where(near, rank * 100 + d, 10**6)
    best = key.min(1)
    kinds = np.array(["leak", "cross_dataset", "cross_source", "cross_split", "within_split"])
    np.testing.assert_array_equal(per["kind"].to_numpy()[flag], kinds[best[flag] // 100])
    np.testing.assert_array_equal(per["distance"].to_numpy()[flag].astype(int), best[flag] % 100)


def test_bad_options_and_no_train_split(planted):
    a, b = planted
    audit = get_audit("duplicates")
    with pytest.raises(DatakitError, match=r"max_distance must be an integer in 0\.\.32"):
        audit([a], max_distance=40)
    with pytest.raises(DatakitError, match="n_examples"):
        audit([a], n_examples=-1)
    with pytest.raises(DatakitError, match="n_jobs must be -1"):
        audit([a], n_jobs=0)
    threaded = audit([a, b], n_jobs=2, n_examples=0)
    assert threaded.summary == audit([a, b], n_examples=0).summary
    res = audit([a], train_split="fit", max_distance="4", n_examples=0)  # CLI options arrive as strings
    assert res.summary["leakage_test_in_train"] == 0
    assert any("no dataset has both" in note for note in res.notes)
    assert audit([]).skipped == "no dataset given"


def _jpeg(a: np.ndarray) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, "JPEG", quality=75)
    with Image.open(buf) as im:
        return np.asarray(im)


def test_pixel_check_on_real_mnist_keeps_reencoded_copies_only(shared_data, tmp_path):
    """600 distinct real MNIST digits (500 train, 100 test) + JPEG re-encodings of 5 train digits in test.

    pHash alone pairs different handwritten digits that look alike; the thumbnail check keeps exactly
    the 5 planted copies."""
    with gzip.open(shared_data / "mnist" / "t10k-images-idx3-ubyte.gz") as fh:
        x = np.frombuffer(fh.read(), np.uint8, offset=16).reshape(-1, 28, 28)[:600].copy()
    images = np.concatenate([x, np.stack([_jpeg(x[k]) for k in range(5)])])
    ds = open_dataset(write_dataset(tmp_path / "m", images, [0] * 605, ["train"] * 500 + ["test"] * 105,
                                    source="mnist"))
    audit = get_audit("duplicates")
    hash_only = audit([ds], verify="none", n_examples=0)
    checked = audit([ds], n_examples=0)
    assert hash_only.summary["leakage_test_in_train"] > 5  # false leaks: different digits, alike hashes
    assert hash_only.summary["near_within"] > 0
    assert checked.summary["leakage_test_in_train"] == 5
    assert checked.summary["near_within"] == 0 and checked.summary["near_pairs"] == 5
    per = checked.per_image
    assert sorted(per.index[per["leak"]]) == [600, 601, 602, 603, 604]
    assert (per.loc[per["leak"], "match_id"].to_numpy() == per["id"].to_numpy()[:5]).all()
    assert checked.info["confirmed_pairs"] == 5
    assert any("were rejected: thumbnail correlation below 0.98" in note for note in checked.notes)
    with pytest.raises(DatakitError, match=r"Valid values are \{pixels, none\}"):
        audit([ds], verify="ssim")
    with pytest.raises(DatakitError, match=r"min_similarity must be a number in \[-1, 1\]"):
        audit([ds], min_similarity=2)


def test_content_nodes_fast_path_agrees_with_factorizing_the_ids():
    """Nodes from the ids' 16-digit prefixes (memory-light) equal those of factorizing the full strings,
    and two ids that share a prefix but differ elsewhere fall back to the exact factorization."""
    import hashlib

    from audits._duplicates_graph import _hex_id_codes, _nodes

    rng = np.random.default_rng(0)
    ids = [hashlib.sha256(str(i).encode()).hexdigest() for i in rng.integers(0, 500, 3000)]
    frame = pd.DataFrame({"id": pd.array(ids, dtype=pd.StringDtype("pyarrow"))})
    codes, n_nodes, first = _nodes(frame)
    want, uniques = pd.factorize(pd.Series(ids, dtype=object))
    np.testing.assert_array_equal(codes, want)
    assert n_nodes == len(uniques) and (np.asarray(ids, dtype=object)[first] == np.asarray(uniques)).all()
    clash = ids[:10] + [ids[0][:16] + "0" * 48]
    frame = pd.DataFrame({"id": pd.array(clash, dtype=pd.StringDtype("pyarrow"))})
    assert _hex_id_codes(frame["id"]) is None
    assert _nodes(frame)[1] == len(set(clash))
    assert _hex_id_codes(pd.Series(["a", "b"], dtype=pd.StringDtype("pyarrow"))) is None  # not sha256s
