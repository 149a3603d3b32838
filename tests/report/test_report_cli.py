"""`datakit audit`: report files, JSON = AuditResult numbers, --fail-on exit codes, errors, skips."""
from __future__ import annotations

import base64
import json
import re

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image
from sklearn.datasets import load_digits

from datakit import open_dataset
from datakit.cli import cli
from datakit.report import (available_metrics, evaluate_conditions, parse_class_map, parse_condition, parse_option,
                            render_html, render_json, render_markdown, run_audits, summary_frame, write_report)
from datakit.report.format import format_value
from datakit.errors import DatakitError
from datakit.store.writer import write_dataset

FAST = "balance,average_image,low_level_stats,orientation_artifacts"


@pytest.fixture(scope="module")
def two_sources(tmp_path_factory):
    """Real digits (scikit-learn), 500 images, two sources: 'bright' and 'dim' (ink at 55%)."""
    d = load_digits()
    x = np.stack([np.asarray(Image.fromarray((im * 255 / 16).astype(np.uint8)).resize((16, 16), Image.BILINEAR))
                  for im in d.images[:500]])
    rng = np.random.default_rng(0)
    dim = rng.random(len(x)) < 0.5
    x[dim] = (x[dim] * 0.55).astype(np.uint8)
    split = np.where(rng.random(len(x)) < 0.8, "train", "test")
    return write_dataset(tmp_path_factory.mktemp("cli") / "digits", x, d.target[:500].tolist(), split.tolist(),
                         source=np.where(dim, "dim", "bright").tolist(), name="digits")


@pytest.fixture(scope="module")
def fast_run(two_sources):
    return run_audits([open_dataset(two_sources)], FAST.split(","))


def test_json_numbers_equal_audit_results(fast_run):
    data = json.loads(render_json(fast_run))
    assert list(data["audits"]) == FAST.split(",")
    for r in fast_run.results:
        got = data["audits"][r.name]
        assert got["status"] == "ok" and got["skipped"] is None
        assert set(got["summary"]) == set(r.summary)
        for key, value in r.summary.items():
            if isinstance(value, float):
                assert got["summary"][key] == pytest.approx(value, nan_ok=True) or (np.isnan(value) and got["summary"][key] is None)
            else:
                assert got["summary"][key] == value
        for name, table in r.tables.items():
            assert len(got["tables"][name]) == len(table)
        assert got["figures"] == sorted(r.figures)
        if r.per_image is not None:
            assert got["per_image"]["columns"] == list(r.per_image.columns)
            assert len(got["per_image"]["rows"]) == len(r.per_image)
            first = dict(zip(got["per_image"]["columns"], got["per_image"]["rows"][0]))
            assert first["id"] == r.per_image["id"].iloc[0]
    assert data["datasets"][0]["name"] == "digits" and data["datasets"][0]["images"] == 500


def test_html_is_self_contained_with_every_figure(fast_run):
    page = render_html(fast_run)
    srcs = re.findall(r'<img src="([^"]+)"', page)
    assert len(srcs) == sum(len(r.figures) for r in fast_run.results)
    for src in srcs:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1]).startswith(b"\x89PNG")
    assert "http://" not in page and "https://" not in page and "<script" not in page
    for r in fast_run.results:
        for value in r.summary.values():
            assert f">{format_value(value)}<" in page


def test_markdown_and_terminal(fast_run, tmp_path):
    text, files = render_markdown(fast_run)
    assert text.startswith("# datakit audit report") and all(f in text for f in files)
    paths = write_report(fast_run, tmp_path, ["md", "json"])
    assert [p.name for p in paths] == ["report.md", "report.json"]
    assert all((tmp_path / rel).read_bytes().startswith(b"\x89PNG") for rel in files)
    table = summary_frame(fast_run)
    assert table["audit"].tolist() == FAST.split(",") and (table["status"] == "ok").all()
    with pytest.raises(ValueError, match=r"Unknown report format 'pdf'"):
        write_report(fast_run, tmp_path, ["pdf"])


def test_cli_writes_reports_and_fail_on(two_sources, tmp_path):
    runner = CliRunner()
    out = tmp_path / "rep"
    args = ["audit", str(two_sources), "--audits", "balance,name_that_dataset", "--out", str(out), "--quiet",
            "-o", "name_that_dataset.probes=linear", "-o", "name_that_dataset.n_per_dataset=150",
            "-o", "name_that_dataset.learning_curve=[10,150]"]
    res = runner.invoke(cli, args + ["--fail-on", "name_that_dataset.accuracy>0.9"])
    assert res.exit_code == 1, res.output
    assert "FAIL: name_that_dataset.accuracy>0.9" in res.output
    assert (out / "report.html").exists() and (out / "report.json").exists() and not (out / "report.md").exists()
    data = json.loads((out / "report.json").read_text())
    acc = data["audits"]["name_that_dataset"]["summary"]["accuracy"]
    assert acc > 0.9
    assert "name_that_dataset" in res.output and "balance" in res.output  # the summary table
    # a condition that does not hold passes; two conditions, one holding, fail
    res = runner.invoke(cli, args + ["--fail-on", "name_that_dataset.accuracy<0.5"])
    assert res.exit_code == 0, res.output
    res = runner.invoke(cli, args + ["--fail-on", "balance.imbalance_ratio >= 100", "--fail-on",
                                     "name_that_dataset.chance==0.5"])
    assert res.exit_code == 1 and "FAIL: name_that_dataset.chance==0.5" in res.output
    assert "imbalance_ratio" not in res.output.split("FAIL:", 1)[1]


def test_cli_unknown_metric_lists_available(two_sources, tmp_path):
    res = CliRunner().invoke(cli, ["audit", str(two_sources), "--audits", "balance", "--out", str(tmp_path), "-q",
                                   "--fail-on", "balance.imbalance>2"])
    assert res.exit_code == 1
    assert "unknown metric 'imbalance' for audit 'balance'" in res.output
    assert "balance.imbalance_ratio" in res.output


def test_cli_errors(two_sources, tmp_path):
    runner = CliRunner()
    res = runner.invoke(cli, ["audit", str(two_sources), "--audits", "balanse", "--out", str(tmp_path)])
    assert res.exit_code == 1 and "Unknown audit 'balanse'. Did you mean 'balance'?" in res.output
    assert "Valid values are {" in res.output and "name_that_dataset" in res.output
    res = runner.invoke(cli, ["audit", str(two_sources), "--fail-on", "accuracy>0.9", "--out", str(tmp_path)])
    assert res.exit_code == 1 and "expected AUDIT.METRIC OP NUMBER" in res.output
    res = runner.invoke(cli, ["audit", str(two_sources), "--audits", "balance", "--fail-on",
                              "name_that_dataset.accuracy>0.9", "--out", str(tmp_path)])
    assert res.exit_code == 1 and "is not selected" in res.output
    res = runner.invoke(cli, ["audit", str(two_sources), "--audits", "balance", "-o", "balance.colour=1",
                              "--out", str(tmp_path)])
    assert res.exit_code == 1 and "Unknown option 'colour' for audit 'balance'" in res.output
    res = runner.invoke(cli, ["audit", str(two_sources), "--audits", "balance", "--map", "nope:a=b",
                              "--out", str(tmp_path)])
    assert res.exit_code == 1 and "--map refers to unknown dataset 'nope'" in res.output
    res = runner.invoke(cli, ["audit", "--out", str(tmp_path)])
    assert res.exit_code == 2 and "Give one or more DATASET" in res.output
    res = runner.invoke(cli, ["audit", str(tmp_path)])
    assert res.exit_code == 1 and "is not a datakit dataset" in res.output


def test_cli_list():
    res = CliRunner().invoke(cli, ["audit", "--list"])
    assert res.exit_code == 0
    for name in ("average_image", "name_that_dataset", "cross_dataset", "low_level_stats", "orientation_artifacts",
                 "balance"):
        assert re.search(rf"^{name}\s+\S", res.output, re.M)


def test_skips_are_reported_not_crashes(tmp_path):
    x = np.arange(20, dtype=np.uint8)[:, None, None] * np.ones((20, 8, 8), np.uint8)
    root = write_dataset(tmp_path / "u", x, [None] * 20, "train", name="unlabeled")
    res = CliRunner().invoke(cli, ["audit", str(root), "--out", str(tmp_path / "rep"), "-q", "--audits",
                                   "average_image,balance,name_that_dataset,cross_dataset"])
    assert res.exit_code == 0, res.output
    data = json.loads((tmp_path / "rep" / "report.json").read_text())["audits"]
    assert {k: v["status"] for k, v in data.items()} == {k: "skipped" for k in data}
    assert "needs labels" in data["balance"]["skipped"]
    assert "two or more datasets" in data["name_that_dataset"]["skipped"]
    page = (tmp_path / "rep" / "report.html").read_text()
    assert "Skipped:</strong> needs labels" in page


def test_failing_audit_is_recorded(two_sources, monkeypatch):
    import audits.balance as mod
    from audits import AUDITS

    def broken(datasets, **kw):
        raise RuntimeError("boom")

    monkeypatch.setitem(AUDITS._items, "balance", broken)
    run = run_audits([open_dataset(two_sources)], ["balance"])
    assert run.status == {"balance": "failed"}
    assert run.result("balance").skipped == "failed: RuntimeError: boom"
    assert mod.balance is not broken


def test_gate_unit(fast_run):
    cond = parse_condition("cross_dataset.accuracy[mnist->usps] <= 0.6")
    assert (cond.audit, cond.metric, cond.op, cond.value) == ("cross_dataset", "accuracy[mnist->usps]", "<=", 0.6)
    assert parse_condition("balance.imbalance_ratio!=1e3").value == 1000.0
    held = evaluate_conditions(fast_run, [parse_condition("balance.n_classes==10"),
                                          parse_condition("balance.n_classes>10")])
    assert [(c.text, v) for c, v in held] == [("balance.n_classes==10", 10.0)]
    assert "balance.imbalance_ratio" in available_metrics(fast_run)
    with pytest.raises(DatakitError, match="non-numeric metric 'max_class'"):
        evaluate_conditions(fast_run, [parse_condition("orientation_artifacts.max_class>1")])
    with pytest.raises(DatakitError, match="audit 'cross_dataset' was not run"):
        evaluate_conditions(fast_run, [cond])


def test_option_and_map_parsing():
    assert parse_option("a.b=[10, 100]") == ("a", "b", [10, 100])
    assert parse_option("a.b=true") == ("a", "b", True)
    assert parse_option("a.b=x,y") == ("a", "b", "x,y")
    with pytest.raises(DatakitError, match="expected AUDIT.KEY=VALUE"):
        parse_option("n_per_dataset=3")
    assert parse_class_map(["a:x=y", "a:z=w", "b:q=y"]) == {"a": {"x": "y", "z": "w"}, "b": {"q": "y"}}
    with pytest.raises(DatakitError, match="is not LABEL=SHARED"):
        parse_class_map(["a:x"])
