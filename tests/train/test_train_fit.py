"""fit_arrays: the in-memory API the audits use."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from train_fixtures import digits_arrays
from datakit.train import FitResult, TrainingDiverged, fit_arrays, get_model, list_models
from datakit.registry import UnknownNameError


@pytest.fixture(scope="module")
def digits():
    return digits_arrays()


def test_fit_learns_real_digits(digits):
    x, y = digits
    res = fit_arrays(x[:1000], y[:1000], epochs=3, batch_size=32, seed=0, device="cpu")
    assert isinstance(res, FitResult)
    assert res.input_size == (32, 32) and res.in_channels == 1 and res.num_classes == 10
    assert [h["epoch"] for h in res.history] == [1, 2, 3]
    assert res.history[-1]["train_loss"] < res.history[0]["train_loss"]
    acc = res.score(x[1000:], y[1000:])
    assert acc > 0.85, acc  # 797 held-out real digits; chance is 0.1
    proba = res.predict_proba(x[1000:1010])
    assert proba.shape == (10, 10) and proba.dtype == np.float32
    np.testing.assert_allclose(proba.sum(1), 1.0, rtol=1e-5)
    pred = res.predict(x[1000:1010])
    assert pred.dtype == np.int64 and np.array_equal(pred, proba.argmax(1))
    assert not res.model.training


def test_same_seed_same_weights_other_seed_differs(digits):
    x, y = digits[0][:256], digits[1][:256]
    a = fit_arrays(x, y, epochs=1, batch_size=64, seed=3, device="cpu")
    b = fit_arrays(x, y, epochs=1, batch_size=64, seed=3, device="cpu")
    c = fit_arrays(x, y, epochs=1, batch_size=64, seed=4, device="cpu")
    sa, sb, sc = (r.model.state_dict() for r in (a, b, c))
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)


def test_rgb_images_other_models_and_other_sizes(digits):
    x, y = digits[0][:128], digits[1][:128]
    rgb = np.repeat(x[..., None], 3, axis=3)
    res = fit_arrays(rgb, y, model="lenet1989", epochs=1, batch_size=64, device="cpu")
    assert res.in_channels == 3 and res.input_size == (16, 16)
    # greyscale images given to an RGB model are replicated; other sizes go through the plan
    big = np.kron(x[:4], np.ones((1, 3, 3), np.uint8))  # 24x24
    assert res.predict(big).shape == (4,)
    res2 = fit_arrays(x, y, model="lenet5", model_config={"c3": "lecun"}, epochs=1, device="cpu")
    assert res2.predict(rgb[:5]).shape == (5,)  # RGB -> luma for a greyscale model


def test_lr_too_high_raises_with_epoch_and_batch(digits):
    x, y = digits[0][:300], digits[1][:300]
    with pytest.raises(TrainingDiverged, match=r"at epoch 1, batch \d+ \(1-based\)") as info:
        fit_arrays(x, y, epochs=2, lr=1e30, device="cpu")
    assert info.value.epoch == 0 and info.value.batch >= 0


@pytest.mark.parametrize("kwargs, exc, match", [
    ({"images": np.zeros((4, 8, 8), np.float32)}, TypeError, "must be a uint8 array"),
    ({"images": np.zeros((4, 8), np.uint8)}, ValueError, r"shape \(N, H, W\)"),
    ({"targets": np.array([0, 1, 2])}, ValueError, r"targets must have shape \(4,\)"),
    ({"targets": np.array([0, 1, 2, 7]), "num_classes": 3}, ValueError, "num_classes is 3"),
    ({"targets": np.array([0, -1, 1, 0])}, ValueError, "drop unlabeled"),
    ({"targets": np.array([0.0, 1.0, 0.0, 1.0])}, TypeError, "integer class indices"),
    ({"model": "lenet6"}, UnknownNameError, "Valid values are"),
    ({"device": "tpu"}, ValueError, r"Valid values are \{auto, cpu, cuda, cuda:N\}"),
    ({"optimizer": "rmsprop"}, ValueError, r"Valid values are \{sgd, adam, adamw\}"),
])
def test_fit_rejects_bad_input(kwargs, exc, match):
    args = {"images": np.zeros((4, 8, 8), np.uint8), "targets": np.array([0, 1, 0, 1])}
    args.update(kwargs)
    images, targets = args.pop("images"), args.pop("targets")
    args.setdefault("device", "cpu")
    with pytest.raises(exc, match=match):
        fit_arrays(images, targets, epochs=1, **args)


@pytest.mark.parametrize("name", [
    "lenet5", "lenet1989", "alexnet", "resnet18", "googlenet",
    pytest.param("vgg11", marks=pytest.mark.slow), pytest.param("vgg16", marks=pytest.mark.slow),
    pytest.param("resnet50", marks=pytest.mark.slow),
])
def test_every_model_runs_on_small_greyscale_input(name):
    torch.manual_seed(0)
    cfg = {} if name.startswith("lenet") else {"input_size": (32, 32)}
    model = get_model(name, num_classes=7, in_channels=1, **cfg).eval()
    h, w = model.input_size
    with torch.no_grad():
        out = model(torch.randn(2, 1, h, w))
    assert out.shape == (2, 7)
    assert name in list_models()


def test_get_model_errors():
    with pytest.raises(UnknownNameError, match=r"Unknown model 'resnet19'.*Valid values are \{alexnet, "):
        get_model("resnet19")
    with pytest.raises(ValueError, match="num_classes must be an integer >= 2"):
        get_model("lenet5", num_classes=1)
    with pytest.raises(ValueError, match=r"Unknown option 'depth' for model 'lenet5'. Valid values are \{c3\}"):
        get_model("lenet5", depth=3)
