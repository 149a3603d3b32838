"""MNIST-style normalization: geometry, polarity, blank rejection, input modes, batch = single."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from datakit.errors import ImageRejected
from datakit.normalize.mnist import mnist, mnist_batch, prepare_ink


def _com(a: np.ndarray) -> tuple[float, float]:
    a = a.astype(np.float64)
    t = a.sum()
    return float(a.sum(1) @ np.arange(a.shape[0]) / t), float(a.sum(0) @ np.arange(a.shape[1]) / t)


def _ink_extent(a: np.ndarray, level: int = 128) -> tuple[int, int]:
    rows = np.flatnonzero(a.max(1) > level)
    cols = np.flatnonzero(a.max(0) > level)
    return int(rows[-1] - rows[0] + 1), int(cols[-1] - cols[0] + 1)


@pytest.fixture()
def bar() -> np.ndarray:
    """A 40x10 white bar, off-center on a 90x70 black image."""
    a = np.zeros((90, 70), np.uint8)
    a[5:45, 50:60] = 255
    return a


def test_long_side_fits_the_box_and_mass_is_centered(bar):
    out = mnist(bar)
    assert out.shape == (28, 28) and out.dtype == np.uint8 and out.max() == 255
    h, w = _ink_extent(out)
    assert h == 20 and w in (4, 5, 6)  # 40 -> 20, aspect ratio kept (10 -> 5)
    assert abs(out.sum(axis=1).max() / 255 - 5) < 0.5  # a row holds 5 pixels' worth of ink
    cy, cx = _com(out)
    assert abs(cy - 14) <= 0.5 and abs(cx - 14) <= 0.5


def test_options_box_canvas_and_center(bar):
    out = mnist(bar, box=32, canvas=40)
    assert out.shape == (40, 40) and _ink_extent(out)[0] == 32
    boxed = mnist(bar, center="box")
    rows = np.flatnonzero(boxed.max(1) > 128)
    assert rows[0] == 4 and rows[-1] == 23  # the 20-pixel box centered in 28
    asym = np.zeros((60, 60), np.uint8)
    asym[10:50, 10:16] = 255  # a thick left stroke...
    asym[10:50, 40:42] = 255  # ...and a thin right one: mass and box centers differ
    cx_mass = _com(mnist(asym, center="mass"))[1]
    cx_box = _com(mnist(asym, center="box"))[1]
    # (the mass center is placed through the input's, mapped to the output; a stroke much
    # thinner than an output pixel rings, and clipping that moves the output's mass center)
    assert abs(cx_mass - 14) <= 0.5 and cx_box < 13


@pytest.mark.parametrize("width", [7, 8])
def test_box_edges_land_on_pixel_boundaries(width):
    """A crisp bar stays crisp: an odd-width box is centered on a pixel, an even one between two.

    (MNIST's digits have their ink box on whole pixels; centering every box on a
    pixel boundary would smear odd widths over two half-lit columns.)
    """
    bar = np.zeros((40, 40), np.uint8)
    bar[10:30, 15:15 + width] = 255
    out = mnist(bar)
    cols = out.max(axis=0)
    rows = out.max(axis=1)
    assert (cols > 200).sum() == width and ((cols > 30) & (cols <= 200)).sum() == 0
    assert (rows > 200).sum() == 20 and ((rows > 30) & (rows <= 200)).sum() == 0


@pytest.mark.parametrize("width", [7, 8])
@pytest.mark.parametrize("offset", [0, 1, 2])
def test_enlarged_pixel_digit_comes_back_on_its_grid(width, offset):
    """A 28x28 bar enlarged 2.5x (bicubic) and pasted at a sub-pixel offset comes back crisp."""
    bar = np.zeros((28, 28), np.uint8)
    bar[4:24, 10:10 + width] = 255
    big = np.asarray(Image.fromarray(bar).resize((70, 70), Image.Resampling.BICUBIC))
    canvas = np.zeros((90, 90), np.uint8)
    canvas[9:79, 5 + offset:75 + offset] = big
    out = mnist(canvas)
    cols = out.max(axis=0)
    assert (cols > 200).sum() == width and ((cols > 30) & (cols <= 200)).sum() == 0
    assert np.abs(mnist_batch(canvas[None])[0][0].astype(int) - out).max() <= 1


def test_faint_rim_does_not_move_the_box():
    """An anti-aliased rim (a faint extra column on one side) barely moves the placement.

    (Measuring the box where the profile crosses 10 % of the peak moved this digit by a
    whole pixel: correlation 0.91.)
    """
    bar = np.zeros((60, 60), np.uint8)
    bar[10:50, 20:34] = 255
    rimmed = bar.copy()
    rimmed[10:50, 34] = 40  # faint fringe on the right (16 % of the ink)
    a, b = mnist(bar).astype(float), mnist(rimmed).astype(float)
    assert abs(_com(a)[1] - _com(b)[1]) < 0.15
    assert np.corrcoef(a.ravel(), b.ravel())[0, 1] > 0.99


def test_upscaling_small_digits(bar):
    tiny = np.asarray(Image.fromarray(bar).resize((14, 18), Image.Resampling.BOX))
    out = mnist(tiny)
    assert _ink_extent(out, 64)[0] in (19, 20, 21)


@pytest.mark.parametrize("polarity", ["auto", "dark-on-light"])
def test_dark_on_light_is_inverted(bar, polarity):
    assert np.abs(mnist(255 - bar, polarity=polarity).astype(int) - mnist(bar)).max() <= 1


def test_light_on_dark_polarity_is_not_inverted(bar):
    out = mnist(bar, polarity="light-on-dark")
    assert np.abs(out.astype(int) - mnist(bar)).max() <= 1


def test_gray_paper_background_is_removed(bar):
    paper = (200 - bar.astype(int) * 150 // 255).astype(np.uint8)  # dark-gray ink (50) on gray paper (200)
    out = mnist(paper)
    assert np.abs(out.astype(int) - mnist(bar)).max() <= 2
    assert prepare_ink(paper).min() == 0


@pytest.mark.parametrize("blank", [np.zeros((28, 28), np.uint8), np.full((40, 30), 255, np.uint8),
                                   np.full((10, 10), 128, np.uint8)])
def test_blank_images_are_rejected_not_divided_by_zero(blank):
    with pytest.raises(ImageRejected, match="blank") as exc:
        mnist(blank)
    assert exc.value.reason == "blank"


def test_faint_noise_below_threshold_is_blank():
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 20, (30, 30)).astype(np.uint8)
    with pytest.raises(ImageRejected, match="blank"):
        mnist(noise, threshold=32)
    assert mnist(noise, threshold=5).shape == (28, 28)


def test_single_pixel_and_thin_inputs():
    dot = np.zeros((9, 9), np.uint8)
    dot[4, 4] = 255
    out = mnist(dot)
    assert out.max() == 255 and abs(_com(out)[0] - 14) <= 0.5
    line = np.zeros((1, 50), np.uint8)
    line[0, 10:40] = 200
    assert mnist(line).shape == (28, 28)


def _modes(bar: np.ndarray) -> dict[str, Image.Image]:
    dark = 255 - bar  # dark ink on white paper, as scans are
    rgb = Image.fromarray(np.dstack([dark] * 3), "RGB")
    rgba = np.zeros((*bar.shape, 4), np.uint8)
    rgba[..., 3] = bar  # black ink on a transparent background
    pal = rgb.convert("P", palette=Image.Palette.ADAPTIVE, colors=4)
    pal_t = Image.fromarray(np.where(bar > 0, 1, 0).astype(np.uint8), "P")
    pal_t.putpalette([255, 255, 255, 0, 0, 0] + [0] * 762)
    pal_t.info["transparency"] = 0
    return {
        "L": Image.fromarray(dark),
        "RGB": rgb,
        "RGBA": Image.fromarray(rgba, "RGBA"),
        "P": pal,
        "P+transparency": pal_t,
        "I;16": Image.fromarray((dark.astype(np.uint16) * 257)),
        "CMYK": rgb.convert("CMYK"),
        "1": Image.fromarray(dark > 127),
    }


def test_all_input_modes_give_the_same_digit(bar):
    ref = mnist(bar)
    for name, im in _modes(bar).items():
        out = mnist(im)
        assert out.shape == (28, 28) and out.dtype == np.uint8, name
        assert np.abs(out.astype(int) - ref).max() <= 3, name


def test_batch_equals_single_on_real_digits(shared_data):
    from datakit.normalize.fidelity import distort_digits
    from datakit.sources.idx import read_idx

    digits = read_idx(shared_data / "mnist" / "t10k-images-idx3-ubyte.gz")[:200]
    distorted = distort_digits(digits, seed=1)
    distorted[7] = 0  # one blank image in the batch
    out, blank = mnist_batch(distorted)
    assert out.shape == (200, 28, 28) and blank.tolist() == [i == 7 for i in range(200)]
    assert out[7].max() == 0
    for i in range(200):
        if i == 7:
            with pytest.raises(ImageRejected, match="blank"):
                mnist(distorted[i])
            continue
        assert np.abs(mnist(distorted[i]).astype(int) - out[i]).max() <= 1, i
    boxed, _ = mnist_batch(distorted[:20], center="box", resample="triangle")
    assert np.abs(mnist(distorted[3], center="box", resample="triangle").astype(int) - boxed[3]).max() <= 1


def test_batch_input_checks():
    with pytest.raises(ValueError, match=r"shape \(N, H, W\)"):
        mnist_batch(np.zeros((28, 28), np.uint8))
    with pytest.raises(TypeError, match="must be uint8"):
        mnist_batch(np.zeros((2, 28, 28), np.float32))
    with pytest.raises(ValueError, match="Valid values are"):
        mnist_batch(np.zeros((2, 28, 28), np.uint8), center="middle")
    out, blank = mnist_batch(np.zeros((0, 28, 28), np.uint8))
    assert out.shape == (0, 28, 28) and blank.shape == (0,)


def test_mnist_is_pure(bar):
    before = bar.copy()
    mnist(bar)
    mnist(255 - bar)
    assert np.array_equal(bar, before)
    assert np.array_equal(mnist(bar), mnist(bar))


def test_direct_calls_check_options_too(bar):
    with pytest.raises(ValueError, match="Unknown value 'middle' for center"):
        mnist(bar, center="middle")
    with pytest.raises(ValueError, match="threshold must be a number"):
        mnist(bar, threshold=[1])
    with pytest.raises(ValueError, match=r"box \(40\) must not exceed canvas \(28\)"):
        mnist_batch(bar[None], box=40)
