"""Classic descriptors (hog, color_hist, gist, tiny): shapes and finite values on real photos and odd files,
agreement with scikit-image, what each descriptor responds to, a linear probe, option errors."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from datakit.features import FeatureError, decode_for_features, extract_features, get_extractor, list_features
from datakit.features.classic import ColorHistogram, GistFeatures, HOGFeatures, TinyImage
from datakit.registry import UnknownNameError

#: name -> (class, output width at the defaults, decoded mode, decoded size)
CLASSIC = {
    "hog": (HOGFeatures, 1764, "L", 64),
    "color_hist": (ColorHistogram, 360, "RGB", 64),
    "gist": (GistFeatures, 512, "L", 64),
    "tiny": (TinyImage, 768, "RGB", 16),
}


def _grating(period: float, vertical: bool, size: int = 64) -> np.ndarray:
    """A sine grating, shape (size, size) uint8; ``vertical``: the stripes run up-down (intensity varies in x)."""
    x = np.arange(size)
    row = 127.5 + 120 * np.sin(2 * np.pi * x / period)
    g = np.tile(row, (size, 1))
    return np.rint(g if vertical else g.T).astype(np.uint8)


def test_registered_with_their_defaults():
    assert set(CLASSIC) <= set(list_features())
    for name, (cls, _, mode, size) in CLASSIC.items():
        ext = get_extractor(name)
        assert type(ext) is cls and ext.name == name and ext.parallel is True
        assert ext.mode == mode and ext.size == size
    assert get_extractor("hog").params() == {"block_norm": "L2-Hys", "cells_per_block": 2, "orientations": 9,
                                             "pixels_per_cell": 8, "size": 64}


@pytest.mark.parametrize("name", sorted(CLASSIC))
def test_real_photos_shapes_dtypes_finite(name, classic_photos):
    _, dim, _, _ = CLASSIC[name]
    for ds in classic_photos.values():
        fm = extract_features(ds, name, workers=0)
        assert fm.values.shape == (len(ds.manifest), dim) and fm.values.dtype == np.float32
        assert np.isfinite(fm.values).all() and fm.failed.empty and fm.info["dim"] == dim
        assert np.ptp(fm.values, axis=0).max() > 0  # the photos are told apart, not all one vector


@pytest.mark.parametrize("name", sorted(CLASSIC))
def test_odd_images_dataset_and_files(name, odd_images):
    ds, files = odd_images
    _, dim, mode, size = CLASSIC[name]
    fm = extract_features(ds, name, workers=0)
    assert fm.values.shape == (8, dim) and np.isfinite(fm.values).all() and fm.failed.empty
    ext = get_extractor(name)
    # the original files too (CMYK, 16-bit, 1x1, RGBA, palette, LA, 300x3, blank), straight from disk
    batch = np.stack([decode_for_features(p, ext.size, ext.mode) for p in files.values()])
    assert batch.shape[1:3] == (size, size) and batch.dtype == np.uint8
    out = ext.transform(batch)
    assert out.shape == (8, dim) and out.dtype == np.float32 and np.isfinite(out).all()


@pytest.mark.parametrize("name", sorted(CLASSIC))
def test_blank_upsampled_and_grey_inputs_are_finite(name):
    ext = get_extractor(name)
    one = np.asarray(Image.fromarray(np.array([[[200, 30, 90]]], np.uint8)).resize((ext.size,) * 2,
                                                                                   Image.Resampling.BILINEAR))
    rgb = np.stack([np.zeros_like(one), np.full_like(one, 255), one])
    grey = rgb[..., 0]
    for batch in (rgb, grey):
        out = ext.transform(batch)
        assert out.shape == (3, CLASSIC[name][1])  # greyscale batches too (repeated to RGB where colour is used)
        assert out.dtype == np.float32 and np.isfinite(out).all()
    empty = ext.transform(np.zeros((0, ext.size, ext.size, 3), np.uint8))
    assert empty.shape == (0, CLASSIC[name][1])
    with pytest.raises(FeatureError, match=r"expected images of shape \(N, H, W\) or \(N, H, W, 3\)"):
        ext.transform(np.zeros((2, ext.size, ext.size, 4), np.uint8))
    with pytest.raises(FeatureError, match=r"expected uint8 images \(0\.\.255\), got dtype float64"):
        ext.transform(np.zeros((2, ext.size, ext.size, 3)))


def test_blank_images_have_no_structure():
    blank = np.full((2, 64, 64, 3), 77, np.uint8)
    assert not get_extractor("hog").transform(blank[..., 0]).any()
    assert not get_extractor("gist").transform(blank[..., 0]).any()
    assert not get_extractor("tiny").transform(blank[:, :16, :16]).any()   # zeros, not NaN
    h = get_extractor("color_hist").transform(blank).reshape(2, 5, 72)
    assert (h.max(axis=2) == 1).all()                                       # every block: one full bin


def test_hog_is_skimage_hog_of_the_greyscale_image(classic_photos):
    from skimage.feature import hog

    ds = classic_photos["imagenette"]
    root, paths = ds.root, ds.manifest["path"].tolist()[:12]
    for opts in ({}, {"orientations": 6, "pixels_per_cell": 16, "block_norm": "L1"}):
        ext = get_extractor("hog", **opts)
        fm = extract_features(ds, ext, positions=range(12), workers=0)
        want = np.stack([hog(np.asarray(Image.open(root / p).convert("L").resize((64, 64), Image.Resampling.BILINEAR)),
                             orientations=ext.orientations, pixels_per_cell=(ext.pixels_per_cell,) * 2,
                             cells_per_block=(2, 2), block_norm=ext.block_norm) for p in paths])
        assert fm.values.shape == want.shape == (12, ext.dim(64, 64))
        np.testing.assert_allclose(fm.values, want, rtol=1e-5, atol=1e-6)
    # an RGB batch is turned to luma exactly as Pillow's convert("L") does
    rgb = np.stack([decode_for_features(root / p, 64, "RGB") for p in paths[:4]])
    grey = np.stack([np.asarray(Image.fromarray(a).convert("L")) for a in rgb])
    for ext in (HOGFeatures(), GistFeatures()):
        np.testing.assert_array_equal(ext.transform(rgb), ext.transform(grey))


def test_gist_orientation_channels_follow_the_stripes():
    ext = GistFeatures()
    v, h = ext.transform(np.stack([_grating(8, True), _grating(8, False)])).reshape(2, 4, 8, 16)
    pv, ph = v.sum(axis=(0, 2)), h.sum(axis=(0, 2))                      # energy per orientation
    assert pv.argmax() == 0 and ph.argmax() == 4                          # 0 vs 90 degrees
    assert pv[0] > 5 * pv[4] and ph[4] > 5 * ph[0]
    np.testing.assert_allclose(np.roll(pv, 4), ph, rtol=0.02, atol=0.005 * ph.max())  # the profile, turned 90 deg
    assert abs(v.sum() - h.sum()) < 0.01 * v.sum()                        # same total energy
    # finer stripes put their energy at the finer scales
    fine, coarse = ext.transform(np.stack([_grating(3.5, True), _grating(16, True)])).reshape(2, 4, 8, 16)
    assert fine.sum(axis=(1, 2)).argmax() == 0 and coarse.sum(axis=(1, 2)).argmax() >= 2


def test_gist_of_a_rotated_photo_is_the_permuted_gist(classic_photos):
    ds = classic_photos["imagenette"]
    x = np.stack([decode_for_features(ds.root / p, 64, "L") for p in ds.manifest["path"][:10]])
    ext = GistFeatures()
    g = ext.transform(x).reshape(10, 4, 8, 4, 4)
    r = ext.transform(np.rot90(x, 1, axes=(1, 2))).reshape(10, 4, 8, 4, 4)
    # a quarter turn: orientation j -> j + 4 (mod 8), the 4x4 grid turns with the image
    turned = np.rot90(np.roll(g, 4, axis=2), 1, axes=(3, 4))
    scale = np.abs(r).max()
    assert np.abs(turned - r).max() < 0.01 * scale
    assert np.abs(g - r).max() > 0.3 * scale                              # GIST is not rotation-invariant


def test_color_hist_blocks_sum_to_one(classic_photos):
    ds = classic_photos["cifar10"]
    for opts, cells, bins in (({}, 5, 72), ({"space": "lab", "bins": 4, "grid": (1, 2, 4)}, 21, 64),
                              ({"space": "rgb", "bins": (2, 3, 4), "grid": [3]}, 9, 24)):
        fm = extract_features(ds, "color_hist", workers=0, **opts)
        h = fm.values.reshape(len(ds.manifest), cells, bins)
        np.testing.assert_allclose(h.sum(axis=2), 1.0, atol=1e-5)
        assert (h >= 0).all()
    # greyscale pixels are achromatic: all in the lowest-saturation bins (HSV, saturation is the middle channel)
    grey = get_extractor("color_hist").transform(np.stack([decode_for_features(ds.root / p, 64, "L")
                                                           for p in ds.manifest["path"][:5]]))
    hsv = grey.reshape(5, 5, 8, 3, 3)
    np.testing.assert_allclose(hsv[:, :, :, 0, :].sum(axis=(2, 3)), 1.0, atol=1e-6)
    # the quarters are where they should be: a red top-left quarter, the rest blue
    img = np.zeros((1, 64, 64, 3), np.uint8)
    img[..., 2] = 255
    img[0, :32, :32] = (255, 0, 0)
    q = ColorHistogram(bins=(6, 2, 2)).transform(img).reshape(5, 6, 2, 2)
    assert q[1, 0, 1, 1] == 1 and q[2, 4, 1, 1] == 1 and q[3, 4, 1, 1] == 1 and q[4, 4, 1, 1] == 1
    assert q[0, 0, 1, 1] == pytest.approx(0.25) and q[0, 4, 1, 1] == pytest.approx(0.75)


def test_tiny_is_zero_mean_unit_norm(classic_photos):
    for ds in classic_photos.values():
        v = extract_features(ds, "tiny", workers=0).values
        np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, rtol=1e-5)
        np.testing.assert_allclose(v.mean(axis=1), 0.0, atol=1e-6)
    ds = classic_photos["imagenette"]
    grey = extract_features(ds, "tiny", workers=0, size=32, mode="L").values
    assert grey.shape == (60, 32 * 32)
    np.testing.assert_allclose(np.linalg.norm(grey, axis=1), 1.0, rtol=1e-5)
    # tiny images of the same picture at two brightnesses and contrasts are the same vector
    x = decode_for_features(ds.root / ds.manifest["path"][0], 16, "RGB").astype(float)
    a, b = TinyImage().transform(np.stack([x, 0.5 * x + 40]).astype(np.uint8))
    assert float(a @ b) > 0.999


def test_linear_probe_tells_cifar_from_imagenette(classic_photos):
    """A logistic regression on GIST tells the datasets apart on held-out folds (measured: 0.98)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    ds = list(classic_photos.values())
    x = np.concatenate([extract_features(d, "gist", workers=0).values for d in ds])
    y = np.repeat([0, 1], [len(d.manifest) for d in ds])
    probe = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=2000))
    acc = cross_val_score(probe, x, y, cv=StratifiedKFold(5, shuffle=True, random_state=0)).mean()
    assert acc >= 0.85


@pytest.mark.parametrize("name, options, match", [
    ("hog", {"bogus": 1}, r"feature extractor 'hog': .*bogus"),
    ("hog", {"orientations": 0}, r"hog: orientations must be an integer >= 2, got 0"),
    ("hog", {"orientations": 9.0}, r"orientations must be an integer >= 2, got 9.0"),
    ("hog", {"pixels_per_cell": True}, r"pixels_per_cell must be an integer >= 1, got True"),
    ("hog", {"block_norm": "L3"}, r"unknown value 'L3' for block_norm\. Valid values are "
                                  r"\{'L1', 'L1-sqrt', 'L2', 'L2-Hys'\}"),
    ("hog", {"size": 12}, r"size 12 is smaller than one block .*16 px"),
    ("hog", {"size": 4}, r"size must be an integer >= 8, got 4"),
    ("color_hist", {"space": "yuv"}, r"unknown value 'yuv' for space\. Valid values are \{'hsv', 'lab', 'rgb'\}"),
    ("color_hist", {"bins": (8, 3)}, r"bins must be an integer or 3 integers >= 1, got \(8, 3\)"),
    ("color_hist", {"grid": []}, r"grid must be a non-empty sequence of integers >= 1, got \[\]"),
    ("color_hist", {"grid": (1, 80)}, r"grid 80 is finer than the image \(64 px\)"),
    ("gist", {"scales": 0}, r"gist: scales must be an integer >= 1, got 0"),
    ("gist", {"grid": 2.5}, r"grid must be an integer >= 1, got 2.5"),
    ("gist", {"prefilter": -1}, r"prefilter must be a positive number \(cycles per image\) or None, got -1"),
    ("gist", {"prefilter": "yes"}, r"prefilter must be a positive number"),
    ("tiny", {"mode": "CMYK"}, r"unknown value 'CMYK' for mode\. Valid values are \{'RGB', 'L'\}"),
    ("tiny", {"size": "16"}, r"size must be an integer >= 8, got '16'"),
])
def test_bad_options_raise_feature_error(name, options, match):
    with pytest.raises(FeatureError, match=match):
        get_extractor(name, **options)


def test_unknown_name_lists_the_valid_ones():
    with pytest.raises(UnknownNameError, match=r"Unknown feature extractor 'hgo'\. Did you mean 'hog'\? "
                                               r"Valid values are \{.*color_hist.*gist.*hog.*tiny.*\}"):
        get_extractor("hgo")


def test_options_change_the_output_width():
    x = np.random.default_rng(3).integers(0, 256, (2, 64, 64, 3), dtype=np.uint8)
    assert get_extractor("hog", pixels_per_cell=16, cells_per_block=1).transform(x).shape == (2, 4 * 4 * 9)
    assert get_extractor("gist", scales=2, orientations=4, grid=2).transform(x).shape == (2, 2 * 4 * 4)
    assert get_extractor("gist", prefilter=None).transform(x).shape == (2, 512)
    assert get_extractor("color_hist", bins=4, grid=(1,)).transform(x).shape == (2, 64)
    g32 = get_extractor("gist", size=32)
    assert g32.transform(x[:, :32, :32]).shape == (2, 512) and g32.describe().startswith("gist(")
