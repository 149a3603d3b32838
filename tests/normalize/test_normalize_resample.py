"""The resampling matrices behind the digit normalizers agree with Pillow's resize."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from datakit.normalize._resample import axis_weights, weights_pair

PIL_FILTERS = {"triangle": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC,
               "lanczos": Image.Resampling.LANCZOS, "box": Image.Resampling.BOX}


@pytest.mark.parametrize("kernel", sorted(PIL_FILTERS))
@pytest.mark.parametrize("size", [(37, 53, 20, 28), (12, 9, 30, 25)])  # shrink and enlarge
def test_plain_resize_matches_pillow_away_from_the_edges(kernel, size):
    """Same filters as Pillow. At the image edge Pillow renormalizes over the pixels
    inside, while datakit counts outside pixels as 0 (background), so only the
    interior is compared; ``box`` may break exact ties (a pixel center exactly on
    the box edge) the other way, so it is compared by its median."""
    h, w, oh, ow = size
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (h, w)).astype(np.float32)
    wy = axis_weights(h, oh, oh / h, h / 2, oh / 2, kernel)[0]
    wx = axis_weights(w, ow, ow / w, w / 2, ow / 2, kernel)[0]
    ours = wy @ img @ wx.T
    ref = np.asarray(Image.fromarray(img, "F").resize((ow, oh), PIL_FILTERS[kernel]))
    diff = np.abs(ours - ref)
    if kernel == "box":
        assert np.median(diff) == 0
        return
    my = int(np.ceil(3 * max(1.0, oh / h))) + 1  # output rows whose filter reaches past the edge
    mx = int(np.ceil(3 * max(1.0, ow / w))) + 1
    assert diff[my:-my, mx:-mx].max() < 0.6  # the table samples the filter every 1/256 pixel


def test_identity_and_zero_padding():
    w = axis_weights(10, 10, 1.0, 5.0, 5.0, "lanczos")[0]
    assert np.allclose(w, np.eye(10), atol=1e-6)
    # output pixels beyond the input's edge fade to 0 instead of repeating the edge pixel
    shifted = axis_weights(10, 14, 1.0, 5.0, 9.0, "lanczos")[0]
    assert np.allclose(shifted[:4], 0, atol=1e-6) and np.allclose(shifted[4:], np.eye(10), atol=1e-6)


def test_batched_rows_and_pair_agree():
    scale = np.array([0.4, 1.0, 2.5], np.float32)
    cin = np.array([20.2, 7.5, 3.1], np.float32)
    cout = np.array([14.0, 14.5, 13.0], np.float32)
    batch = axis_weights(40, 28, scale, cin, cout, "lanczos")
    assert batch.shape == (3, 28, 40)
    for i in range(3):
        single = axis_weights(40, 28, float(scale[i]), float(cin[i]), float(cout[i]), "lanczos")[0]
        assert np.abs(batch[i] - single).max() < 1e-6
        wy, wx = weights_pair(40, 17, 28, float(scale[i]), float(cin[i]), float(cout[i]), 8.0, 14.0, "lanczos")
        assert wy.shape == (28, 40) and wx.shape == (28, 17)
        assert np.abs(wy - single).max() < 2e-3
    rows = batch.sum(axis=2)
    assert rows.min() > -0.2 and rows.max() < 1.2  # partial sums (Lanczos lobes) where the filter passes the edge
    assert np.abs(rows[1, 10:20] - 1).max() < 1e-5
