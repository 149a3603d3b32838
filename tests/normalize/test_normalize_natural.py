"""Natural-image normalizers: ``imagenet`` (resize 256, centre crop 224) and ``caltech`` (300 px wide)."""
from __future__ import annotations

import doctest
import pickle
import shutil

import numpy as np
import pytest
from PIL import Image

import datakit.normalize
import datakit.normalize.imagenet
import datakit.normalize.resize
from datakit import open_dataset
from datakit.build import build_dataset
from datakit.normalize import NORMALIZERS, NormalizerOptionError, get_normalizer, normalizer_options
from datakit.normalize.imagenet import crop_box, imagenet, resized_size
from datakit.sources.decode import to_array


@pytest.mark.parametrize("module", [datakit.normalize, datakit.normalize.imagenet, datakit.normalize.resize])
def test_docstring_examples_run(module):
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0


# --------------------------------------------------------------------------- imagenet: shapes


@pytest.mark.parametrize("hw", [(375, 500), (500, 375), (224, 224), (256, 256), (100, 1000), (1000, 100),
                                (1, 1), (3, 2000), (2000, 3), (17, 23)])
def test_imagenet_output_shape_for_any_aspect_ratio(hw):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, hw + (3,), dtype=np.uint8)
    assert imagenet(image).shape == (224, 224, 3)
    assert imagenet(image, mode="L").shape == (224, 224)
    assert imagenet(image, size=112).shape == (112, 112, 3)            # resize defaults to 128
    assert imagenet(image, size=32, resize=48).shape == (32, 32, 3)
    assert imagenet(image).dtype == np.uint8


def test_imagenet_default_resize_scales_with_size():
    assert normalizer_options("imagenet") == {"size": 224, "resize": None, "mode": "RGB"}
    # 256 for 224, i.e. the shorter side of a 448x600 image goes 448 -> 256 before the crop
    assert resized_size(600, 448, 256) == (342, 256)
    for size, short in ((224, 256), (112, 128), (299, 342), (64, 73)):
        assert datakit.normalize.imagenet.default_resize(size) == short


# --------------------------------------------------------------------------- imagenet: crop correctness


def _coordinate_image(h: int, w: int) -> np.ndarray:
    """RGB image whose pixels name their position: R = x % 256, G = x // 256, B = y % 256."""
    yy, xx = np.mgrid[0:h, 0:w]
    return np.stack([xx % 256, xx // 256, yy % 256], axis=-1).astype(np.uint8)


@pytest.mark.parametrize("h, w, top, left", [
    (256, 512, 16, 144),    # landscape: shorter side already 256, so no resampling at all
    (512, 256, 144, 16),    # portrait
    (256, 513, 16, 144),    # (513 - 224) / 2 = 144.5 rounds to even, as torchvision's CenterCrop
    (256, 256, 16, 16),
])
def test_imagenet_crops_the_exact_centre_when_no_scaling_is_needed(h, w, top, left):
    image = _coordinate_image(h, w)
    out = imagenet(image)
    assert crop_box(w, h, 224) == (left, top)
    np.testing.assert_array_equal(out, image[top:top + 224, left:left + 224])


def test_imagenet_keeps_the_centre_and_orientation_when_shrinking():
    # 600x400 image in four coloured quadrants: the output's quadrants keep their colours
    colours = {"tl": (255, 0, 0), "tr": (0, 255, 0), "bl": (0, 0, 255), "br": (255, 255, 255)}
    image = np.zeros((400, 600, 3), np.uint8)
    image[:200, :300], image[:200, 300:] = colours["tl"], colours["tr"]
    image[200:, :300], image[200:, 300:] = colours["bl"], colours["br"]
    out = imagenet(image)            # 600x400 -> 384x256 -> centre 224x224
    for (y, x), name in (((50, 50), "tl"), ((50, 170), "tr"), ((170, 50), "bl"), ((170, 170), "br")):
        assert tuple(out[y, x]) == colours[name]
    # the quadrant boundary falls exactly on the centre of the crop (pixels 111 | 112)
    assert tuple(out[50, 110]) == colours["tl"] and tuple(out[50, 113]) == colours["tr"]
    assert tuple(out[110, 50]) == colours["tl"] and tuple(out[113, 50]) == colours["bl"]


def test_imagenet_antialiases_when_shrinking():
    # a one-pixel black/white stripe pattern shrunk 4x averages to grey (nearest-neighbour would keep 0/255)
    image = np.zeros((1024, 1024), np.uint8)
    image[:, ::2] = 255
    out = imagenet(image, mode="L")
    assert abs(float(out.mean()) - 127.5) < 2 and out.std() < 3


def test_imagenet_equals_torchvision_resize_centercrop():
    transforms = pytest.importorskip("torchvision.transforms")
    reference = transforms.Compose([transforms.Resize(256), transforms.CenterCrop(224)])
    rng = np.random.default_rng(3)
    images = [Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
              for h, w in ((375, 500), (500, 375), (164, 398), (300, 221), (227, 227), (1, 1), (256, 255))]
    images.append(Image.fromarray(np.kron(rng.integers(0, 256, (12, 16), dtype=np.uint8), np.ones((30, 30), np.uint8))))
    for im in images:
        np.testing.assert_array_equal(imagenet(im), np.asarray(reference(im.convert("RGB"))), err_msg=str(im.size))


def test_imagenet_very_elongated_image_is_within_one_level_of_torchvision():
    # beyond 4:1 only the crop window is resampled (bounded memory): same result to 1 grey level
    transforms = pytest.importorskip("torchvision.transforms")
    reference = transforms.Compose([transforms.Resize(256), transforms.CenterCrop(224)])
    rng = np.random.default_rng(4)
    im = Image.fromarray(rng.integers(0, 256, (72, 641, 3), dtype=np.uint8))
    diff = np.abs(imagenet(im).astype(int) - np.asarray(reference(im)).astype(int))
    assert diff.max() <= 1 and diff.mean() < 0.5


# --------------------------------------------------------------------------- imagenet: input modes


def test_imagenet_greyscale_input():
    rng = np.random.default_rng(5)
    grey = Image.fromarray(rng.integers(0, 256, (300, 400), dtype=np.uint8), "L")
    rgb = imagenet(grey)
    assert rgb.shape == (224, 224, 3)
    assert (rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all()
    np.testing.assert_array_equal(imagenet(grey, mode="L"), rgb[..., 0])


def test_imagenet_cmyk_palette_and_rgba_inputs():
    rng = np.random.default_rng(6)
    rgb = Image.fromarray(rng.integers(0, 256, (240, 320, 3), dtype=np.uint8))
    cmyk = rgb.convert("CMYK")
    np.testing.assert_array_equal(imagenet(cmyk), imagenet(cmyk.convert("RGB")))
    palette = rgb.convert("P")
    np.testing.assert_array_equal(imagenet(palette), imagenet(palette.convert("RGB")))
    transparent = Image.new("RGBA", (300, 200), (10, 20, 30, 0))
    assert (imagenet(transparent) == 255).all()                 # composited over white
    opaque = Image.new("RGBA", (300, 200), (10, 20, 30, 255))
    assert (imagenet(opaque) == (10, 20, 30)).all()


def test_imagenet_16_bit_input():
    ramp = (np.arange(300 * 400, dtype=np.int64).reshape(300, 400) * 65535 // (300 * 400 - 1)).astype(np.uint16)
    im = Image.fromarray(ramp)
    assert im.mode.startswith("I;16")
    out = imagenet(im, mode="L")
    assert out.shape == (224, 224) and out.dtype == np.uint8
    np.testing.assert_array_equal(out, imagenet(to_array(im, "L"), mode="L"))
    # a top-to-bottom ramp stays one: rows increase, the crop's middle row is mid-grey
    assert (np.diff(out[:, 112].astype(int)) >= 0).all() and 100 < out[112, 112] < 156


def test_imagenet_1x1_image_is_upsampled():
    out = imagenet(Image.new("RGB", (1, 1), (200, 100, 50)))
    assert out.shape == (224, 224, 3) and (out == (200, 100, 50)).all()
    assert (imagenet(np.array([[7]], np.uint8), size=8, mode="L") == 7).all()


# --------------------------------------------------------------------------- caltech


@pytest.mark.parametrize("hw, expected", [((164, 398), (124, 300)), ((300, 221), (407, 300)),
                                          ((300, 300), (300, 300)), ((1, 1), (300, 300)), ((50, 10), (1500, 300)),
                                          ((10, 3000), (1, 300))])
def test_caltech_scales_to_300_wide_keeping_the_aspect_ratio(hw, expected):
    rng = np.random.default_rng(7)
    image = rng.integers(0, 256, hw + (3,), dtype=np.uint8)
    fn = get_normalizer("caltech")
    assert fn(image).shape == expected + (3,)
    assert get_normalizer("caltech", mode="L")(image).shape == expected
    assert get_normalizer("caltech", width=150)(image).shape[1] == 150


def test_caltech_and_resize_are_one_normalizer():
    assert NORMALIZERS.get("caltech") is NORMALIZERS.get("resize")
    assert normalizer_options("caltech") == normalizer_options("resize") == {"width": 300, "mode": "RGB"}
    rng = np.random.default_rng(8)
    image = rng.integers(0, 256, (164, 398, 3), dtype=np.uint8)
    np.testing.assert_array_equal(get_normalizer("caltech")(image), get_normalizer("resize")(image))


def test_caltech_greyscale_cmyk_and_16_bit_inputs():
    fn = get_normalizer("caltech")
    grey = Image.fromarray(np.full((100, 200), 90, np.uint8), "L")
    assert (fn(grey) == 90).all() and fn(grey).shape == (150, 300, 3)
    cmyk = Image.new("RGB", (200, 100), (10, 200, 30)).convert("CMYK")
    np.testing.assert_array_equal(fn(cmyk), fn(cmyk.convert("RGB")))
    im16 = Image.fromarray((np.arange(100 * 200).reshape(100, 200) * 3).astype(np.uint16))
    assert fn(im16).shape == (150, 300, 3)


def test_natural_normalizers_pickle():
    image = np.random.default_rng(9).integers(0, 256, (90, 120, 3), dtype=np.uint8)
    for name, options in (("imagenet", {"size": 64}), ("caltech", {"width": 50})):
        fn = get_normalizer(name, **options)
        np.testing.assert_array_equal(pickle.loads(pickle.dumps(fn))(image), fn(image))


# --------------------------------------------------------------------------- bad options


@pytest.mark.parametrize("name, options, message", [
    ("imagenet", {"size": 0}, r"normalizer 'imagenet': size must be a positive integer, got 0"),
    ("imagenet", {"size": 22.5}, "size must be a positive integer, got 22.5"),
    ("imagenet", {"size": True}, "size must be a positive integer, got True"),
    ("imagenet", {"resize": "256"}, "resize must be a positive integer or omitted, got '256'"),
    ("imagenet", {"resize": 200}, r"resize \(200\) must be at least size \(224\)"),
    ("imagenet", {"size": 300, "resize": 256}, r"resize \(256\) must be at least size \(300\)"),
    ("imagenet", {"mode": "CMYK"}, r"Unknown value 'CMYK' for mode. Valid values are \{'RGB', 'L'\}"),
    ("imagenet", {"crop": 224}, r"normalizer 'imagenet' has no option 'crop'. Valid options are \{mode, resize, size\}"),
    ("caltech", {"width": 0}, "normalizer 'caltech': width must be a positive integer, got 0"),
    ("caltech", {"mode": "RGBA"}, r"Valid values are \{'RGB', 'L'\}"),
    ("caltech", {"height": 200}, r"normalizer 'caltech' has no option 'height'. Valid options are \{mode, width\}"),
])
def test_bad_options_fail_before_any_work(name, options, message):
    with pytest.raises(NormalizerOptionError, match=message):
        get_normalizer(name, **options)


# --------------------------------------------------------------------------- a build with real photos


def test_build_imagenette_with_imagenet_normalizer(shared_data, tmp_path):
    """Imagenette JPEGs (224x224, one greyscale) -> 256 -> centre 224, with the decoded size kept."""
    src = shared_data / "imagenette_val_224_subset"
    if not src.is_dir():
        pytest.skip(f"{src} not found (see shared/data/SOURCES.md)")
    files = sorted(src.glob("*/*.JPEG"))
    grey = [f for f in files if Image.open(f).mode == "L"][:1]
    assert grey, "shared/data says 20 Imagenette JPEGs are greyscale"
    chosen = grey + [f for f in files if f.parent.name in ("n01440764", "n03028079") and f not in grey][::40][:4]
    data = tmp_path / "data"
    for f in chosen:
        (data / f.parent.name).mkdir(parents=True, exist_ok=True)
        shutil.copy(f, data / f.parent.name / f.name)
    recipe = tmp_path / "imagenet.toml"
    recipe.write_text(f'name = "imagenette_tiny"\nseed = 0\n[[sources]]\nname = "imagenette"\nkind = "folder"\n'
                      f'path = "{data}"\n[normalize]\nstyle = "imagenet"\n[splits]\nstrategy = "fractions"\n'
                      f'train = 1.0\nval = 0.0\ntest = 0.0\n')
    result = build_dataset(recipe, tmp_path / "ds", workers=0)
    assert (result.kept, result.rejected) == (len(chosen), 0)
    ds = open_dataset(tmp_path / "ds")
    m = ds.manifest.set_index("source_ref")
    assert (m["width"] == 224).all() and (m["height"] == 224).all()
    assert (m["original_width"] == 224).all() and (m["original_height"] == 224).all()
    assert ds.info["normalize"]["style"] == "imagenet"
    for f in chosen:
        ref = f"{f.parent.name}/{f.name}"
        with Image.open(ds.root / m.loc[ref, "path"]) as stored:
            assert stored.mode == "RGB"
            pixels = np.asarray(stored)
        with Image.open(f) as original:
            np.testing.assert_array_equal(pixels, imagenet(original))
        if f in grey:
            assert (pixels[..., 0] == pixels[..., 2]).all()      # greyscale JPEG stored as equal channels
