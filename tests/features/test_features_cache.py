"""extract_features and its cache (datakit.features.base): reuse, partial rows, keys, stale caches,
resumption, unreadable images, read-only datasets, workers, progress."""
from __future__ import annotations

import json
import pathlib

import numpy as np
import pytest

from datakit import open_dataset
from datakit.features import CACHE_DIR, FeatureError, extract_features, get_extractor
from datakit.features.classic import HOGFeatures

from feature_fixtures import build_folder, fresh_copy


class _StopsAfter(HOGFeatures):
    """HOG whose transform raises after ``calls`` batches (an interrupted run); not registered.

    It inherits the name ``hog`` and has the same public settings, so it shares the cache of ``hog``.
    """

    def __init__(self, *, calls: int, **options) -> None:
        super().__init__(**options)
        self._calls_left = calls

    def transform(self, images):
        if self._calls_left <= 0:
            raise RuntimeError("interrupted")
        self._calls_left -= 1
        return super().transform(images)


def _cache_dirs(ds) -> list[pathlib.Path]:
    base = ds.root / CACHE_DIR
    return sorted(base.iterdir()) if base.exists() else []


def test_second_call_reads_the_cache(cifar40):
    first = extract_features(cifar40, "hog", workers=0)
    assert first.info["computed"] == 40 and first.info["from_cache"] == 0
    assert first.info["cache"] is not None and len(_cache_dirs(cifar40)) == 1
    again = extract_features(open_dataset(cifar40.root), "hog", workers=0)
    assert again.info["computed"] == 0 and again.info["from_cache"] == 40
    np.testing.assert_array_equal(again.values, first.values)
    assert again.values.dtype == np.float32 and np.array_equal(again.positions, np.arange(40))


def test_a_subset_then_all_computes_only_the_rest(cifar40):
    part = extract_features(cifar40, "gist", positions=[5, 1, 30, 1], workers=0)
    assert part.info["computed"] == 3 and part.values.shape == (4, 512)
    np.testing.assert_array_equal(part.positions, [5, 1, 30, 1])
    np.testing.assert_array_equal(part.values[1], part.values[3])        # rows in the order asked for
    full = extract_features(cifar40, "gist", workers=0)
    assert full.info["computed"] == 37 and full.info["from_cache"] == 3
    np.testing.assert_array_equal(full.values[[5, 1, 30]], part.values[:3])
    fresh = extract_features(cifar40, "gist", workers=0, cache=False)
    np.testing.assert_allclose(full.values, fresh.values, rtol=1e-6, atol=1e-7)


def test_another_option_is_another_cache(cifar40):
    a = extract_features(cifar40, "hog", workers=0)
    b = extract_features(cifar40, "hog", workers=0, orientations=6)
    assert b.info["computed"] == 40 and b.values.shape == (40, 1176) and a.info["cache"] != b.info["cache"]
    assert len(_cache_dirs(cifar40)) == 2                                 # both kept: same manifest
    assert extract_features(cifar40, "hog", workers=0).info["computed"] == 0
    assert extract_features(cifar40, "hog", workers=0, orientations=6).info["computed"] == 0
    meta = json.loads((pathlib.Path(b.info["cache"]) / "meta.json").read_text())
    assert meta["key"]["params"]["orientations"] == 6 and meta["key"]["checksum"] == cifar40.checksum


def test_a_rebuilt_dataset_does_not_reuse_the_cache(cifar_built, tmp_path):
    root, src = cifar_built
    ds = build_folder(tmp_path, "cifar10", src, out=tmp_path / "ds")
    first = extract_features(ds, "tiny", workers=0)
    old = pathlib.Path(first.info["cache"])
    assert old.is_dir()
    rebuilt = build_folder(tmp_path, "cifar10", src, out=tmp_path / "ds", split_seed=1)  # other splits
    assert rebuilt.checksum != ds.checksum
    second = extract_features(rebuilt, "tiny", workers=0)
    assert second.info["computed"] == 40 and second.info["cache"] != first.info["cache"]
    assert not old.exists() and _cache_dirs(rebuilt) == [pathlib.Path(second.info["cache"])]
    # same images: same features, in the rebuilt manifest's order
    by_id = dict(zip(ds.manifest["id"], first.values))
    np.testing.assert_array_equal(second.values, np.stack([by_id[i] for i in rebuilt.manifest["id"]]))


def test_an_interrupted_run_resumes(cifar40):
    with pytest.raises(FeatureError, match=r"failed on a batch of 8 images: error:RuntimeError"):
        extract_features(cifar40, _StopsAfter(calls=3), workers=0, chunk_size=8)
    resumed = extract_features(cifar40, "hog", workers=0, chunk_size=8)
    assert resumed.info["computed"] == 40 - 3 * 8 and resumed.info["from_cache"] == 24
    whole = extract_features(cifar40, "hog", workers=0, cache=False)
    np.testing.assert_array_equal(resumed.values, whole.values)


def test_a_corrupt_image_is_a_failed_row(cifar40):
    bad_pos = 7
    (cifar40.root / cifar40.manifest["path"][bad_pos]).write_bytes(b"this is not a PNG file at all" * 4)
    fm = extract_features(cifar40, "color_hist", workers=0)
    assert fm.values.shape == (40, 360)
    assert np.isnan(fm.values[bad_pos]).all() and not fm.ok[bad_pos] and fm.ok.sum() == 39
    assert np.isfinite(np.delete(fm.values, bad_pos, axis=0)).all()
    assert fm.failed["position"].tolist() == [bad_pos] and fm.info["failed"] == 1
    assert fm.failed["id"].tolist() == [cifar40.manifest["id"][bad_pos]]
    assert fm.failed["reason"].iloc[0].startswith("not_an_image: ")
    again = extract_features(cifar40, "color_hist", workers=0)             # the failure is cached too
    assert again.info["computed"] == 0 and again.failed["position"].tolist() == [bad_pos]
    assert np.isnan(again.values[bad_pos]).all()


def test_a_read_only_dataset_still_gets_features(cifar40, monkeypatch):
    # running as root makes chmod ineffective: make every directory creation under the dataset fail instead
    real_mkdir = pathlib.Path.mkdir

    def read_only_mkdir(self, *args, **kwargs):
        if str(self).startswith(str(cifar40.root)):
            raise PermissionError(13, "Read-only file system", str(self))
        return real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(pathlib.Path, "mkdir", read_only_mkdir)
    fm = extract_features(cifar40, "tiny", workers=0)
    assert fm.values.shape == (40, 768) and np.isfinite(fm.values).all() and fm.info["cache"] is None
    assert not (cifar40.root / CACHE_DIR).exists()
    assert extract_features(cifar40, "tiny", workers=0).info["computed"] == 40   # nothing cached, nothing broken
    monkeypatch.undo()
    np.testing.assert_array_equal(extract_features(cifar40, "tiny", workers=0).values, fm.values)


def test_two_workers_give_the_same_values(cifar40, cifar_built, tmp_path):
    serial = extract_features(cifar40, "gist", workers=0, chunk_size=8)
    other = fresh_copy(cifar_built[0] / "built", tmp_path / "other")
    seen = []
    parallel = extract_features(other, "gist", workers=2, chunk_size=8, progress=seen.append)
    assert parallel.info["computed"] == 40 and sum(seen) == 40 and len(seen) == 5
    np.testing.assert_array_equal(parallel.values, serial.values)


def test_progress_counts_cached_rows(cifar40):
    extract_features(cifar40, "tiny", positions=range(10), workers=0)
    seen = []
    extract_features(cifar40, "tiny", workers=0, chunk_size=16, progress=seen.append)
    assert seen == [10, 16, 14]


def test_extractor_object_and_option_errors(cifar40):
    ext = get_extractor("hog", orientations=6)
    assert extract_features(cifar40, ext, positions=[0], workers=0).values.shape == (1, 1176)
    with pytest.raises(TypeError, match="options are only accepted with an extractor name"):
        extract_features(cifar40, ext, orientations=9)
    with pytest.raises(FeatureError, match=r"positions out of range .*\(40 images\)"):
        extract_features(cifar40, "hog", positions=[40])
    with pytest.raises(FeatureError, match=r"feature extractor 'hog': .*unexpected keyword argument 'bogus'"):
        get_extractor("hog", bogus=1)
