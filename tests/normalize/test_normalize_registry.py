"""The NORMALIZERS registry, get_normalizer's up-front checks, usps / resize / none."""
from __future__ import annotations

import pickle

import numpy as np
import pytest
from PIL import Image

from datakit.errors import DatakitError, ImageRejected
from datakit.normalize import (NORMALIZERS, NormalizerOptionError, get_batch_normalizer, get_normalizer,
                               normalizer_options)
from datakit.normalize.usps import to_usps_range
from datakit.registry import UnknownNameError


def test_registered_names():
    assert NORMALIZERS.names() == ["caltech", "imagenet", "mnist", "none", "resize", "usps"]


def test_unknown_normalizer_lists_the_valid_ones():
    with pytest.raises(UnknownNameError, match=r"Unknown normalizer 'minst'. Did you mean 'mnist'\? "
                                               r"Valid values are \{caltech, imagenet, mnist, none, resize, usps\}"):
        get_normalizer("minst")


def test_unknown_option_names_the_valid_options():
    with pytest.raises(NormalizerOptionError, match=r"normalizer 'mnist' has no option 'size'. Valid options are "
                                                    r"\{box, canvas, center, polarity, resample, stretch, threshold\}"):
        get_normalizer("mnist", size=20)
    with pytest.raises(DatakitError, match=r"Valid options are \{mode, width\}"):
        get_normalizer("resize", height=10)


@pytest.mark.parametrize("name, options, message", [
    ("mnist", {"center": "middle"}, r"Unknown value 'middle' for center. Valid values are \{'mass', 'box'\}"),
    ("mnist", {"polarity": "inverted"}, "Valid values are {'auto', 'light-on-dark', 'dark-on-light'}"),
    ("mnist", {"box": 30}, r"box \(30\) must not exceed canvas \(28\)"),
    ("mnist", {"box": 0}, "box must be a positive integer"),
    ("mnist", {"canvas": 28.5}, "canvas must be a positive integer"),
    ("mnist", {"threshold": 300}, r"threshold must be a number in \[0, 255\)"),
    ("mnist", {"resample": "nearest"}, "Valid values are {bicubic, box, lanczos, triangle}"),
    ("mnist", {"stretch": "yes"}, "stretch must be true or false"),
    ("usps", {"range": "0-1"}, "Valid values are {'uint8', 'pm1'}"),
    ("usps", {"size": 16, "box": 20}, r"box \(20\) must not exceed canvas \(16\)"),
    ("resize", {"width": -3}, "width must be a positive integer"),
    ("resize", {"mode": "CMYK"}, "Valid values are {'RGB', 'L'}"),
    ("none", {"mode": "LA"}, "Valid values are {'RGB', 'L'}"),
])
def test_bad_option_values_fail_before_any_work(name, options, message):
    with pytest.raises(NormalizerOptionError, match=message):
        get_normalizer(name, **options)


def test_normalizers_pickle_and_run():
    digit = np.zeros((40, 40), np.uint8)
    digit[5:35, 15:25] = 255
    for name, options, shape in [("mnist", {}, (28, 28)), ("usps", {}, (16, 16)), ("resize", {"width": 20}, (20, 20, 3)),
                                 ("none", {"mode": "L"}, (40, 40))]:
        fn = pickle.loads(pickle.dumps(get_normalizer(name, **options)))
        out = fn(digit)
        assert out.shape == shape and out.dtype == np.uint8, name


def test_normalizer_options_lists_defaults():
    assert normalizer_options("mnist") == {"box": 20, "canvas": 28, "center": "mass", "polarity": "auto",
                                           "threshold": 32, "resample": "lanczos", "stretch": True}
    assert normalizer_options("resize") == {"width": 300, "mode": "RGB"}


def test_usps_fills_the_16x16_frame_and_converts_range():
    digit = np.full((50, 30), 255, np.uint8)
    digit[10:40, 12:18] = 0  # a dark stroke on white paper
    out = get_normalizer("usps")(digit)
    assert out.shape == (16, 16) and out.dtype == np.uint8
    rows = np.flatnonzero(out.max(1) > 128)
    assert rows[0] == 0 and rows[-1] == 15  # the long side fills the frame (USPS style)
    assert abs(out.sum(0).argmax() - 7.5) <= 1  # centered
    pm1 = to_usps_range(out)
    assert pm1.dtype == np.float32 and pm1.min() == -1.0 and pm1.max() == 1.0
    assert get_normalizer("usps", range="pm1")(digit).dtype == np.uint8  # stored as uint8 either way
    with pytest.raises(TypeError, match="uint8"):
        to_usps_range(pm1)
    with pytest.raises(ImageRejected, match="blank"):
        get_normalizer("usps")(np.zeros((16, 16), np.uint8))


def test_usps_normalizer_on_real_usps(shared_data):
    from datakit.sources.usps import read_usps

    images, _, _ = read_usps(shared_data / "usps" / "usps.h5", "test")
    u8 = (images[:50] * 255).round().astype(np.uint8)
    out, blank = get_batch_normalizer("usps")(u8)
    assert not blank.any() and out.shape == (50, 16, 16)
    single = np.stack([get_normalizer("usps")(x) for x in u8])
    assert np.abs(single.astype(int) - out).max() <= 1
    # USPS digits already fill their frame: normalizing them again changes little
    from datakit.normalize.fidelity import pearson_rows

    assert pearson_rows(out, u8).mean() > 0.9


def test_resize_keeps_aspect_ratio_and_modes():
    rgb = np.zeros((150, 400, 3), np.uint8)
    rgb[:, :200] = (255, 0, 0)
    out = get_normalizer("resize")(rgb)
    assert out.shape == (112, 300, 3)
    assert tuple(out[50, 10]) == (255, 0, 0)
    gray = get_normalizer("resize", width=100, mode="L")(Image.fromarray(rgb))
    assert gray.shape == (38, 100)
    same = get_normalizer("resize", width=400)(rgb)
    assert np.array_equal(same, rgb)
    cmyk = Image.new("CMYK", (60, 30), (0, 0, 0, 255))
    assert get_normalizer("resize", width=30)(cmyk).max() < 5  # K=255 is black
    pal = Image.new("P", (10, 10), 0)
    pal.info["transparency"] = 0
    assert get_normalizer("none")(pal).min() == 255  # transparent -> white


def test_batch_normalizer_only_for_digit_styles():
    assert get_batch_normalizer("resize") is None
    assert get_batch_normalizer("none") is None
    with pytest.raises(NormalizerOptionError):
        get_batch_normalizer("mnist", bogus=1)
