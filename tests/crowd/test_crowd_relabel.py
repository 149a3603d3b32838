"""The loop back: `crowd tasks --from-audit` re-annotation tasks and the build's [relabel] table."""
from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner
from PIL import Image

import datakit
from datakit.build import build_dataset
from datakit.cli import cli
from datakit.crowd.relabel import NONE_OF_THESE, RELABEL_FILE, decide_relabel
from datakit.errors import RecipeError
from datakit.recipe import parse_recipe

from image_helpers import blocky_glyph as _glyph

NAME = "relabel-demo"
RECIPE = f"""
name = "{NAME}"
[[sources]]
name = "shapes"
kind = "folder"
path = "data"
[normalize]
style = "none"
[splits]
train = 0.5
val = 0.0
test = 0.5
"""
COLUMNS = ["dataset", "id", "given_label", "suggested_label", "label_quality", "is_label_issue", "score", "flag"]

#: flagged image (source_ref) -> (suggested label, the three re-annotation answers)
FLAGGED = {
    "a/0.png": ("b", ["b", "b", "b"]),                          # the crowd chooses b: relabel a -> b
    "b/1.png": ("c", ["b", "b", "c"]),                          # the crowd confirms b: keep
    "c/2.png": ("a", [NONE_OF_THESE, NONE_OF_THESE, "a"]),      # none of these: drop
    "a/3.png": ("c", ["a", "b", "c"]),                          # split votes: unresolved
}


def _report(path: Path, rows: list[list], *, skipped: str | None = None, audits: dict | None = None) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    audit = {"status": "skipped" if skipped else "ok", "skipped": skipped, "summary": {}, "notes": [], "tables": {},
             "per_image": None if skipped else {"columns": COLUMNS, "rows": rows}, "figures": [], "info": {}}
    body = {"datakit_version": datakit.__version__, "created": "2026-12-07T00:00:00+00:00", "seconds_total": 1.0,
            "datasets": [{"name": NAME}], "options": {},
            "audits": audits if audits is not None else {"label_issues": audit}}
    (path / "report.json").write_text(json.dumps(body))
    return path


def _rows(manifest: pd.DataFrame, flagged: dict = FLAGGED) -> list[list]:
    """The label_issues per-image table: every image, the FLAGGED ones flagged, plus another dataset's row."""
    rows = []
    for image_id, ref, label in zip(manifest["id"], manifest["source_ref"], manifest["label"]):
        hit = ref in flagged
        quality = 0.1 if hit else 0.9
        rows.append([NAME, image_id, label, flagged[ref][0] if hit else label, quality, hit, 1 - quality, hit])
    rows.append(["other", "f" * 64, "a", "b", 0.0, True, 1.0, True])  # another dataset: ignored
    return rows


@pytest.fixture
def built(tmp_path):
    """A 12-image dataset (classes a, b, c) built from a folder recipe, and a report flagging 4 of its images."""
    for c, base in (("a", 0), ("b", 10), ("c", 20)):
        for i in range(4):
            path = tmp_path / "data" / c / f"{i}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(_glyph(base + i + 1)).save(path)
    (tmp_path / "plain.toml").write_text(RECIPE)
    build_dataset(tmp_path / "plain.toml", tmp_path / "ds", data_root=tmp_path, workers=0)
    manifest = datakit.open_dataset(tmp_path / "ds").manifest
    report = _report(tmp_path / "report", _rows(manifest))
    return tmp_path, manifest, report


def _tasks(root: Path, report: Path, *extra: str):
    return CliRunner().invoke(cli, ["crowd", "tasks", str(root / "ds"), "--from-audit", str(report), *extra])


def _votes(root: Path, manifest: pd.DataFrame) -> pd.DataFrame:
    """Three workers answer each flagged image in the task that showed it, plus older votes without a hit."""
    tasks = pd.read_parquet(root / "ds" / "tasks.parquet")
    hit_of = dict(zip(tasks["item"], tasks["task"]))
    ids = dict(zip(manifest["source_ref"], manifest["id"]))
    rows = []
    for ref, (_, answers) in FLAGGED.items():
        for w, answer in enumerate(answers):
            rows.append({"task": ids[ref], "worker": f"w{w}", "label": answer, "time": float(w),
                         "batch": "hand", "hit": hit_of[ids[ref]], "assignment": None})
    for w in range(5):  # an earlier round's votes on a/0.png (no relabel hit): must not count
        rows.append({"task": ids["a/0.png"], "worker": f"old{w}", "label": "a", "time": 0.0, "batch": "old",
                     "hit": None, "assignment": None})
    return pd.DataFrame(rows)


def _relabel_build(root: Path, table: str = "", out: str = "ds"):
    recipe = root / f"relabel-{out}.toml"
    recipe.write_text(RECIPE + textwrap.dedent(f"""
        [relabel]
        annotations = "ds"
        """) + textwrap.dedent(table))
    return build_dataset(recipe, root / out, data_root=root, workers=0)


def test_tasks_from_audit_include_given_and_suggested(built):
    root, manifest, report = built
    result = _tasks(root, report, "--grid-size", "3")
    assert result.exit_code == 0, result.output
    assert "relabel" in result.output and "flagged" in result.output
    tasks = pd.read_parquet(root / "ds" / "tasks.parquet")
    ids = dict(zip(manifest["source_ref"], manifest["id"]))
    assert set(tasks["item"]) == {ids[r] for r in FLAGGED}  # the flagged images only; the other dataset's ignored
    assert set(tasks["kind"]) == {"multiclass"}
    assert tasks["task"].str.startswith("mc-relabel-").all() and tasks["task"].nunique() == 2
    for ref, (suggested, _) in FLAGGED.items():
        choices = tasks.loc[tasks["item"] == ids[ref], "question"].iloc[0].split("|")
        given = manifest.set_index("source_ref").loc[ref, "label"]
        assert {given, suggested, NONE_OF_THESE} <= set(choices)
        assert choices == ["a", "b", "c", NONE_OF_THESE]
    side = pd.read_parquet(root / "ds" / RELABEL_FILE)
    assert len(side) == 4 and set(side["task"]) == set(tasks["task"])
    assert side["report"].str.endswith("report").all()
    # the Mechanical Turk export consumes them: the layout offers the none-of-these answer
    out = root / "batch.csv"
    res = CliRunner().invoke(cli, ["crowd", "export", str(root / "ds"), "--to", "mturk", "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert f'value="{NONE_OF_THESE}"' in out.with_suffix(".html").read_text()
    # a second round gets new task ids; relabel.parquet records both
    again = _tasks(root, report, "--grid-size", "3")
    assert again.exit_code == 0, again.output
    tasks2 = pd.read_parquet(root / "ds" / "tasks.parquet")
    assert tasks2["task"].str.startswith("mc-relabel2-").sum() == 4 and len(tasks2) == 8
    assert len(pd.read_parquet(root / "ds" / RELABEL_FILE)) == 8


def test_tasks_from_audit_pair_choices(built):
    root, manifest, report = built
    result = _tasks(root, report, "--choices", "pair")
    assert result.exit_code == 0, result.output
    tasks = pd.read_parquet(root / "ds" / "tasks.parquet")
    ids = dict(zip(manifest["source_ref"], manifest["id"]))
    assert tasks["task"].nunique() == 4  # four distinct (given, suggested) pairs
    for ref, (suggested, _) in FLAGGED.items():
        given = manifest.set_index("source_ref").loc[ref, "label"]
        assert tasks.loc[tasks["item"] == ids[ref], "question"].iloc[0] == f"{given}|{suggested}|{NONE_OF_THESE}"


def test_relabel_build_applies_the_votes(built):
    root, manifest, report = built
    assert _tasks(root, report).exit_code == 0
    _votes(root, manifest).to_parquet(root / "ds" / "annotations.parquet")
    result = _relabel_build(root)
    assert not result.up_to_date
    ds = datakit.open_dataset(root / "ds")
    m = ds.manifest.set_index("source_ref")
    before = manifest.set_index("source_ref")
    assert (m.loc["a/0.png", "label"], m.loc["a/0.png", "original_label"]) == ("b", "a")
    assert m.loc["a/0.png", "label_name"] == "b"
    assert m.loc["a/0.png", "split"] == before.loc["a/0.png", "split"]  # a relabelled image keeps its split
    assert m.loc["b/1.png", "label"] == "b" and pd.isna(m.loc["b/1.png", "original_label"])
    assert m.loc["a/3.png", "label"] == "a" and pd.isna(m.loc["a/3.png", "original_label"])  # unresolved: kept
    assert "c/2.png" not in m.index
    assert int(m["original_label"].notna().sum()) == 1
    # every other image: same id, label and split as before
    rest = before.drop(index=["a/0.png", "c/2.png"])
    pd.testing.assert_frame_equal(m.loc[rest.index, ["id", "label", "split"]], rest[["id", "label", "split"]])
    rej = ds.rejected.set_index("source_ref")
    assert rej.loc["c/2.png", "stage"] == "relabel" and rej.loc["c/2.png", "reason"] == "none-of-these"
    assert len(ds.rejected) == 1
    info = ds.info["relabel"]
    assert {k: info[k] for k in ("flagged", "relabelled", "confirmed", "dropped", "unresolved", "votes_used")} == {
        "flagged": 4, "relabelled": 1, "confirmed": 1, "dropped": 1, "unresolved": 1, "votes_used": 12}
    assert info["changes"] == {"a -> b": 1}
    sheet = (root / "ds" / "DATASHEET.md").read_text()
    assert "Labels changed: 1 (a -> b: 1); labels confirmed: 1; images dropped: 1 (1 because the crowd chose none" \
        in sheet
    assert "unresolved: 1 (0 with too few votes, 1 without consensus), kept with their label" in sheet
    # a second build with the same recipe and votes does nothing and changes nothing
    sha = ds.info["checksums"]
    again = _relabel_build(root)
    assert again.up_to_date
    assert datakit.open_dataset(root / "ds").info["checksums"] == sha
    # new votes re-run the build: w3 and w4 make a/3.png a clear c
    votes = pd.read_parquet(root / "ds" / "annotations.parquet")
    extra = votes[votes["task"] == before.loc["a/3.png", "id"]].head(2).assign(worker=["w3", "w4"], label="c")
    pd.concat([votes, extra]).to_parquet(root / "ds" / "annotations.parquet")
    third = _relabel_build(root)
    assert not third.up_to_date
    m3 = datakit.open_dataset(root / "ds").manifest.set_index("source_ref")
    assert (m3.loc["a/3.png", "label"], m3.loc["a/3.png", "original_label"]) == ("c", "a")


def test_relabel_unresolved_drop_and_min_votes(built):
    root, manifest, report = built
    assert _tasks(root, report).exit_code == 0
    _votes(root, manifest).to_parquet(root / "ds" / "annotations.parquet")
    _relabel_build(root, 'unresolved = "drop"\n', out="dropped")
    rej = datakit.open_dataset(root / "dropped").rejected.set_index("source_ref")["reason"].to_dict()
    assert rej == {"c/2.png": "none-of-these", "a/3.png": "no-consensus"}
    _relabel_build(root, "min_votes = 4\n", out="few")
    few = datakit.open_dataset(root / "few")
    assert few.info["relabel"]["by_reason"] == {"too-few-votes": 4}
    assert few.manifest["original_label"].isna().all() and len(few.rejected) == 0


def test_relabel_dawid_skene(built):
    root, manifest, report = built
    assert _tasks(root, report).exit_code == 0
    _votes(root, manifest).to_parquet(root / "ds" / "annotations.parquet")
    _relabel_build(root, 'method = "dawid_skene"\nagreement = 0.9\n', out="ds_em")
    m = datakit.open_dataset(root / "ds_em").manifest.set_index("source_ref")
    assert (m.loc["a/0.png", "label"], m.loc["a/0.png", "original_label"]) == ("b", "a")


def test_decide_relabel_rules():
    relabel = pd.DataFrame({"id": ["x", "y", "z"], "task": ["t1", "t1", "t2"]})
    labels = pd.Series({"x": "a", "y": "b", "z": "a"})
    votes = pd.DataFrame({"task": ["x", "x", "y", "y", "y", "z", "z", "z"],
                          "worker": ["1", "2", "1", "2", "3", "1", "2", "3"],
                          "label": ["b", "b", "a", "b", "b", "b", "b", "b"],
                          "hit": ["t1", "t1", "t1", "t1", "t1", "t2", "t2", "other"]})
    d = decide_relabel(relabel, labels, votes, min_votes=2, agreement=0.6).set_index("id")
    assert d.loc["x", ["action", "label", "votes"]].tolist() == ["relabel", "b", 2]
    assert d.loc["y", ["action", "reason", "agreement"]].tolist() == ["keep", "confirmed", pytest.approx(2 / 3)]
    assert d.loc["z", "votes"] == 2  # the vote from another task does not count
    tie = decide_relabel(relabel.iloc[:1], labels, votes.assign(label=["a", "b"] + ["b"] * 6), min_votes=2)
    assert tie.loc[0, ["action", "reason"]].tolist() == ["keep", "no-consensus"]


@pytest.mark.parametrize("report_kw, message", [
    ({"audits": {"average_image": {"status": "ok", "skipped": None}}}, "has no 'label_issues' audit"),
    ({"skipped": "the dataset has one class"}, "was skipped: the dataset has one class"),
])
def test_from_audit_bad_reports(built, report_kw, message):
    root, manifest, _ = built
    report = _report(root / "bad", _rows(manifest), **report_kw)
    result = _tasks(root, report)
    assert result.exit_code == 1
    assert message in result.output
    assert not (root / "ds" / "tasks.parquet").exists()


def test_from_audit_ids_must_match(built):
    root, manifest, _ = built
    rows = _rows(manifest)
    rows[0][1] = "0" * 64  # a flagged id the dataset does not have
    rows[0][5] = True
    result = _tasks(root, _report(root / "stale", rows))
    assert result.exit_code == 1 and "not in the dataset's manifest" in result.output
    other = [[("someone-else",) + tuple(r[1:]) for r in _rows(manifest)][0]]
    result = _tasks(root, _report(root / "other", [list(other[0])]))
    assert result.exit_code == 1 and "no label_issues rows for dataset 'relabel-demo'" in result.output


def test_from_audit_nothing_flagged(built):
    root, manifest, _ = built
    result = _tasks(root, _report(root / "clean", _rows(manifest, flagged={})))
    assert result.exit_code == 0, result.output
    assert "nothing to re-annotate" in result.output
    assert not (root / "ds" / "tasks.parquet").exists() and not (root / "ds" / RELABEL_FILE).exists()


@pytest.mark.parametrize("table, match", [
    ('unresolved = "maybe"', r"relabel.unresolved: unknown value 'maybe'.*Valid values are \{keep, drop\}"),
    ('method = "mean"', r"relabel.method: unknown value 'mean'.*majority_vote, dawid_skene"),
    ("min_votes = 0", r"relabel.min_votes must be a positive integer, got 0"),
    ("agreement = 1.5", r"relabel.agreement must be a share of the votes in \(0, 1\], got 1.5"),
    ("agreement = true", r"relabel.agreement must be a share of the votes"),
    ("min_vote = 3", r"Unknown key relabel.'min_vote'.*Did you mean 'min_votes'"),
])
def test_relabel_recipe_errors(table, match):
    with pytest.raises(RecipeError, match=match):
        parse_recipe(RECIPE + '\n[relabel]\nannotations = "ds"\n' + table + "\n")


def test_relabel_recipe_needs_annotations_and_files(built):
    root, _, _ = built
    with pytest.raises(RecipeError, match="Missing key relabel.annotations"):
        parse_recipe(RECIPE + "\n[relabel]\nmethod = \"majority_vote\"\n")
    with pytest.raises(RecipeError, match=r"holds no relabel.parquet; make the re-annotation tasks"):
        _relabel_build(root)
    with pytest.raises(RecipeError, match=r"relabel.annotations: 'nowhere' is not a directory"):
        recipe = root / "nowhere.toml"
        recipe.write_text(RECIPE + '\n[relabel]\nannotations = "nowhere"\n')
        build_dataset(recipe, root / "x", data_root=root, workers=0)


def test_recipe_without_relabel_keeps_its_hash():
    assert "relabel" not in parse_recipe(RECIPE).canonical()


@pytest.mark.slow
def test_end_to_end_with_the_label_issues_audit(tmp_path):
    """Real digits -> label_issues audit -> re-annotation tasks -> simulated votes -> relabelled build."""
    pytest.importorskip("audits.label_issues", reason="the label_issues audit is not in this checkout")
    from datakit.crowd.simulate import SimulatedCrowd, truth_for_tasks

    recipe = 'name = "digits"\n[[sources]]\nname = "digits"\nkind = "sklearn-digits"\n[normalize]\nstyle = "none"\n' \
             '[splits]\ntrain = 0.8\ntest = 0.2\n'
    (tmp_path / "plain.toml").write_text(recipe)
    build_dataset(tmp_path / "plain.toml", tmp_path / "digits", workers=0)
    runner = CliRunner()
    res = runner.invoke(cli, ["audit", str(tmp_path / "digits"), "--audits", "label_issues", "--out",
                              str(tmp_path / "report"), "--format", "json"])
    assert res.exit_code == 0, res.output
    table = json.loads((tmp_path / "report" / "report.json").read_text())["audits"]["label_issues"]["per_image"]
    frame = pd.DataFrame(table["rows"], columns=table["columns"])
    flagged = frame[frame["is_label_issue"].astype(bool)]
    res = runner.invoke(cli, ["crowd", "tasks", str(tmp_path / "digits"), "--from-audit", str(tmp_path / "report")])
    assert res.exit_code == 0, res.output
    if flagged.empty:
        assert "nothing to re-annotate" in res.output
        return
    tasks = pd.read_parquet(tmp_path / "digits" / "tasks.parquet")
    assert set(tasks["item"]) == set(flagged["id"])
    # a perfect simulated crowd that agrees with the audit's suggestion
    truth = truth_for_tasks(tasks, pd.Series(flagged["suggested_label"].astype(str).to_numpy(),
                                             index=flagged["id"].to_numpy()))
    votes = SimulatedCrowd(n_workers=5, accuracy=1.0, seed=0).answer_tasks(tasks, truth, assignments=3)
    votes.to_parquet(tmp_path / "digits" / "annotations.parquet")
    (tmp_path / "relabel.toml").write_text(recipe + '[relabel]\nannotations = "digits"\n')
    build_dataset(tmp_path / "relabel.toml", tmp_path / "digits", workers=0)
    m = datakit.open_dataset(tmp_path / "digits").manifest.set_index("id")
    changed = m[m["original_label"].notna()]
    assert set(changed.index) == set(flagged["id"])
    want = flagged.set_index("id")
    assert (changed["label"] == want.loc[changed.index, "suggested_label"].astype(str)).all()
    assert (changed["original_label"] == want.loc[changed.index, "given_label"].astype(str)).all()


def test_tasks_from_audit_with_gold(built):
    root, manifest, report = built
    ids = dict(zip(manifest["source_ref"], manifest["id"]))
    gold = root / "gold.csv"
    pd.DataFrame({"id": [ids["c/0.png"], ids["b/3.png"]], "answer": ["c", "b"]}).to_csv(gold, index=False)
    result = _tasks(root, report, "--gold", str(gold), "--gold-per-task", "1", "--grid-size", "3")
    assert result.exit_code == 0, result.output
    tasks = pd.read_parquet(root / "ds" / "tasks.parquet")
    assert tasks["gold"].notna().groupby(tasks["task"]).sum().tolist() == [1, 1]
    assert set(pd.read_parquet(root / "ds" / RELABEL_FILE)["id"]) == {ids[r] for r in FLAGGED}  # gold not recorded
