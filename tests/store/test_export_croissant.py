"""The croissant export validates with mlcroissant and loads back through it: counts, labels, splits, datasheet."""
from __future__ import annotations

import hashlib
import itertools
import json
import logging
import os
import textwrap
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

import datakit
from datakit.cli import cli
from datakit.errors import DatakitError
from datakit.store.export import export_dataset

mlc = pytest.importorskip("mlcroissant", reason="mlcroissant (a dev dependency) validates the export")

SHARED = Path(os.environ.get("DATAKIT_SHARED_DATA", Path(__file__).resolve().parents[3] / "shared" / "data"))


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Croissant metadata of local files must load without the network."""
    import socket

    def refuse(*args, **kwargs):
        raise OSError("network access is disabled in this test")

    monkeypatch.setattr(socket.socket, "connect", refuse)


def _build(tmp_path: Path) -> Path:
    """``datakit build`` of a small recipe (a folder of 3 classes x 6 images), so datakit.json and the datasheet are real."""
    rng = np.random.default_rng(0)
    for cls in ("circle", "cross", "square"):
        for i in range(6):
            a = np.zeros((16, 16), np.uint8)
            a[3:13, 3:13] = (rng.random((10, 10)) < 0.5) * 255
            (tmp_path / "data" / cls).mkdir(parents=True, exist_ok=True)
            Image.fromarray(a).save(tmp_path / "data" / cls / f"{i}.png")
    recipe = tmp_path / "shapes.toml"
    recipe.write_text(textwrap.dedent('''
        name = "shapes"
        description = "Three drawn shapes, for testing the Croissant export."
        [[sources]]
        name = "drawings"
        kind = "folder"
        path = "data"
        [normalize]
        style = "mnist"
        [splits]
        strategy = "per-class"
        per_class = 4
        [categories]
        circle = "a circle"
        cross = "a cross"
        square = "a square"
    '''))
    out = tmp_path / "shapes"
    r = CliRunner().invoke(cli, ["build", str(recipe), "--out", str(out), "--data-root", str(tmp_path),
                                 "--workers", "0", "--quiet"])
    assert r.exit_code == 0, r.output
    return out


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    return _build(tmp_path_factory.mktemp("build"))


def _check_round_trip(root: Path, jsonld: Path) -> "mlc.Dataset":
    ds = datakit.open_dataset(root)
    m = ds.manifest
    dataset = mlc.Dataset(jsonld=str(jsonld))  # raises ValidationError when the metadata is invalid
    records = list(dataset.records(record_set="manifest"))
    assert len(records) == len(m)
    dec = lambda v: v.decode() if isinstance(v, bytes) else v  # noqa: E731
    got = {dec(r["manifest/id"]): (dec(r["manifest/label"]), dec(r["manifest/split"])) for r in records}
    assert got == dict(zip(m["id"], zip(m["label"], m["split"])))
    classes = [dec(r["classes/label"]) for r in dataset.records(record_set="classes")]
    assert [c for c in classes if c in set(m["label"])] == ds.classes
    assert [dec(r["splits/name"]) for r in dataset.records(record_set="splits")] == ds.splits
    return dataset


def test_validates_and_loads_back_with_images(shapes):
    summary = export_dataset(shapes, "croissant", shapes)
    jsonld = shapes / "croissant.json"
    assert summary["out"] == str(jsonld) and summary["images"] == 18
    dataset = _check_round_trip(shapes, jsonld)
    m = datakit.open_dataset(shapes).manifest.set_index("id")
    images = list(dataset.records(record_set="images"))
    assert len(images) == len(m)
    first = images[0]
    image_id = first["images/id"].decode()
    stored = np.asarray(Image.open(shapes / m.at[image_id, "path"]).convert("RGB"))  # mlcroissant gives RGB
    np.testing.assert_array_equal(np.asarray(first["images/image"]), stored)


def test_checksums_and_datasheet_fields(shapes):
    export_dataset(shapes, "croissant", shapes / "croissant.json")
    doc = json.loads((shapes / "croissant.json").read_text())
    assert doc["conformsTo"] == "http://mlcommons.org/croissant/1.0" and doc["@type"] == "sc:Dataset"
    files = {d["name"]: d for d in doc["distribution"]}
    for name in ("manifest.parquet", "categories.csv", "DATASHEET.md"):
        assert files[name]["sha256"] == hashlib.sha256((shapes / name).read_bytes()).hexdigest()
    assert files["image-files"]["@type"] == "cr:FileSet" and files["image-files"]["includes"] == "images/*/*.png"
    # how categories, images and labels were chosen, from the datasheet
    assert doc["description"].startswith("Three drawn shapes")
    assert "Categories:" in doc["description"] and "a cross" in doc["description"]
    assert "drawings" in doc["rai:dataCollection"] and "folder" in doc["rai:dataCollection"]
    assert doc["rai:dataCollectionType"] == ["Secondary Data Analysis"]
    assert any(p.startswith("Normalization: Style `mnist`") for p in doc["rai:dataPreprocessingProtocol"])
    assert any(p.startswith("Splits: Per class, 4 training images") for p in doc["rai:dataPreprocessingProtocol"])
    assert "label maps" in doc["rai:dataAnnotationProtocol"][0]
    manifest_fields = {f["name"]: f for rs in doc["recordSet"] if rs["name"] == "manifest" for f in rs["field"]}
    assert {"id", "label", "split", "source", "source_ref", "width", "height"} <= set(manifest_fields)
    assert manifest_fields["label"]["references"] == {"field": {"@id": "classes/label"}}
    assert manifest_fields["width"]["dataType"] == "sc:Integer"


def test_invalid_metadata_is_refused_by_mlcroissant(shapes, tmp_path):
    export_dataset(shapes, "croissant", shapes)
    doc = json.loads((shapes / "croissant.json").read_text())
    manifest = next(rs for rs in doc["recordSet"] if rs["name"] == "manifest")
    manifest["field"][0]["source"] = {"fileObject": {"@id": "no-such-file"}, "extract": {"column": "id"}}
    bad = shapes / "bad.json"
    bad.write_text(json.dumps(doc))
    try:
        with pytest.raises(mlc.ValidationError):
            mlc.Dataset(jsonld=str(bad))
    finally:
        bad.unlink()


def test_outside_the_dataset_and_errors(shapes, tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="datakit.store.croissant"):
        export_dataset(shapes, "croissant", tmp_path / "meta")
    assert "outside the dataset directory" in caplog.text
    _check_round_trip(shapes, tmp_path / "meta" / "croissant.json")  # relative URLs: ../.../manifest.parquet
    with pytest.raises(DatakitError, match="drop --split"):
        export_dataset(shapes, "croissant", tmp_path / "x.json", split="train")


def test_cli(shapes, tmp_path):
    runner = CliRunner()
    out = tmp_path / "shapes-croissant.json"
    r = runner.invoke(cli, ["export", str(shapes), "--format", "croissant", "--out", str(out), "--quiet"])
    assert r.exit_code == 0, r.output
    assert f"Exported 18 images of shapes as croissant to {out}" in r.output
    assert mlc.Dataset(jsonld=str(out)).metadata.name == "shapes"
    r = runner.invoke(cli, ["export", str(shapes), "--format", "croissant", "--out", str(out), "--split", "test"])
    assert r.exit_code == 1 and "drop --split" in r.output and "Traceback" not in r.output


@pytest.mark.skipif(not (SHARED / "caltech101_sample").is_dir(), reason=f"{SHARED}/caltech101_sample is absent")
def test_real_caltech_sample(tmp_path):
    """The shared Caltech-101 sample, built with the repository's recipe, round-trips through mlcroissant."""
    recipe = Path(__file__).resolve().parents[2] / "recipes" / "caltech101_sample.toml"
    out = tmp_path / "caltech"
    r = CliRunner().invoke(cli, ["build", str(recipe), "--out", str(out), "--data-root", str(SHARED),
                                 "--workers", "0", "--quiet"])
    assert r.exit_code == 0, r.output
    export_dataset(out, "croissant", out)
    dataset = _check_round_trip(out, out / "croissant.json")
    assert len(list(itertools.islice(dataset.records(record_set="images"), 3))) == 3
    assert "Caltech-101" in dataset.metadata.description
