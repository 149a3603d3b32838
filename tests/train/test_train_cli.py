"""datakit train / evaluate on dataset directories: metrics, checkpoints, resume, refusals, NaN."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from train_fixtures import digits_arrays
from datakit.cli import cli
from datakit.store.writer import write_dataset
from datakit.train.checkpoint import load_checkpoint, model_from_checkpoint
from datakit.train.run import evaluate_checkpoint, train_dataset


def _train(args):
    result = CliRunner().invoke(cli, ["train", *args, "--device", "cpu", "-q"])
    return result


@pytest.fixture(scope="module")
def trained(digits_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "run"
    result = _train([str(digits_dir), "--epochs", "2", "--batch-size", "64", "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out, result


def test_train_writes_metrics_and_checkpoint(trained, digits_dir):
    out, result = trained
    assert "checkpoint:" in result.output and "top1" in result.output
    doc = json.loads((out / "metrics.json").read_text())
    assert doc["status"] == "completed" and len(doc["epochs"]) == 2
    last = doc["epochs"][-1]
    assert last["split"] == "test" and last["eval_n"] == 100
    assert 0.0 <= last["eval_top1"] <= last["eval_top5"] <= 1.0
    conf = np.array(last["eval_confusion"])
    assert conf.shape == (10, 10) and conf.sum() == 100
    assert len(last["eval_per_class_accuracy"]) == 10
    assert last["eval_top1"] == pytest.approx(np.trace(conf) / 100)

    ckpt = torch.load(out / "checkpoint.pt", weights_only=True)
    assert ckpt["model"]["name"] == "lenet5" and ckpt["model"]["config"] == {"c3": "full"}
    assert ckpt["dataset"]["classes"] == [str(i) for i in range(10)]
    assert ckpt["dataset"]["checksum"] == __import__("datakit").open_dataset(digits_dir).checksum
    assert len(ckpt["normalization"]["mean"]) == 1 and ckpt["normalization"]["input_plan"] == \
        "resize to 28x28, then pad by 2"
    assert ckpt["epoch"] == 2 and ckpt["metrics"]["eval_top1"] == last["eval_top1"]


def test_evaluate_reproduces_the_last_epoch(trained, digits_dir):
    out, _ = trained
    last = json.loads((out / "metrics.json").read_text())["epochs"][-1]
    result = CliRunner().invoke(cli, ["evaluate", str(out / "checkpoint.pt"), str(digits_dir), "--device", "cpu",
                                      "--format", "json"])
    assert result.exit_code == 0, result.output
    m = json.loads(result.output)
    assert m["n"] == 100 and m["top1"] == pytest.approx(last["eval_top1"]) and m["excluded"] == {}
    table = CliRunner().invoke(cli, ["evaluate", str(out), str(digits_dir), "--device", "cpu", "--per-class"])
    assert table.exit_code == 0 and "accuracy" in table.output


def test_evaluate_other_dataset_excludes_unknown_classes(trained, tmp_path):
    out, _ = trained
    x, y = digits_arrays()
    labels = [str(v) if v < 5 else f"letter{v}" for v in y[1000:1100]]  # classes 5-9 unknown to the model
    other = write_dataset(tmp_path / "other", x[1000:1100], labels, "test", source="mixed")
    res = evaluate_checkpoint(out, other, split="test", device="cpu")
    n_known = sum(1 for l in labels if not l.startswith("letter"))
    assert res.metrics["n"] == n_known
    assert sum(res.excluded.values()) == 100 - n_known and all(k.startswith("letter") for k in res.excluded)
    assert res.metrics["per_class_accuracy"][5:] == [None] * 5

    alien = write_dataset(tmp_path / "alien", x[:20], ["cat", "dog"] * 10, "test", source="pets")
    result = CliRunner().invoke(cli, ["evaluate", str(out), str(alien), "--device", "cpu"])
    assert result.exit_code == 1
    assert "trained on other classes" in result.output and "cat" in result.output


def test_resume_continues_to_the_same_weights(digits_dir, tmp_path):
    full = train_dataset(digits_dir, out=tmp_path / "full", epochs=2, batch_size=64, device="cpu")
    # simulate an interruption (Ctrl-C) right after epoch 1 was saved, then resume
    part = tmp_path / "part"
    import datakit.train.run as run_mod

    original = run_mod.train_epochs

    def stop_after_first(*args, **kwargs):
        save = kwargs["on_epoch_end"]

        def save_then_stop(epoch, record):
            save(epoch, record)
            raise KeyboardInterrupt

        return original(*args, **{**kwargs, "on_epoch_end": save_then_stop})

    run_mod.train_epochs = stop_after_first
    try:
        with pytest.raises(KeyboardInterrupt):
            train_dataset(digits_dir, out=part, epochs=2, batch_size=64, device="cpu")
    finally:
        run_mod.train_epochs = original
    assert load_checkpoint(part)["epoch"] == 1
    again = _train([str(digits_dir), "--epochs", "2", "--batch-size", "64", "--out", str(part)])
    assert again.exit_code == 1 and "already holds a run" in again.output
    resumed = _train([str(digits_dir), "--epochs", "2", "--batch-size", "64", "--out", str(part), "--resume"])
    assert resumed.exit_code == 0, resumed.output
    doc = json.loads((part / "metrics.json").read_text())
    assert [e["epoch"] for e in doc["epochs"]] == [1, 2] and doc["resumed_at_epoch"] == 1
    a = full.model.state_dict()
    b = model_from_checkpoint(load_checkpoint(part)).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_resume_refuses_another_dataset(trained, tmp_path):
    out, _ = trained
    x, y = digits_arrays(300)
    other = write_dataset(tmp_path / "d2", x, y.tolist(), ["train"] * 200 + ["test"] * 100)
    result = _train([str(other), "--out", str(out), "--resume", "--epochs", "3"])
    assert result.exit_code == 1 and "trained on another dataset" in result.output


def test_nan_stops_with_epoch_and_batch_and_keeps_last_good_checkpoint(digits_dir, tmp_path, monkeypatch):
    import datakit.train.data as data_mod

    real_call = data_mod.Normalizer.__call__
    calls = {"train": 0}

    def poisoned(self, x):
        out = real_call(self, x)
        if torch.is_grad_enabled():  # training batches only (evaluation runs under no_grad)
            calls["train"] += 1
            if calls["train"] == 8:  # epoch 2 has batches 8..14 with 400 images / 64
                out = out * float("nan")
        return out

    monkeypatch.setattr(data_mod.Normalizer, "__call__", poisoned)
    out = tmp_path / "nan"
    result = _train([str(digits_dir), "--epochs", "3", "--batch-size", "64", "--out", str(out)])
    assert result.exit_code == 1
    assert "Training diverged: loss is nan at epoch 2, batch 1 (1-based)" in result.output
    assert "keeps epoch 1" in result.output
    doc = json.loads((out / "metrics.json").read_text())
    assert doc["status"] == "diverged" and doc["diverged"]["epoch"] == 2 and doc["diverged"]["batch"] == 1
    ckpt = load_checkpoint(out)
    assert ckpt["epoch"] == 1
    assert all(torch.isfinite(t).all() for t in ckpt["state_dict"].values())


def test_nan_in_first_epoch_from_a_huge_learning_rate(digits_dir, tmp_path):
    result = _train([str(digits_dir), "--epochs", "1", "--lr", "1e30", "--out", str(tmp_path / "r")])
    assert result.exit_code == 1
    assert "at epoch 1, batch" in result.output and "no checkpoint was written" in result.output


def test_no_train_split_and_single_class_fail_before_training(tmp_path):
    x, y = digits_arrays(40)
    only_test = write_dataset(tmp_path / "t", x, y.tolist(), "test")
    result = _train([str(only_test), "--out", str(tmp_path / "r1")])
    assert result.exit_code == 1 and "has no 'train' split (splits: test)" in result.output
    one = write_dataset(tmp_path / "one", x, ["7"] * 40, "train")
    result = _train([str(one), "--out", str(tmp_path / "r2")])
    assert result.exit_code == 1 and "has 1 class(es) (7)" in result.output
    assert not (tmp_path / "r1").exists() and not (tmp_path / "r2").exists()


def test_unknown_model_lists_valid_ones(digits_dir, tmp_path):
    result = _train([str(digits_dir), "--model", "lenet", "--out", str(tmp_path / "r")])
    assert result.exit_code == 1
    assert "Unknown model 'lenet'" in result.output and "lenet5" in result.output and "resnet18" in result.output


def test_evaluate_refuses_a_file_that_is_not_a_checkpoint(digits_dir, tmp_path):
    bogus = tmp_path / "x.pt"
    torch.save({"weights": torch.zeros(2)}, bogus)
    result = CliRunner().invoke(cli, ["evaluate", str(bogus), str(digits_dir)])
    assert result.exit_code == 1 and "is not a datakit checkpoint" in result.output


def test_mnist_streamed_and_in_memory_agree(mnist_small_dir, tmp_path):
    a = train_dataset(mnist_small_dir, out=tmp_path / "mem", epochs=1, batch_size=100, device="cpu",
                      data_mode="memory")
    b = train_dataset(mnist_small_dir, out=tmp_path / "stream", epochs=1, batch_size=100, device="cpu",
                      data_mode="stream", workers=0)
    da = json.loads((tmp_path / "mem" / "metrics.json").read_text())
    db = json.loads((tmp_path / "stream" / "metrics.json").read_text())
    assert da["train"]["data"] == "memory" and db["train"]["data"] == "stream"
    assert db["epochs"][0]["eval_n"] == 200 and db["epochs"][0]["images"] == 600
    # same images, same normalisation inputs; the batch order differs, so only the scale must agree
    assert abs(da["epochs"][0]["train_loss"] - db["epochs"][0]["train_loss"]) < 0.5


def test_bad_option_values_are_clean_errors(digits_dir, tmp_path):
    result = _train([str(digits_dir), "--augment", "rotate", "--out", str(tmp_path / "a")])
    assert result.exit_code == 1 and "Unknown value 'rotate' for augment" in result.output
    result = _train([str(digits_dir), "--lr", "-1", "--out", str(tmp_path / "b")])
    assert result.exit_code == 1 and "lr must be > 0" in result.output
    result = _train([str(digits_dir), "-c", "c3=half", "--out", str(tmp_path / "c")])
    assert result.exit_code == 1 and "Valid values are {full, lecun}" in result.output
    result = _train([str(digits_dir), "--split", "holdout", "--out", str(tmp_path / "d")])
    assert result.exit_code == 1 and "Unknown split 'holdout'" in result.output


def test_evaluate_other_image_size_and_all_splits(trained, tmp_path):
    out, _ = trained
    x, y = digits_arrays()
    big = np.kron(x[1000:1060], np.ones((1, 2, 2), np.uint8))  # the same digits at 16x16
    other = write_dataset(tmp_path / "big", big, y[1000:1060].tolist(), ["val"] * 30 + ["test"] * 30)
    result = CliRunner().invoke(cli, ["evaluate", str(out), str(other), "--split", "all", "--device", "cpu",
                                      "--format", "json"])
    assert result.exit_code == 0, result.output
    m = json.loads(result.output)
    assert m["n"] == 60 and m["split"] is None and m["input_plan"] == "resize to 28x28, then pad by 2"
    result = CliRunner().invoke(cli, ["evaluate", str(out), str(other), "--split", "train"])
    assert result.exit_code == 1 and "Unknown split 'train'" in result.output


def test_streaming_handles_mixed_sizes_and_rgb(tmp_path):
    x, y = digits_arrays(120)
    big = np.kron(x, np.ones((1, 2, 2), np.uint8))  # 16x16
    rgb = np.repeat(big[..., None], 3, axis=3)
    root = tmp_path / "mixed"
    import pandas as pd

    from datakit.store.writer import DatasetWriter

    writer = DatasetWriter(root)
    rows = []
    for i in range(120):
        image = rgb[i] if i % 3 else rgb[i, :12, :14]  # every third image is 12x14
        image_id, rel = writer.put_image(image)
        rows.append({"id": image_id, "path": rel, "label": str(y[i]), "split": "train" if i < 90 else "test",
                     "source": "t", "width": image.shape[1], "height": image.shape[0]})
    writer.write_manifest(pd.DataFrame(rows))
    res = train_dataset(root, "lenet1989", out=tmp_path / "run", epochs=1, batch_size=32, device="cpu",
                        data_mode="stream", workers=0)
    doc = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert doc["model"]["in_channels"] == 3 and doc["epochs"][0]["images"] == 90
    assert doc["epochs"][0]["eval_n"] == 30
    assert res.model.H1.weight.shape[1] == 3
    # in memory, the same dataset is resized to its most common size by load_arrays
    mem = train_dataset(root, "lenet1989", out=tmp_path / "run2", epochs=1, batch_size=32, device="cpu")
    assert mem.history[0]["images"] == 90
