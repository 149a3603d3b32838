"""`datakit build` and `datakit info` through the CLI (CliRunner)."""
from __future__ import annotations

import json
import textwrap

import numpy as np
from click.testing import CliRunner
from PIL import Image

from datakit.cli import cli


def _folder(root):
    rng = np.random.default_rng(0)
    for cls in ("left", "right"):
        for i in range(6):
            a = np.zeros((32, 32), np.uint8)
            a[4:28, 4:28] = (rng.random((24, 24)) < 0.4) * 255
            (root / "data" / cls).mkdir(parents=True, exist_ok=True)
            Image.fromarray(a).save(root / "data" / cls / f"{i}.png")
    (root / "data" / "left" / "broken.png").write_bytes(b"not really a png")


def test_build_then_info_then_rebuild(tmp_path):
    _folder(tmp_path)
    recipe = tmp_path / "r.toml"
    recipe.write_text(textwrap.dedent("""
        name = "lr"
        [[sources]]
        name = "pics"
        kind = "folder"
        path = "data"
        [normalize]
        style = "mnist"
        [splits]
        strategy = "per-class"
        per_class = 4
    """))
    out = tmp_path / "out"
    runner = CliRunner()
    result = runner.invoke(cli, ["build", str(recipe), "--out", str(out), "--data-root", str(tmp_path),
                                 "--workers", "0", "--quiet"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].startswith(f"Built {out}")
    header = lines[1].split()
    assert header == ["source", "status", "items", "kept", "rejected", "train", "test"]
    assert lines[2].split() == ["pics", "used", "13", "12", "1", "8", "4"]
    assert "12 images kept, 1 rejected" in result.output

    info = runner.invoke(cli, ["info", str(out), "--format", "json"])
    assert info.exit_code == 0, info.output
    data = json.loads(info.output)
    assert data["images"] == 12 and data["rejected"] == 1
    assert {r["label"]: (r["train"], r["test"]) for r in data["by_class"]} == {"left": (4, 2), "right": (4, 2)}
    assert data["rejected_by_reason"] == [{"reason": "not_an_image", "count": 1}]

    again = runner.invoke(cli, ["build", str(recipe), "--out", str(out), "--data-root", str(tmp_path), "--quiet"])
    assert again.exit_code == 0, again.output
    assert "is up to date" in again.output


def test_build_progress_goes_to_stderr(tmp_path):
    _folder(tmp_path)
    recipe = tmp_path / "r.toml"
    recipe.write_text('name = "p"\n[[sources]]\nkind = "folder"\npath = "data"\n[normalize]\nstyle = "none"\n')
    runner = CliRunner(mix_stderr=False) if "mix_stderr" in CliRunner.__init__.__code__.co_varnames else CliRunner()
    result = runner.invoke(cli, ["build", str(recipe), "--out", str(tmp_path / "o"), "--data-root", str(tmp_path),
                                 "--workers", "0"])
    assert result.exit_code == 0, result.output
    assert "img" in result.stderr  # the tqdm bar
    assert "img" not in result.stdout.splitlines()[0]
