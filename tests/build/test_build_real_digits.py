"""A small real digits build: 300 MNIST test digits + scikit-learn digits, source splits kept."""
from __future__ import annotations

import textwrap

import numpy as np
from PIL import Image

import datakit
from datakit.build import build_dataset


def test_mnist_subset_and_sklearn_digits(shared_data, tmp_path):
    from datakit.normalize import get_normalizer
    from datakit.sources.idx import read_idx, write_idx

    images = read_idx(shared_data / "mnist" / "t10k-images-idx3-ubyte.gz")[:300]
    labels = read_idx(shared_data / "mnist" / "t10k-labels-idx1-ubyte.gz")[:300]
    write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", images)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", labels)
    recipe = tmp_path / "r.toml"
    recipe.write_text(textwrap.dedent("""
        name = "real-digits"
        [[sources]]
        name = "mnist"
        kind = "idx"
        images = "t10k-images-idx3-ubyte.gz"
        labels = "t10k-labels-idx1-ubyte.gz"
        [[sources]]
        name = "sklearn-digits"
        kind = "sklearn-digits"
        [normalize]
        style = "mnist"
        [splits]
        strategy = "source"
        fallback = "fractions"
        train = 0.75
        val = 0.0
        test = 0.25
        near_duplicate_distance = 0
    """))
    result = build_dataset(recipe, tmp_path / "out", data_root=tmp_path, workers=2)
    ds = datakit.open_dataset(result.out)
    m = ds.manifest
    assert result.kept + result.rejected == 300 + 1797
    mn = m[m["source"] == "mnist"]
    assert len(mn) == 300 - int((ds.rejected["source"] == "mnist").sum())
    assert (mn["source_split"] == "test").all() and (mn["split"] == "test").all()
    assert sorted(mn["label"].unique()) == sorted({str(v) for v in labels})
    sk = m[m["source"] == "sklearn-digits"]
    assert sk["source_split"].isna().all()
    frac_train = (sk["split"] == "train").mean()
    assert 0.65 < frac_train < 0.8  # near-duplicate groups with MNIST test digits go to test
    # the stored pixels are the MNIST normalization of the original digit
    norm = get_normalizer("mnist")
    for ref, path in zip(mn["source_ref"][:20], mn["path"][:20]):
        index = int(ref.rsplit("#", 1)[1])
        np.testing.assert_array_equal(np.asarray(Image.open(result.out / path)), norm(images[index]))
    x, y = ds.split("test")[0]
    assert tuple(x.shape) == (1, 28, 28) and isinstance(y, int)
