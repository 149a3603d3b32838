"""Split assignment: stratification, the per-class protocol, determinism, groups."""
from __future__ import annotations

import numpy as np
import pytest

from datakit.store.splits import assign_splits


def _labels(seed=0, n=1000, k=5):
    rng = np.random.default_rng(seed)
    return [str(v) for v in rng.integers(0, k, n)]


def test_fractions_are_stratified_per_class():
    labels = _labels()
    splits = assign_splits(labels, strategy="fractions", fractions=(0.7, 0.1, 0.2), seed=3)
    labels = np.array(labels)
    for c in np.unique(labels):
        s = splits[labels == c]
        n = len(s)
        assert abs((s == "train").sum() - 0.7 * n) <= 1
        assert abs((s == "val").sum() - 0.1 * n) <= 1
        assert abs((s == "test").sum() - 0.2 * n) <= 1


def test_deterministic_for_a_seed_and_different_across_seeds():
    labels = _labels()
    a = assign_splits(labels, seed=1)
    b = assign_splits(labels, seed=1)
    c = assign_splits(labels, seed=2)
    assert (a == b).all()
    assert (a != c).any()


def test_adding_a_class_does_not_reshuffle_others():
    labels = _labels(k=3)
    a = assign_splits(labels, seed=5)
    b = assign_splits(labels + ["new"] * 20, seed=5)
    assert (a == b[: len(labels)]).all()


def test_per_class_protocol():
    labels = ["a"] * 50 + ["b"] * 40 + ["c"] * 31
    splits = assign_splits(labels, strategy="per-class", per_class=30, val_per_class=1, seed=0)
    labels = np.array(labels)
    for c, n in (("a", 50), ("b", 40), ("c", 31)):
        s = splits[labels == c]
        assert (s == "train").sum() == 30
        assert (s == "val").sum() == 1
        assert (s == "test").sum() == n - 31


def test_groups_never_straddle_splits():
    rng = np.random.default_rng(0)
    labels = _labels(n=600, k=3)
    groups = rng.integers(0, 150, len(labels))  # groups of about 4 images
    splits = assign_splits(labels, groups, fractions=(0.6, 0.2, 0.2), seed=0)
    for g in np.unique(groups):
        assert len(set(splits[groups == g])) == 1
    # still roughly balanced
    assert 0.45 < (splits == "train").mean() < 0.75


def test_fixed_splits_are_kept_and_pull_their_group():
    labels = ["a"] * 6
    fixed = ["train", "test", None, None, None, "test"]
    groups = [0, 1, 1, 2, 3, 4]  # image 2 is a near copy of fixed-test image 1
    splits = assign_splits(labels, groups, fixed=fixed, fractions=(0.5, 0, 0.5), seed=0)
    assert splits[0] == "train" and splits[1] == "test" and splits[5] == "test"
    assert splits[2] == "test"  # follows its group
    # a group with members fixed to different splits goes whole to the first one's split
    s2 = assign_splits(["a", "a"], [0, 0], fixed=["train", "test"])
    assert list(s2) == ["train", "train"]


@pytest.mark.parametrize("kwargs,pattern", [
    ({"strategy": "random"}, r"Unknown split strategy 'random'.*fractions, per-class"),
    ({"fractions": (0.5, 0.5, 0.5)}, r"summing to 1"),
    ({"strategy": "per-class"}, r"per_class must be a positive integer"),
    ({"groups": [0]}, r"same length"),
])
def test_bad_arguments(kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        assign_splits(["a", "b"], **kwargs)
