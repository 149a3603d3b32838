"""pretrained: penultimate features from a weights file the test makes itself; content-keyed cache; bad files."""
from __future__ import annotations

import argparse
import hashlib
import re
import shutil

import numpy as np
import pytest
import torch
import torchvision

from datakit import open_dataset
from datakit.features import FeatureError, extract_features, get_extractor
from datakit.store.writer import write_dataset


def _save(model: torch.nn.Module, path, wrap=None):
    sd = model.state_dict()
    torch.save(sd if wrap is None else wrap(sd), path)
    return path


def _net(arch: str, seed: int = 0, **kw) -> torch.nn.Module:
    """A seeded random net whose batch-norm statistics are set from 16 seeded images (so eval-mode
    activations are O(1), as in trained weights, not the ~1e-9 of fresh running statistics)."""
    torch.manual_seed(seed)
    net = torchvision.models.get_model(arch, weights=None, **kw)
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = None  # cumulative average over the calibration batch
    with torch.no_grad():
        net.train()(torch.randn(16, 3, 64, 64, generator=torch.Generator().manual_seed(seed)))
    return net.eval()


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Small seeded weights files (mobilenet_v3_small 10 MB, squeezenet1_0 5 MB, resnet18 45 MB)."""
    d = tmp_path_factory.mktemp("weights")
    return {
        "mnv3": _save(_net("mobilenet_v3_small"), d / "mnv3.pth"),
        "mnv3_seed1": _save(_net("mobilenet_v3_small", seed=1), d / "mnv3_seed1.pth"),
        "squeeze": _save(_net("squeezenet1_0"), d / "squeeze.pth"),
        "r18": _save(_net("resnet18"), d / "r18.pth"),
    }


@pytest.fixture()
def photos(tmp_path):
    """12 seeded RGB images of two sizes (40x40 and 70x50) as a dataset."""
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (12, 8, 8, 3), dtype=np.uint8)
    x = np.kron(base, np.ones((1, 5, 5, 1), np.uint8))  # blocky 40x40 photos-to-be
    root = write_dataset(tmp_path / "photos", x, ["a", "b"] * 6, ["train"] * 8 + ["test"] * 4, name="photos")
    return open_dataset(root)


@pytest.mark.parametrize("arch, key, dim, head", [
    (None, "r18", 512, "fc"),  # default arch: resnet18
    ("mobilenet_v3_small", "mnv3", 1024, "classifier.3"),
    ("squeezenet1_0", "squeeze", 512, "classifier.1"),  # a conv classifier: its input, average-pooled
])
def test_features_shape_and_info(files, photos, arch, key, dim, head):
    ext = get_extractor("pretrained", weights=files[key], arch=arch, size=64).prepare()
    fm = extract_features(photos, ext, cache=False)
    assert fm.values.shape == (12, dim) and fm.values.dtype == np.float32
    assert np.isfinite(fm.values).all() and fm.values.std(axis=0).max() > 0
    assert ext.info_["head"] == head and ext.info_["dim"] == dim
    assert ext.info_["mean"] == pytest.approx([0.485, 0.456, 0.406])


def test_same_as_torchvision_penultimate(files):
    """The features equal resnet18's pooled layer computed by hand, with ImageNet normalization."""
    x = np.random.default_rng(1).integers(0, 256, (3, 64, 64, 3), dtype=np.uint8)
    ext = get_extractor("pretrained", weights=files["r18"], size=64).prepare()
    net = _net("resnet18").eval()
    net.fc = torch.nn.Identity()
    t = torch.from_numpy(x).permute(0, 3, 1, 2).float() / 255.0
    mean, std = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])
    t = (t - mean.view(1, 3, 1, 1)) / std.view(1, 3, 1, 1)
    with torch.inference_mode():
        want = net(t).numpy()
    np.testing.assert_allclose(ext.transform(x), want, rtol=1e-4, atol=1e-5)


def test_deterministic_and_weights_matter(files, photos):
    a = extract_features(photos, "pretrained", weights=files["mnv3"], arch="mobilenet_v3_small", size=64,
                         cache=False).values
    b = extract_features(photos, "pretrained", weights=files["mnv3"], arch="mobilenet_v3_small", size=64,
                         cache=False).values
    c = extract_features(photos, "pretrained", weights=files["mnv3_seed1"], arch="mobilenet_v3_small", size=64,
                         cache=False).values
    assert np.array_equal(a, b)
    assert np.abs(a).mean() > 0.01 and np.abs(a - c).mean() > 0.1 * np.abs(a).mean()


def test_sha256_recorded(files, photos):
    want = hashlib.sha256(files["mnv3"].read_bytes()).hexdigest()
    ext = get_extractor("pretrained", weights=files["mnv3"], arch="mobilenet_v3_small", size=64)
    assert ext._model is None  # get_extractor is cheap: nothing loaded yet
    fm = extract_features(photos, ext)  # loads lazily on the first batch
    assert fm.info["params"]["sha256"] == want and ext.sha256_ == want and ext.info_["sha256"] == want
    assert want in fm.info["description"]


def test_cache_is_keyed_by_content_not_path(files, photos, tmp_path):
    opts = {"arch": "mobilenet_v3_small", "size": 64}
    first = extract_features(photos, "pretrained", weights=files["mnv3"], **opts)
    assert first.info["computed"] == 12 and first.info["from_cache"] == 0
    copy = shutil.copy(files["mnv3"], tmp_path / "elsewhere.pth")
    again = extract_features(photos, "pretrained", weights=copy, **opts)
    assert again.info["computed"] == 0 and again.info["from_cache"] == 12
    np.testing.assert_array_equal(again.values, first.values)
    # other weights at the same path: a miss, and other values
    shutil.copy(files["mnv3_seed1"], copy)
    other = extract_features(photos, "pretrained", weights=copy, **opts)
    assert other.info["computed"] == 12 and not np.allclose(other.values, first.values)
    # another size: a miss
    assert extract_features(photos, "pretrained", weights=files["mnv3"], arch="mobilenet_v3_small",
                            size=32).info["computed"] == 12


def test_checkpoint_layouts_load(tmp_path):
    """torchvision reference checkpoints ({"model", "args"}), {"state_dict"} with DataParallel prefixes,
    and a fine-tuned 10-class head all give the same backbone features."""
    net = _net("squeezenet1_0")
    x = np.random.default_rng(2).integers(0, 256, (2, 64, 64, 3), dtype=np.uint8)
    plain = get_extractor("pretrained", weights=_save(net, tmp_path / "plain.pth"), arch="squeezenet1_0",
                          size=64).prepare()
    ref = get_extractor("pretrained", arch="squeezenet1_0", size=64, weights=_save(
        net, tmp_path / "ref.pth", lambda sd: {"model": sd, "args": argparse.Namespace(lr=0.1), "epoch": 3})).prepare()
    ddp = get_extractor("pretrained", arch="squeezenet1_0", size=64, weights=_save(
        net, tmp_path / "ddp.pth", lambda sd: {"state_dict": {f"module.{k}": v for k, v in sd.items()}})).prepare()
    assert ref.info_["source"] == "checkpoint:model" and ddp.info_["source"] == "checkpoint:state_dict"
    np.testing.assert_array_equal(plain.transform(x), ref.transform(x))
    np.testing.assert_array_equal(plain.transform(x), ddp.transform(x))
    tuned = get_extractor("pretrained", weights=_save(_net("resnet18", num_classes=10), tmp_path / "r18_10.pth"),
                          size=64).prepare()
    assert tuned.info_["num_classes"] == 10 and tuned.transform(x).shape == (2, 512)


def test_datakit_checkpoint(tmp_path):
    """A datakit checkpoint: its model is rebuilt from datakit's registry, with its own normalization."""
    from datakit.train.checkpoint import save_checkpoint
    from datakit.train.models import get_model

    torch.manual_seed(0)
    net = get_model("lenet5", num_classes=10, in_channels=1)
    path = tmp_path / "run" / "checkpoint.pt"
    path.parent.mkdir()
    save_checkpoint(path, {"model": {"name": "lenet5", "config": net.config, "num_classes": 10, "in_channels": 1,
                                     "input_size": [32, 32]},
                           "state_dict": net.state_dict(), "normalization": {"mean": [0.13], "std": [0.31]}})
    ext = get_extractor("pretrained", weights=path.parent, size=28).prepare()  # a run directory works too
    assert ext.info_["source"] == "datakit-checkpoint" and ext.info_["arch"] == "lenet5"
    assert ext.info_["head"] == "output" and ext.info_["mean"] == [0.13]
    x = np.random.default_rng(3).integers(0, 256, (4, 28, 28, 3), dtype=np.uint8)
    f = ext.transform(x)
    assert f.shape == (4, 84) and np.abs(f).max() <= 1.7159 + 1e-5  # F6's scaled tanh
    with pytest.raises(FeatureError, match=re.escape(str(path)) + ".*datakit checkpoint of model 'lenet5'"):
        get_extractor("pretrained", weights=path, arch="resnet18").prepare()


def test_missing_and_required_weights(tmp_path):
    with pytest.raises(FeatureError, match=r"--weights PATH.*nothing is downloaded"):
        get_extractor("pretrained")
    missing = tmp_path / "nope.pth"
    with pytest.raises(FeatureError, match=re.escape(str(missing)) + " not found"):
        get_extractor("pretrained", weights=missing)
    with pytest.raises(FeatureError, match=r"Unknown value 'resnet19' for arch\. Did you mean 'resnet18'\?"):
        get_extractor("pretrained", weights=__file__, arch="resnet19")
    with pytest.raises(FeatureError, match="batch_size must be a positive integer"):
        get_extractor("pretrained", weights=__file__, batch_size=0)
    with pytest.raises(FeatureError, match="Unknown value 'gpu' for device"):
        get_extractor("pretrained", weights=__file__, device="gpu")


@pytest.fixture(scope="module")
def bad_dir(tmp_path_factory):
    """Files that are not usable weights, each in its own way."""
    d = tmp_path_factory.mktemp("bad_weights")
    (d / "text.pth").write_text("these are not weights\n")
    (d / "empty.pth").write_bytes(b"")
    torch.save(torch.zeros(3), d / "tensor.pth")
    torch.save([torch.zeros(3)], d / "list.pth")
    torch.save({"epoch": 3, "lr": 0.1}, d / "numbers.pth")
    torch.save(_net("squeezenet1_0"), d / "module.pth")  # a whole pickled model
    torch.save(_net("squeezenet1_0").state_dict(), d / "good.pth")
    data = (d / "good.pth").read_bytes()
    (d / "truncated.pth").write_bytes(data[:len(data) // 2])
    return d


@pytest.mark.parametrize("name, expected", [
    ("text.pth", "is not a torch file"),
    ("empty.pth", "is not a torch file"),
    ("truncated.pth", "is not a torch file"),
    ("tensor.pth", "holds a Tensor, not a state dict"),
    ("list.pth", "holds a list, not a state dict"),
    ("numbers.pth", "is not a state dict: a dict with keys epoch, lr and no tensor dict"),
    ("module.pth", r"holds a whole pickled model \(torchvision\.models\.squeezenet\.SqueezeNet\).*"
                   r"torch\.save\(model\.state_dict\(\), PATH\)"),
])
def test_bad_weights_files(bad_dir, name, expected):
    path = bad_dir / name
    with pytest.raises(FeatureError, match=re.escape(str(path)) + " " + expected) as info:
        get_extractor("pretrained", weights=path, arch="squeezenet1_0", size=64).prepare()
    assert "\n" not in str(info.value)


def test_state_dict_for_another_architecture(files, tmp_path):
    with pytest.raises(FeatureError) as info:
        get_extractor("pretrained", weights=files["r18"], arch="mobilenet_v3_small").prepare()
    msg = str(info.value)
    assert msg.startswith(f"weights file {files['r18']} is not a state dict for torchvision mobilenet_v3_small: ")
    assert "missing keys (features.0.0.weight" in msg and "unexpected keys (conv1.weight" in msg
    assert "it looks like resnet18: pass arch='resnet18'" in msg and "\n" not in msg
    # same keys, other shapes: a CIFAR-style 3x3 stem
    net = _net("resnet18")
    net.conv1 = torch.nn.Conv2d(3, 64, 3, padding=1, bias=False)
    small = _save(net, tmp_path / "r18_small_stem.pth")
    with pytest.raises(FeatureError, match=re.escape(str(small)) + r" is not a state dict for torchvision resnet18: "
                       r"1 shape mismatches \(conv1\.weight \[64, 3, 3, 3\] vs \[64, 3, 7, 7\]\)"):
        get_extractor("pretrained", weights=small).prepare()
