"""WebDataset tar shards: export, size limits, resume, and reading back for training."""
from __future__ import annotations

import gzip
import hashlib
import json
import tarfile

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.datasets import load_digits
from torch.utils.data import DataLoader

from datakit import open_dataset
from datakit.errors import DatakitError
from datakit.store.webdataset import ShardSizeError, WebDatasetShards, export_webdataset, parse_size, read_index
from datakit.store.writer import write_dataset


def _image_digest(image: Image.Image) -> str:
    return hashlib.sha256(np.asarray(image).tobytes()).hexdigest()


@pytest.fixture(scope="module")
def digits_dataset(tmp_path_factory):
    """300 real scikit-learn digits (8x8), 80/20 train/test, written as a datakit dataset."""
    d = load_digits()
    x = (d.images[:300] * 16).clip(0, 255).astype(np.uint8)
    rng = np.random.default_rng(0)
    splits = np.where(rng.random(len(x)) < 0.8, "train", "test")
    root = write_dataset(tmp_path_factory.mktemp("digits") / "ds", x, d.target[:300], splits)
    return open_dataset(root)


@pytest.mark.parametrize("text, expected", [
    ("1GB", 10**9), ("500MB", 500 * 10**6), ("500mb", 500 * 10**6), ("64MiB", 64 * 2**20),
    ("1.5KiB", 1536), ("2 KB", 2000), ("4096", 4096), (4096, 4096), ("1TB", 10**12),
])
def test_parse_size(text, expected):
    assert parse_size(text) == expected


@pytest.mark.parametrize("bad, match", [
    ("1XB", r"Invalid shard size '1XB'\. Expected a number with a unit in \{B, KB, MB, GB"),
    ("GB", r"Invalid shard size 'GB'"),
    ("-5MB", r"Invalid shard size '-5MB'"),
    ("0", r"at least 1 byte"),
    (0, r"at least 1 byte"),
    (1.5, r"give bytes as an int or a string"),
    (True, r"give bytes as an int or a string"),
])
def test_parse_size_errors(bad, match):
    with pytest.raises(ShardSizeError, match=match):
        parse_size(bad)


def test_export_writes_webdataset_members_within_shard_size(digits_dataset, tmp_path):
    limit = 40_000
    index = export_webdataset(digits_dataset, tmp_path / "wds", shard_size=limit)
    manifest = digits_dataset.manifest
    assert index["classes"] == digits_dataset.classes
    assert index.pop("out") == str(tmp_path / "wds")
    assert index == read_index(tmp_path / "wds")
    assert index["images"] == len(manifest) and index["splits"] == manifest.groupby("split").size().to_dict()
    by_split = {s: sum(e["count"] for e in index["shards"] if e["split"] == s) for s in ("train", "test")}
    assert by_split == manifest.groupby("split").size().to_dict()
    assert len(index["shards"]) > 2
    for entry in index["shards"]:
        path = tmp_path / "wds" / entry["path"]
        assert path.stat().st_size <= limit
        assert entry["path"].startswith(entry["split"] + "-")
    # every sample: <id>.png (the stored bytes), <id>.cls (class index), <id>.json (metadata)
    rows = manifest.set_index("id")
    seen = []
    for entry in index["shards"]:
        with tarfile.open(tmp_path / "wds" / entry["path"]) as tar:
            names = tar.getnames()
            assert len(names) == 3 * entry["count"]
            for name in names[::3]:
                key = name.split(".")[0]
                assert names[names.index(name):names.index(name) + 3] == [f"{key}.png", f"{key}.cls", f"{key}.json"]
                row = rows.loc[key]
                png = tar.extractfile(f"{key}.png").read()
                assert png == (digits_dataset.root / row["path"]).read_bytes()
                assert int(tar.extractfile(f"{key}.cls").read()) == digits_dataset.class_to_idx[row["label"]]
                meta = json.loads(tar.extractfile(f"{key}.json").read())
                assert meta["label"] == row["label"] and meta["split"] == row["split"] == entry["split"]
                assert meta["source_ref"] == row["source_ref"] and meta["width"] == 8
                seen.append(key)
    assert sorted(seen) == sorted(manifest["id"])


def test_export_is_deterministic(digits_dataset, tmp_path):
    export_webdataset(digits_dataset, tmp_path / "a", shard_size="30KB", split="test")
    export_webdataset(digits_dataset.root, tmp_path / "b", shard_size="30KB", split="test")
    a = sorted(p.name for p in (tmp_path / "a").glob("*.tar"))
    assert a == sorted(p.name for p in (tmp_path / "b").glob("*.tar"))
    assert all(n.startswith("test-") for n in a)
    for name in a:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


def test_reading_shards_equals_split_dataset(digits_dataset, tmp_path):
    export_webdataset(digits_dataset, tmp_path / "wds", shard_size="20KB")
    shards = WebDatasetShards(tmp_path / "wds", split="train")
    reference = digits_dataset.split("train")
    assert len(shards) == len(reference)
    assert shards.classes == digits_dataset.classes
    got = list(shards)
    assert len(got) == len(reference)
    # one reader, shards in order: samples come in manifest order
    for (image, target), i in zip(got, range(len(reference))):
        ref_image, ref_target = reference[i]
        assert image.shape == (1, 8, 8) and image.dtype == torch.float32
        assert torch.equal(image, ref_image) and target == ref_target


def test_dataloader_workers_split_shards_each_sample_once(digits_dataset, tmp_path):
    export_webdataset(digits_dataset, tmp_path / "wds", shard_size="10KB")
    shards = WebDatasetShards(tmp_path / "wds", transform=_image_digest)
    assert len(shards.paths) >= 4
    loader = DataLoader(shards, batch_size=None, num_workers=2)
    got = sorted(digest for digest, _ in loader)
    want = sorted(_image_digest(digits_dataset.split(None).load_image(i)) for i in range(len(digits_dataset.manifest)))
    assert got == want
    # and the two readers take disjoint halves of the shards
    a, b = shards.shards_for_reader(0, 2), shards.shards_for_reader(1, 2)
    assert not set(a) & set(b) and sorted(a + b) == sorted(shards.paths)


def test_shuffle_shards_changes_order_per_epoch_not_content(digits_dataset, tmp_path):
    export_webdataset(digits_dataset, tmp_path / "wds", shard_size="10KB")
    shards = WebDatasetShards(tmp_path / "wds", shuffle_shards=True, seed=1, transform=_image_digest)
    first = [d for d, _ in shards]
    shards.set_epoch(1)
    second = [d for d, _ in shards]
    assert first != second and sorted(first) == sorted(second)


def test_tar_files_directly_and_unlabeled_targets(tmp_path):
    x = np.zeros((3, 4, 4), np.uint8)
    x[:, 1, 1] = [10, 20, 30]
    root = write_dataset(tmp_path / "ds", x, [None, None, None], "train")
    export_webdataset(root, tmp_path / "wds")
    tars = sorted((tmp_path / "wds").glob("*.tar"))
    shards = WebDatasetShards(tars)
    assert len(shards) == 3
    got = list(shards)
    assert [t for _, t in got] == [-1, -1, -1]
    assert sorted(float(img.max()) * 255 for img, _ in got) == pytest.approx([10, 20, 30])
    with tarfile.open(tars[0]) as tar:
        assert not [n for n in tar.getnames() if n.endswith(".cls")]


def test_rerun_resumes_and_removes_stale_shards(digits_dataset, tmp_path):
    out = tmp_path / "wds"
    index = export_webdataset(digits_dataset, out, shard_size="10KB", split="train")
    paths = [out / e["path"] for e in index["shards"]]
    stamps = {p: p.stat().st_mtime_ns for p in paths}
    paths[1].unlink()  # as if the export was interrupted before this shard
    paths[2].write_bytes(b"not a tar")  # a corrupt shard is rewritten too
    again = export_webdataset(digits_dataset, out, shard_size="10KB", split="train")
    assert again == index
    assert paths[1].exists() and tarfile.is_tarfile(paths[2])
    assert all(p.stat().st_mtime_ns == stamps[p] for p in paths if p not in paths[1:3])
    # larger shards: fewer files; the old extra ones are removed
    bigger = export_webdataset(digits_dataset, out, shard_size="1MB", split="train")
    assert len(bigger["shards"]) == 1
    assert sorted(p.name for p in out.glob("*.tar")) == ["train-000000.tar"]


def test_errors_say_what_is_valid(digits_dataset, tmp_path):
    with pytest.raises(DatakitError, match=r"Unknown split 'val' .* Valid values are \{train, test\}"):
        export_webdataset(digits_dataset, tmp_path / "x", split="val")
    with pytest.raises(DatakitError, match=r"has no index\.json: it is not a datakit WebDataset export"):
        WebDatasetShards(tmp_path)
    export_webdataset(digits_dataset, tmp_path / "wds", shard_size="1MB")
    with pytest.raises(DatakitError, match=r"Unknown split 'val' in .* Valid values are \{test, train\}"):
        WebDatasetShards(tmp_path / "wds", split="val")
    with pytest.raises(DatakitError, match=r"Shard files not found: .*nope\.tar"):
        WebDatasetShards([tmp_path / "nope.tar"])
    with pytest.raises(ValueError, match=r"split= selects shards of an export directory"):
        WebDatasetShards([tmp_path / "wds" / "train-000000.tar"], split="train")
    with pytest.raises(ValueError, match=r"Invalid shard size"):
        export_webdataset(digits_dataset, tmp_path / "y", shard_size="big")


def test_fashion_mnist_round_trip(fashion_mnist, tmp_path):
    """200 real Fashion-MNIST test images survive export and read-back bit for bit."""
    with gzip.open(fashion_mnist / "t10k-images-idx3-ubyte.gz") as fh:
        raw = fh.read(16 + 200 * 28 * 28)
    with gzip.open(fashion_mnist / "t10k-labels-idx1-ubyte.gz") as fh:
        labels = np.frombuffer(fh.read(8 + 200), np.uint8)[8:]
    images = np.frombuffer(raw, np.uint8)[16:].reshape(200, 28, 28)
    root = write_dataset(tmp_path / "fmnist", images, labels, "test")
    export_webdataset(root, tmp_path / "wds", shard_size="50KB")
    shards = WebDatasetShards(tmp_path / "wds", split="test", transform=np.asarray)
    got = list(shards)
    ds = open_dataset(root)
    assert len(got) == len(ds.manifest) == 200
    by_bytes = {a.tobytes(): t for a, t in got}
    for k, image in enumerate(images):  # every real image comes back, pixel for pixel, with its class
        assert by_bytes[image.tobytes()] == ds.class_to_idx[str(labels[k])]


def test_cli_export_webdataset(digits_dataset, tmp_path):
    from click.testing import CliRunner

    from datakit.cli import cli

    runner = CliRunner()
    res = runner.invoke(cli, ["export", str(digits_dataset.root), "--format", "webdataset", "--out",
                              str(tmp_path / "wds"), "--shard-size", "20KB", "--quiet"])
    assert res.exit_code == 0, res.output
    n = len(digits_dataset.manifest)
    assert f"Exported {n} images of" in res.output and "as webdataset to" in res.output
    index = read_index(tmp_path / "wds")
    assert index["images"] == n and all(e["bytes"] <= 20_000 for e in index["shards"])
    assert len(WebDatasetShards(tmp_path / "wds")) == n
    bad = runner.invoke(cli, ["export", str(digits_dataset.root), "--format", "webdataset", "--out",
                              str(tmp_path / "bad"), "--shard-size", "lots"])
    assert bad.exit_code == 1
    assert "Invalid shard size 'lots'" in bad.output and "Traceback" not in bad.output
