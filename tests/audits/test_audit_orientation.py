"""orientation_artifacts: real photos rotated with PIL (fill color) are flagged, the originals are not."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from sklearn.datasets import load_sample_images

from audits import get_audit
from audits.orientation_artifacts import corner_scores, rotation_scores
from datakit import open_dataset
from datakit.store.writer import write_dataset


def _crops(n: int = 12, size: int = 96) -> list[Image.Image]:
    """Real photo crops from scikit-learn's bundled sample images (china.jpg, flower.jpg)."""
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        img = load_sample_images().images[i % 2]
        y, x = rng.integers(0, img.shape[0] - 200), rng.integers(0, img.shape[1] - 200)
        out.append(Image.fromarray(img[y:y + 200, x:x + 200]).resize((size, size), Image.BILINEAR))
    return out


def _rotate(im: Image.Image, angle: float, fill) -> Image.Image:
    return im.rotate(angle, resample=Image.BILINEAR, fillcolor=fill)


def test_rotated_photos_flagged_originals_not(tmp_path):
    crops = _crops()
    rng = np.random.default_rng(1)
    fills = [(0, 0, 0), (255, 255, 255), (0, 0, 255)]
    rotated = [_rotate(im, float(rng.uniform(12, 40) * rng.choice([-1, 1])), fills[i % 3])
               for i, im in enumerate(crops)]
    images = np.stack([np.asarray(im) for im in crops + rotated])
    labels = ["upright"] * len(crops) + ["rotated"] * len(rotated)
    ds = open_dataset(write_dataset(tmp_path / "rot", images, labels, "train"))
    res = get_audit("orientation_artifacts")([ds])
    pi = res.per_image.set_index("id")
    ids = ds.manifest["id"].to_numpy()
    flags = pi.loc[ids, "flag"].to_numpy()
    assert flags[len(crops):].all(), pi.loc[ids[len(crops):], "score"].tolist()
    assert not flags[:len(crops)].any(), pi.loc[ids[:len(crops)], "score"].tolist()
    per_class = res.tables["per_class"].set_index("label")
    assert per_class.loc["rotated", "flagged_fraction"] == 1.0 and per_class.loc["upright", "flagged_fraction"] == 0
    assert res.summary["flagged_fraction"] == 0.5 and res.summary["max_class"] == "rotated"
    assert "flagged_examples" in res.figures
    chunked = get_audit("orientation_artifacts")([ds], chunk=5)  # memory-bounded pieces: same answer
    assert chunked.per_image["score"].tolist() == res.per_image["score"].tolist()


def test_rotated_real_dataset_images(shared_data):
    """Imagenette photos (224x224 JPEG) rotated by 15-35 degrees vs the same photos unrotated."""
    files = sorted((shared_data / "imagenette_val_224_subset").glob("*/*.JPEG"))[::50][:20]
    rng = np.random.default_rng(2)
    orig = [Image.open(f).convert("RGB").resize((128, 128), Image.BILINEAR) for f in files]
    rot = [_rotate(im, float(rng.uniform(15, 35)), (0, 0, 0)) for im in orig]
    s_orig, _ = rotation_scores(np.stack([np.asarray(i) for i in orig]))
    s_rot, _ = rotation_scores(np.stack([np.asarray(i) for i in rot]))
    assert (s_rot >= 0.6).mean() >= 0.9
    assert (s_orig >= 0.6).mean() <= 0.05


def test_letterbox_and_uniform_background_not_flagged():
    x = np.full((2, 64, 64), 200, np.uint8)
    x[0, :, :8] = 0                     # letterbox bar on the left: runs the whole border
    x[1, 20:40, 20:40] = 30             # object on a uniform background
    scores, corners = rotation_scores(x)
    assert scores.tolist() == [0.0, 0.0] and corners.shape == (2, 4)


def test_corner_scores_synthetic_triangles():
    x = np.full((1, 50, 50), 128, np.uint8)
    yy, xx = np.mgrid[0:50, 0:50]
    for tri in ((xx + yy < 20), (xx[:, ::-1] + yy[::-1] < 20)):   # top-left and bottom-right corners
        x[0][tri] = 0
    cs = corner_scores(x)
    assert cs[0, 0] > 0.9 and cs[0, 3] > 0.9 and cs[0, 1] == 0 and cs[0, 2] == 0
    scores, _ = rotation_scores(x)
    assert scores[0] == pytest.approx(min(cs[0, 0], cs[0, 3]) / 2)  # one diagonal of two


def test_bad_threshold(tmp_path):
    ds = open_dataset(write_dataset(tmp_path / "d", np.arange(2, dtype=np.uint8)[:, None, None] * np.ones((2, 8, 8), np.uint8),
                                    ["a", "b"], "train"))
    with pytest.raises(ValueError, match="threshold must be in"):
        get_audit("orientation_artifacts")([ds], threshold=2)
