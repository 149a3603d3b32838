"""The huggingface source: datasets saved with save_to_disk / to_parquet, built by `datakit build`."""
from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from PIL import Image

import datakit
from datakit.cli import cli
from datakit.errors import DatakitError
from datakit.sources import SOURCES, get_source

datasets = pytest.importorskip("datasets", reason="the datasets library (a dev dependency) writes the fixtures")

NAMES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


@pytest.fixture(autouse=True)
def offline(monkeypatch, tmp_path):
    import socket

    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(datasets.config, "HF_DATASETS_OFFLINE", True, raising=False)

    def refuse(*args, **kwargs):
        raise OSError("network access is disabled in this test")

    monkeypatch.setattr(socket.socket, "connect", refuse)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """Real scikit-learn digits as a datasets DatasetDict (train 40, validation 12, test 20), saved both ways."""
    from sklearn.datasets import load_digits

    d = load_digits()
    images = [Image.fromarray((d.images[i] * 16).clip(0, 255).astype(np.uint8)) for i in range(72)]
    targets = [int(t) for t in d.target[:72]]
    features = datasets.Features({"img": datasets.Image(), "digit": datasets.ClassLabel(names=NAMES),
                                  "writer": datasets.Value("string")})
    cut = {"train": (0, 40), "validation": (40, 52), "test": (52, 72)}
    dd = datasets.DatasetDict({s: datasets.Dataset.from_dict(
        {"img": images[a:b], "digit": targets[a:b], "writer": [f"w{i % 3}" for i in range(a, b)]},
        features=features) for s, (a, b) in cut.items()})
    root = tmp_path_factory.mktemp("hf")
    dd.save_to_disk(str(root / "saved"))
    for s, part in dd.items():
        part.to_parquet(str(root / "parquet" / f"{s}-00000-of-00001.parquet"))
    truth = {s: [NAMES[t] for t in targets[a:b]] for s, (a, b) in cut.items()}
    return root, truth


def _build(tmp_path: Path, data_root: Path, source: str) -> Path:
    recipe = tmp_path / "r.toml"
    recipe.write_text(textwrap.dedent(f'''
        name = "hfdigits"
        [[sources]]
        name = "hf"
        kind = "huggingface"
        {source}
        [normalize]
        style = "mnist"
        [splits]
        strategy = "source"
        fallback = "fractions"
        near_duplicate_distance = 0
    '''))
    out = tmp_path / "out"
    r = CliRunner().invoke(cli, ["build", str(recipe), "--out", str(out), "--data-root", str(data_root),
                                 "--workers", "0", "--quiet"])
    assert r.exit_code == 0, r.output
    return out


def _check(out: Path, truth: dict[str, list[str]], splits: dict[str, str]) -> None:
    m = datakit.open_dataset(out).manifest
    assert m.groupby("split").size().to_dict() == {splits[s]: len(v) for s, v in truth.items() if s in splits}
    for s, labels in truth.items():
        if s not in splits:
            continue
        part = m[m["source_split"] == splits[s]].copy()  # the item's split is the mapped name
        part["row"] = part["source_ref"].str.rsplit("#", n=1).str[1].astype(int)
        assert part.sort_values("row")["label"].tolist() == labels
        assert (part["split"] == splits[s]).all()
    assert set(m["label"]) <= set(NAMES) and (m["width"] == 28).all()


def test_build_from_save_to_disk(saved, tmp_path):
    root, truth = saved
    out = _build(tmp_path, root, 'path = "saved"')
    _check(out, truth, {"train": "train", "validation": "val", "test": "test"})
    m = datakit.open_dataset(out).manifest
    assert m["source_ref"].str.match(r"^(train|validation|test)/data-00000-of-00001\.arrow#\d+$").all()


def test_build_from_parquet_with_split_selection_and_mapping(saved, tmp_path):
    root, truth = saved
    out = _build(tmp_path, root, 'path = "parquet"\nsplit = ["train", "validation"]\n'
                                 'split_names = { validation = "test" }')
    _check(out, truth, {"train": "train", "validation": "test"})


def test_source_options(saved):
    root, truth = saved
    cls = get_source("huggingface")
    assert SOURCES.get("huggingface") is cls
    src = cls(name="hf", path=str(root / "saved" / "test"))  # one saved Dataset: no split name
    assert len(src) == 20 and src.class_names() == NAMES
    items = list(src.iter_items())
    assert [i.label for i in items] == truth["test"] and items[0].split is None
    assert Image.open(__import__("io").BytesIO(items[0].data)).size == (8, 8)
    one = cls(name="hf", path=str(root / "parquet" / "validation-00000-of-00001.parquet"))
    assert len(one) == 12 and next(one.iter_items()).split == "val"
    unlabeled = cls(name="hf", path=str(root / "saved"), label_column="", split="test")
    assert {i.label for i in unlabeled.iter_items()} == {None}
    by_column = cls(name="hf", path=str(root / "saved"), label_column="writer", split="train")
    assert {i.label for i in by_column.iter_items()} == {"w0", "w1", "w2"}


def test_clear_errors(saved, tmp_path):
    root, _ = saved
    cls = get_source("huggingface")
    with pytest.raises(DatakitError, match=r"'mnist' does not exist.*does not download.*save_to_disk\(\"data/mnist\"\)"):
        cls(name="hf", path="mnist").validate()
    with pytest.raises(DatakitError, match=r"is a URL"):
        cls(name="hf", path="hf://datasets/mnist").validate()
    with pytest.raises(DatakitError, match=r"unknown split 'dev'.*Valid values are \{test, train, validation\}"):
        cls(name="hf", path=str(root / "saved"), split="dev").validate()
    with pytest.raises(DatakitError, match=r"no image column.*set image_column"):
        cls(name="hf", path=str(root / "saved"), image_column="picture").validate()
    with pytest.raises(DatakitError, match="unknown option 'splits'. Did you mean 'split'"):
        cls(name="hf", path=str(root), splits="train")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatakitError, match="neither a save_to_disk dataset"):
        cls(name="hf", path=str(tmp_path / "empty")).validate()
    recipe = tmp_path / "r.toml"
    recipe.write_text('name = "x"\n[[sources]]\nname = "hf"\nkind = "huggingface"\npath = "ylecun/mnist"\n')
    r = CliRunner().invoke(cli, ["build", str(recipe), "--out", str(tmp_path / "o"), "--data-root", str(tmp_path)])
    assert r.exit_code == 1 and "does not download" in r.output and "Traceback" not in r.output


def test_round_trip_through_our_export(saved, tmp_path):
    """A dataset exported with --format huggingface reads back as a huggingface source, labels intact."""
    root, truth = saved
    out = _build(tmp_path, root, 'path = "saved"')
    from datakit.store.export import export_dataset

    export_dataset(out, "huggingface", tmp_path / "exported")
    src = get_source("huggingface")(name="back", path=str(tmp_path / "exported"))
    m = datakit.open_dataset(out).manifest
    back = pd.Series({i.source_ref: i.label for i in src.iter_items()})
    assert len(back) == len(m) and sorted(back) == sorted(m["label"])
    assert {i.split for i in src.iter_items()} == {"train", "val", "test"}
