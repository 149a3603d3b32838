"""Input plans, uint8 batching, normalisation and the metrics of evaluate_batches."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from datakit.train.data import (InputPlan, Normalizer, TensorBatches, as_uint8_nchw, channel_stats, input_plan,
                                prepare_images)
from datakit.train.loop import evaluate_tensors, lr_at


def test_input_plans():
    assert input_plan("lenet5", (28, 28), (32, 32)) == InputPlan(None, 2, (32, 32))
    assert input_plan("lenet5", (32, 32), (32, 32)) == InputPlan(None, 0, (32, 32))
    assert input_plan("lenet5", (16, 16), (32, 32)) == InputPlan((28, 28), 2, (32, 32))
    assert input_plan("lenet1989", (28, 28), (16, 16)) == InputPlan((16, 16), 0, (16, 16))
    assert input_plan("resnet18", (32, 32), (32, 32)).describe() == "as is"


def test_prepare_pads_mnist_by_two_and_keeps_pixels():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (3, 28, 28), dtype=np.uint8)
    out = prepare_images(x, input_plan("lenet5", (28, 28), (32, 32)))
    assert out.shape == (3, 1, 32, 32) and out.dtype == torch.uint8
    assert torch.equal(out[:, 0, 2:30, 2:30], torch.from_numpy(x))
    assert int(out[:, :, :2].sum()) == 0 and int(out[:, :, :, -2:].sum()) == 0


def test_prepare_resizes_constant_image_exactly():
    x = np.full((2, 8, 8, 3), 77, np.uint8)
    out = prepare_images(x, InputPlan((16, 16), 0, (16, 16)))
    assert out.shape == (2, 3, 16, 16) and torch.all(out == 77)


def test_as_uint8_rejects_float():
    with pytest.raises(TypeError, match="must be uint8"):
        as_uint8_nchw(np.zeros((1, 2, 2), np.float64))


def test_channel_stats_and_normalizer():
    x = torch.tensor([[[[0, 255]]], [[[255, 255]]]], dtype=torch.uint8)  # (2, 1, 1, 2): values 0,1,1,1
    mean, std = channel_stats(x)
    assert mean == pytest.approx([0.75]) and std == pytest.approx([np.sqrt(0.75 * 0.25)])
    z = Normalizer(mean, std)(x)
    assert float(z.mean()) == pytest.approx(0.0, abs=1e-6) and float(z.std(unbiased=False)) == pytest.approx(1.0)


def test_tensor_batches_shard_disjointly_and_reproducibly():
    x = torch.arange(10, dtype=torch.uint8).view(10, 1, 1, 1)
    y = torch.arange(10)
    seen = []
    for rank in range(2):
        b = TensorBatches(x, y, batch_size=3, seed=5, rank=rank, world_size=2)
        assert len(b) == 2 and b.num_images == 5
        seen.append(torch.cat([yb for _, yb in b.epoch(1)]))
    assert sorted(torch.cat(seen).tolist()) == list(range(10))
    again = torch.cat([yb for _, yb in TensorBatches(x, y, 3, seed=5, rank=0, world_size=2).epoch(1)])
    assert torch.equal(again, seen[0])
    other_epoch = torch.cat([yb for _, yb in TensorBatches(x, y, 3, seed=5, rank=0, world_size=2).epoch(2)])
    assert not torch.equal(other_epoch, seen[0])


class _Fixed(torch.nn.Module):
    """Returns preset logits for the images' first pixel (an index)."""

    def __init__(self, logits):
        super().__init__()
        self.logits = torch.as_tensor(logits, dtype=torch.float32)

    def forward(self, x):
        return self.logits[x[:, 0, 0, 0].long()]


def test_evaluate_metrics_by_hand():
    # 6 classes, 4 examples; true classes 0, 1, 2, 2
    logits = [[9, 1, 0, 0, 0, 0, 0],  # pred 0, true 0: right
              [1, 0, 9, 8, 7, 6, 5],  # pred 2, true 1: wrong, 1 is lowest -> not in top 5
              [0, 9, 8, 0, 0, 0, 0],  # pred 1, true 2: wrong, in top 2
              [0, 0, 9, 0, 0, 0, 0]]  # pred 2, true 2: right
    logits = [row[:6] for row in logits]
    x = torch.arange(4, dtype=torch.uint8).view(4, 1, 1, 1)
    y = torch.tensor([0, 1, 2, 2])
    m = evaluate_tensors(_Fixed(logits), x, y, lambda t: t, 6, torch.device("cpu"), batch_size=3)
    assert m["n"] == 4 and m["top1"] == 0.5 and m["top5"] == 0.75 and m["top5_k"] == 5
    assert m["per_class_accuracy"] == [1.0, 0.0, 0.5, None, None, None]
    conf = np.array(m["confusion"])
    assert conf[0, 0] == 1 and conf[1, 2] == 1 and conf[2, 1] == 1 and conf[2, 2] == 1 and conf.sum() == 4


def test_cosine_schedule():
    assert lr_at(0.1, 0, 100) == pytest.approx(0.1)
    assert lr_at(0.1, 50, 100) == pytest.approx(0.05)
    assert lr_at(0.1, 100, 100) == pytest.approx(0.0)
    assert lr_at(0.1, 70, 100, "constant") == 0.1


def test_random_shift_moves_each_image_and_is_reproducible():
    from datakit.train.data import RandomShift, make_augment

    x = torch.zeros((64, 1, 9, 9), dtype=torch.uint8)
    x[:, 0, 4, 4] = 255  # one bright pixel in the centre of every image
    shift = RandomShift(2, seed=1)
    shift.set_epoch(0)
    out = shift(x)
    assert out.shape == x.shape and out.dtype == torch.uint8
    assert torch.all(out.flatten(1).sum(1) == 255)  # the pixel is kept (|shift| <= 2 < border)
    pos = out[:, 0].flatten(1).argmax(1)
    dy, dx = pos // 9 - 4, pos % 9 - 4
    assert dy.abs().max() <= 2 and dx.abs().max() <= 2
    assert len(set(zip(dy.tolist(), dx.tolist()))) > 10  # per-image offsets, not one per batch
    shift.set_epoch(0)
    assert torch.equal(shift(x), out)
    shift.set_epoch(1)
    assert not torch.equal(shift(x), out)
    assert make_augment("none") is None and make_augment("shift:3").max_shift == 3
    with pytest.raises(ValueError, match=r"Valid values are \{none, shift, shift:N\}"):
        make_augment("rotate")
