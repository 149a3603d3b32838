"""The `duplicates` audit's semantic mode (cosine distance in a feature space) on real CIFAR-10 copies."""
from __future__ import annotations

import io
import itertools

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from audits._semantic import cosine_pairs, embed, overlap_pairs
from audits.base import get_audit
from datakit import open_dataset
from datakit.errors import DatakitError
from datakit.features import FeatureExtractor, extract_features
from datakit.report import parse_option, run_audits
from datakit.store.writer import DatasetWriter, write_dataset

#: summary keys of the default (pHash) mode before the semantic mode existed: gates rely on them
PHASH_KEYS = ["leakage_test_in_train", "leakage_fraction", "cross_dataset_images", "near_within", "exact_within",
              "leakage_exact_test_in_train", "n_test", "near_across_splits", "exact_across_splits",
              "cross_source_images", "flagged_images", "near_pairs", "exact_pairs", "train_test_pairs",
              "cross_dataset_pairs", "cross_source_pairs", "n_images", "max_distance"]
PHASH_COLUMNS = ["dataset", "id", "split", "source", "label", "flag", "score", "distance", "match_dataset",
                 "match_id", "match_split", "kind", "exact", "leak", "n_near"]
SEMANTIC_KEYS = ["semantic_leakage_test_in_train", "semantic_leakage_fraction", "semantic_cross_dataset_images",
                 "semantic_near_within", "semantic_near_across_splits", "semantic_cross_source_images",
                 "semantic_flagged_images", "semantic_pairs", "semantic_train_test_pairs",
                 "semantic_cross_dataset_pairs", "semantic_cross_source_pairs", "semantic_max_cosine",
                 "semantic_failed"]


class Thumb(FeatureExtractor):
    """A test extractor: the raw 16x16 RGB pixels (no dependency on the classic descriptors; use it
    with center=True: uncentered raw pixels of natural images are all alike)."""

    name = "thumb_test"
    size = 16
    parallel = False

    def transform(self, images: np.ndarray) -> np.ndarray:
        return images.reshape(len(images), -1).astype(np.float32)


def _crop(a: np.ndarray, y: int, x: int, side: int) -> np.ndarray:
    return np.asarray(Image.fromarray(np.ascontiguousarray(a[y:y + side, x:x + side])).resize(
        (32, 32), Image.Resampling.BILINEAR))


def _jpeg(a: np.ndarray, quality: int = 50) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, "JPEG", quality=quality)
    with Image.open(buf) as im:
        return np.asarray(im.convert("RGB"))


@pytest.fixture(scope="module")
def cifar(shared_data) -> np.ndarray:
    """60 real CIFAR-10 test images (6 per class, a seeded pick), shape (60, 32, 32, 3)."""
    rng = np.random.default_rng(11)
    files = []
    for cls in sorted(p for p in (shared_data / "cifar10_test_jpg").iterdir() if p.is_dir()):
        names = sorted(cls.glob("*.jpg"))
        files += [names[i] for i in np.sort(rng.choice(len(names), 6, replace=False))]
    return np.stack([np.asarray(Image.open(p).convert("RGB")) for p in files])


@pytest.fixture(scope="module")
def planted(cifar, tmp_path_factory):
    """``a``: the 60 originals in train + 10 modified copies in test (5 crops keeping about 80% of the
    area, 5 JPEG quality 50 re-encodings, of originals 0, 6, ..., 54); ``b``: 3 JPEG copies of originals
    1, 7, 13 (another dataset)."""
    root = tmp_path_factory.mktemp("semdup")
    rng = np.random.default_rng(0)
    src = list(range(0, 60, 6))
    copies = []
    for k, i in enumerate(src):
        if k < 5:
            y, x = rng.integers(0, 4, 2)
            copies.append(_crop(cifar[i], int(y), int(x), 29))
        else:
            copies.append(_jpeg(cifar[i]))
    a = write_dataset(root / "a", np.concatenate([cifar, np.stack(copies)]), [0] * 70,
                      ["train"] * 60 + ["test"] * 10, source="cifar10", name="a")
    b = write_dataset(root / "b", np.stack([_jpeg(cifar[i]) for i in (1, 7, 13)]), [0] * 3, "test",
                      source="other", name="b")
    return open_dataset(a), open_dataset(b), src


def test_default_mode_output_unchanged(planted):
    a, b, _ = planted
    audit = get_audit("duplicates")
    res = audit([a, b], n_examples=0)
    assert list(res.summary) == PHASH_KEYS
    assert list(res.per_image.columns) == PHASH_COLUMNS
    assert set(res.tables) == {"leakage", "by_kind", "pairs"}
    assert "mode" not in res.info
    explicit = audit([a, b], n_examples=0, mode="phash", features="no_such_extractor")  # not used by pHash
    assert explicit.summary == res.summary


def test_semantic_mode_finds_crops_and_recompressions(planted):
    a, _, src = planted
    res = get_audit("duplicates")([a], mode="semantic")
    s, per = res.summary, res.per_image
    assert res.skipped is None
    assert list(s) == ["semantic_leakage_test_in_train", "semantic_leakage_fraction", "semantic_cross_dataset_images",
                       "semantic_near_within", "exact_within", "leakage_exact_test_in_train", "n_test",
                       "semantic_near_across_splits", "exact_across_splits", "semantic_cross_source_images",
                       "semantic_flagged_images", "semantic_pairs", "exact_pairs", "semantic_train_test_pairs",
                       "semantic_cross_dataset_pairs", "semantic_cross_source_pairs", "n_images",
                       "semantic_max_cosine", "semantic_failed"]
    # each copy's reported match is its own original, in train (a leak)
    copies = per.iloc[60:]
    found = copies["semantic_match_id"].to_numpy() == per["id"].to_numpy()[src]
    assert found.sum() >= 9 and found[:5].sum() >= 4  # measured: 10 of 10, the 5 crops included (gist, 0.08)
    assert (copies.loc[found, "semantic_kind"] == "leak").all() and copies.loc[found, "semantic_leak"].all()
    assert (copies.loc[found, "semantic_match_split"] == "train").all()
    assert s["semantic_leakage_test_in_train"] >= 9 and s["n_test"] == 10
    assert s["semantic_leakage_fraction"] == pytest.approx(s["semantic_leakage_test_in_train"] / 10)
    assert s["semantic_failed"] == 0 and s["exact_pairs"] == 0
    assert s["semantic_max_cosine"] == pytest.approx(res.info["semantic_max_cosine"])
    # few false pairs among the 60 distinct originals
    assert s["semantic_pairs"] - s["semantic_train_test_pairs"] <= 2
    assert (per["flag"] == per["semantic_flag"]).all() and (per["score"] == per["semantic_score"]).all()
    assert per["score"].between(0, 1).all() and (per.loc[per["flag"], "score"] >= 0.5).all()
    assert (per.loc[~per["flag"], "score"] == 0).all() and per.loc[~per["flag"], "semantic_distance"].isna().all()
    assert (per.loc[per["flag"], "semantic_distance"] <= s["semantic_max_cosine"]).all()
    assert "distance" not in per.columns and "near_pairs" not in s
    assert res.figures["semantic_examples"][:8] == b"\x89PNG\r\n\x1a\n"
    leak = res.tables["semantic_leakage"]
    assert leak.loc[leak["split"] == "test", "near_in_train"].iloc[0] == s["semantic_leakage_test_in_train"]


def test_leakage_direction_and_cross_dataset(planted):
    """Originals in train, copies in test: the copies are the leaked test images; copies in ``b`` are
    cross-dataset pairs, not leakage (another dataset)."""
    a, b, src = planted
    res = get_audit("duplicates")([a, b], mode="semantic", features=Thumb(), max_cosine=0.05, center=True, n_examples=0)
    s, per = res.summary, res.per_image
    leaked = per[per["semantic_leak"]]
    assert set(leaked["split"]) == {"test"} and set(leaked["dataset"]) == {"a"}
    assert set(leaked.index) == set(range(65, 70))  # the JPEG copies (raw 16x16 pixels miss the crops)
    assert s["semantic_leakage_test_in_train"] == 5
    assert (leaked["semantic_match_id"].to_numpy() == per["id"].to_numpy()[[src[i - 60] for i in leaked.index]]).all()
    b_rows = per[per["dataset"] == "b"]
    assert b_rows["semantic_flag"].all() and set(b_rows["semantic_kind"]) == {"cross_dataset"}
    assert list(b_rows["semantic_match_id"]) == list(per["id"].iloc[[1, 7, 13]])
    assert s["semantic_cross_dataset_pairs"] == 3 and s["semantic_cross_dataset_images"] == 6
    swapped = get_audit("duplicates")([a], mode="semantic", features=Thumb(), max_cosine=0.05, center=True,
                                      n_examples=0, train_split="test", test_split="train")
    assert set(swapped.per_image.loc[swapped.per_image["semantic_leak"], "split"]) == {"train"}


def test_both_modes_overlap_counts_are_consistent(planted):
    a, b, _ = planted
    audit = get_audit("duplicates")
    both = audit([a, b], mode="both", features=Thumb(), max_cosine=0.05, center=True, n_examples=0)
    phash = audit([a, b], n_examples=0)
    semantic = audit([a, b], mode="semantic", features=Thumb(), max_cosine=0.05, center=True, n_examples=0)
    s = both.summary
    assert list(s)[:len(PHASH_KEYS)] == PHASH_KEYS and set(SEMANTIC_KEYS) <= set(s)
    assert {k: s[k] for k in PHASH_KEYS} == phash.summary
    for key in SEMANTIC_KEYS:
        assert s[key] == semantic.summary[key]
    assert s["both_pairs"] + s["phash_only_pairs"] == s["near_pairs"] - s["exact_pairs"]
    assert s["both_pairs"] + s["semantic_only_pairs"] == s["semantic_pairs"] - s["exact_pairs"]
    assert s["semantic_only_pairs"] > 0  # the crops pHash misses
    ov = both.tables["overlap"]
    assert dict(ov["found_by"].value_counts()) == {k: v for k, v in (("both", s["both_pairs"]),
                                                   ("semantic", s["semantic_only_pairs"]),
                                                   ("phash", s["phash_only_pairs"])) if v}
    assert (ov.loc[ov["found_by"] != "phash", "cosine_distance"] <= 0.05).all()
    assert (ov.loc[ov["found_by"] == "phash", "cosine_distance"] > 0.05).all()
    assert (ov.loc[ov["found_by"] != "semantic", "phash_distance"] <= 4).all()
    # the semantic pairs are exactly the brute-force pairs of the same embedding
    feats = np.concatenate([extract_features(ds, Thumb()).values for ds in (a, b)])
    x = embed([feats], center=True)
    d = 1 - x @ x.T
    ids = np.concatenate([ds.manifest["id"].to_numpy() for ds in (a, b)])
    brute = {frozenset((ids[i], ids[j])) for i, j in itertools.combinations(range(len(ids)), 2) if d[i, j] <= 0.05}
    sem = ov[ov["found_by"] != "phash"]
    assert {frozenset(p) for p in zip(sem["id"], sem["match_id"])} == brute
    per = both.per_image
    assert (per["flag"] == (per["phash_flag"] | per["semantic_flag"])).all()
    assert (per["score"] == np.maximum(per["phash_score"], per["semantic_score"])).all()
    assert (per["phash_flag"] == phash.per_image["flag"]).all()
    assert set(PHASH_COLUMNS) < set(per.columns)


def test_failed_images_are_listed_with_the_reason(tmp_path, planted):
    a, _, _ = planted
    frame = a.manifest.copy()
    broken = frame.iloc[[0]].assign(id="0" * 64, path="broken/bad.png", split="test")
    frame = pd.concat([frame, broken], ignore_index=True)
    frame["phash"] = pd.array([None] * len(frame), dtype="UInt64")  # the semantic mode needs no hash
    root = tmp_path / "broken"
    (root / "broken").mkdir(parents=True)
    (root / "broken" / "bad.png").write_bytes(b"not a png")
    (root / "images").symlink_to(a.root / "images")
    DatasetWriter(root).write_manifest(frame)
    res = get_audit("duplicates")([open_dataset(root)], mode="semantic", features=Thumb(), max_cosine=0.05, center=True,
                                  n_examples=0)
    assert res.summary["semantic_failed"] == 1
    failed = res.tables["semantic_failed"]
    assert list(failed["path"]) == ["broken/bad.png"] and failed["extractor"].iloc[0] == "thumb_test"
    assert "UnidentifiedImageError" in failed["reason"].iloc[0] or "not_an_image" in failed["reason"].iloc[0]
    assert any("1 of 71 distinct images could not be described by thumb_test" in note for note in res.notes)
    assert not res.per_image["semantic_flag"].iloc[-1]
    assert res.summary["semantic_leakage_test_in_train"] == 5  # the others are still searched
    assert not any("no phash" in note for note in res.notes)


def test_bad_options_raise_value_errors(planted):
    a, _, _ = planted
    audit = get_audit("duplicates")
    with pytest.raises(ValueError, match=r"unknown mode='fast'\. Valid values are \{phash, semantic, both\}"):
        audit([a], mode="fast")
    with pytest.raises(ValueError, match=r"max_cosine must be a number in \(0, 1\), got 1\.5"):
        audit([a], mode="semantic", max_cosine=1.5)
    with pytest.raises(ValueError, match=r"max_cosine must be a number in \(0, 1\), got 'x'"):
        audit([a], mode="both", max_cosine="x")
    with pytest.raises(ValueError, match="empty extractor name"):
        audit([a], mode="semantic", features="hog+")
    with pytest.raises(ValueError, match="repeats an extractor"):
        audit([a], mode="semantic", features="hog+hog")
    with pytest.raises(ValueError, match=r"Unknown feature extractor 'no_such'"):
        audit([a], mode="semantic", features="no_such")
    with pytest.raises(ValueError, match="features_options must be a mapping"):
        audit([a], mode="semantic", features_options="size=32")
    with pytest.raises(ValueError, match="keyed by extractor name"):
        audit([a], mode="semantic", features=[Thumb(), "hog"], features_options={"size": 32})
    with pytest.raises(ValueError, match="pretrained features need a weights file"):
        audit([a], mode="semantic", features="pretrained")
    with pytest.raises(ValueError, match="weights file .*missing.pth not found"):
        audit([a], mode="semantic", features="pretrained", weights="missing.pth")
    with pytest.raises(ValueError, match="max_neighbors must be a positive integer"):
        audit([a], mode="semantic", max_neighbors=0)
    with pytest.raises(ValueError, match="center must be true or false"):
        audit([a], mode="semantic", center="yes")
    with pytest.raises(DatakitError, match=r"max_distance must be an integer in 0\.\.32"):  # still a DatakitError
        audit([a], max_distance=40)


def test_cli_style_options_reach_the_audit(planted):
    """``datakit audit -o duplicates.KEY=VALUE`` values, parsed as the CLI parses them."""
    a, _, _ = planted
    opts = dict(parse_option(t)[1:] for t in ("duplicates.mode=both", "duplicates.max_cosine=0.05",
                                              "duplicates.center=false", "duplicates.n_examples=0"))
    assert opts == {"mode": "both", "max_cosine": 0.05, "center": False, "n_examples": 0}
    run = run_audits([a], ["duplicates"], {"duplicates": {**opts, "features": Thumb()}})
    res = run.results[0]
    assert run.status["duplicates"] == "ok", res.skipped
    assert res.info["mode"] == "both" and res.info["semantic_center"] is False
    assert res.summary["semantic_max_cosine"] == 0.05 and "both_pairs" in res.summary


def test_global_features_and_weights_options(planted):
    """``datakit audit --features A,B --weights W`` reach every audit: the first space is used, and
    weights only matter to ``pretrained``."""
    a, _, _ = planted
    run = run_audits([a], ["duplicates"], {"duplicates": {"mode": "semantic", "n_examples": 0}},
                     features="tiny,hog", weights=__file__)
    res = run.results[0]
    assert run.status["duplicates"] == "ok", res.skipped
    assert [d.split("(")[0] for d in res.info["semantic_features"]] == ["tiny"]
    assert res.summary["semantic_leakage_test_in_train"] >= 5  # measured 6 of 10 (tiny at max_cosine 0.08)


def test_cosine_pairs_blocked_equals_brute_force():
    rng = np.random.default_rng(3)
    base = rng.normal(size=(40, 16))
    x = np.concatenate([base, base[:15] + rng.normal(scale=0.2, size=(15, 16))])
    e = embed([x], center=False)
    d = 1 - e.astype(np.float64) @ e.T.astype(np.float64)
    brute = [(i, j) for i, j in itertools.combinations(range(len(e)), 2) if d[i, j] <= 0.05]
    for block_elems in (1, 7 * 55, 1 << 24):  # one row per block, 7 rows, everything at once
        pairs, dist, truncated = cosine_pairs(e, 0.05, block_elems=block_elems)
        assert [tuple(p) for p in pairs] == brute and truncated == 0
        np.testing.assert_allclose(dist, d[pairs[:, 0], pairs[:, 1]], atol=1e-5)
    assert len(brute) >= 15
    # a cluster of 6 equal vectors: each row keeps its 2 nearest later rows
    pairs, dist, truncated = cosine_pairs(embed([np.ones((6, 3))], center=False), 0.01, max_neighbors=2)
    assert truncated == 3 and np.bincount(pairs[:, 0]).max() == 2 and len(pairs) == 2 + 2 + 2 + 2 + 1
    only_a, both, only_b = overlap_pairs(np.array([[0, 1], [3, 2]]), np.array([[2, 3], [4, 5]]), 6)
    assert only_a.tolist() == [[0, 1]] and both.tolist() == [[2, 3]] and only_b.tolist() == [[4, 5]]
