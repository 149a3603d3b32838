"""`datakit crowd ...` and `datakit annotate ...` through click's CliRunner."""
from __future__ import annotations

import json

import pandas as pd
import pytest
from click.testing import CliRunner

from datakit.cli import cli
from datakit.crowd.tasks import load_annotations, load_tasks

SUBCOMMANDS = ["tasks", "export", "import", "aggregate", "quality", "agreement", "frequency", "simulate", "consensus"]


@pytest.fixture
def runner():
    return CliRunner()


@pytest.fixture
def prepared(crowd_dataset, tmp_path, runner):
    """A pool with tasks, a truth CSV and simulated votes (20% spammers)."""
    root, truth = crowd_dataset
    truth_csv = tmp_path / "truth.csv"
    truth.rename_axis("id").reset_index().to_csv(truth_csv, index=False)
    gold_csv = tmp_path / "gold.csv"
    from datakit import open_dataset

    own = open_dataset(root).manifest.set_index("id")["label"]
    gold_ids = truth.index[:6]
    pd.DataFrame({"id": gold_ids, "answer": [truth[i] == own[i] for i in gold_ids]}).to_csv(gold_csv, index=False)
    r = runner.invoke(cli, ["crowd", "tasks", str(root), "--grid-size", "6", "--gold", str(gold_csv),
                            "--gold-per-task", "1", "--format", "json"])
    assert r.exit_code == 0, r.output
    assert 1 <= json.loads(r.output)[0]["gold_items"] <= 6  # gold items are drawn per grid
    r = runner.invoke(cli, ["crowd", "simulate", str(root), "--truth", str(truth_csv), "--spammers", "0.2",
                            "--assignments", "5", "--seed", "1"])
    assert r.exit_code == 0, r.output
    assert "{'honest': 24, 'spammer': 6}" in r.output
    return root, truth, truth_csv


def test_every_command_has_help(runner):
    for sub in SUBCOMMANDS:
        r = runner.invoke(cli, ["crowd", sub, "--help"])
        assert r.exit_code == 0 and "Usage:" in r.output and len(r.output.splitlines()) > 4, sub
    r = runner.invoke(cli, ["annotate", "serve", "--help"])
    assert r.exit_code == 0 and "--host" in r.output and "127.0.0.1" in r.output


def test_aggregate_quality_agreement_frequency(prepared, runner, tmp_path):
    root, truth, _ = prepared
    out = tmp_path / "labels.csv"
    r = runner.invoke(cli, ["crowd", "aggregate", str(root), "--method", "dawid_skene", "--out", str(out),
                            "--format", "csv"])
    assert r.exit_code == 0, r.output
    labels = pd.read_csv(out)
    assert len(labels) == load_tasks(root)["item"].nunique() and set(labels["label"]) <= {"yes", "no"}
    assert labels["probability"].between(0.5, 1).all()
    r = runner.invoke(cli, ["crowd", "quality", str(root), "--format", "json"])
    assert r.exit_code == 0
    q = pd.DataFrame(json.loads(r.output))
    assert {"worker", "gold_accuracy", "spam_score", "flag"} <= set(q.columns) and q["flag"].any()
    r = runner.invoke(cli, ["crowd", "agreement", str(root), "--format", "json"])
    assert r.exit_code == 0
    rep = json.loads(r.output)
    assert [row["scope"] for row in rep] == ["overall", "bag", "shirt", "shoe"]
    r = runner.invoke(cli, ["crowd", "frequency", str(root), "--format", "csv"])
    assert r.exit_code == 0 and r.output.startswith("task,n_votes,n_selected,selection_frequency")


def test_consensus_from_annotations_and_simulated(prepared, runner):
    root, truth, truth_csv = prepared
    r = runner.invoke(cli, ["crowd", "consensus", str(root), "--initial-votes", "5", "--format", "json"])
    assert r.exit_code == 0, r.output
    per_class = json.loads(r.output)
    assert {row["question"] for row in per_class} == {"bag", "shirt", "shoe"}
    assert sum(row["images"] for row in per_class) == 36
    saved = pd.read_parquet(root / "consensus.parquet")
    assert len(saved) == 36 and "more_votes" in saved
    r = runner.invoke(cli, ["crowd", "consensus", str(root), "--source", "simulate", "--truth", str(truth_csv),
                            "--items", "--format", "json", "-q"])
    assert r.exit_code == 0, r.output
    rows = pd.DataFrame(json.loads(r.output))
    assert len(rows) == 36 and (rows[rows["phase"] == "subset"]["votes"] >= 10).all()
    r = runner.invoke(cli, ["crowd", "consensus", str(root), "--source", "simulate"])
    assert r.exit_code != 0 and "needs --truth" in r.output
    r = runner.invoke(cli, ["crowd", "consensus", str(root), "--source", "app"])
    assert r.exit_code == 1 and "votes.sqlite does not exist" in r.output


def test_export_import_roundtrip_with_bad_rows(prepared, runner, tmp_path):
    root, truth, _ = prepared
    out = tmp_path / "batch.csv"
    r = runner.invoke(cli, ["crowd", "export", str(root), "--to", "mturk", "--out", str(out),
                            "--image-url", "https://example.org/{path}"])
    assert r.exit_code == 0 and "HITs" in r.output
    batch = pd.read_csv(out)
    # a results file: the first HIT answered "yes" everywhere by worker M1, plus one row with an unknown task
    items = [c for c in batch.columns if c.startswith("item_")]
    row = {"WorkerId": "M1", "AssignmentId": "A1", "Input.task": batch.loc[0, "task"]}
    for c in items:
        row[f"Input.{c}"] = batch.loc[0, c]
        row[f"Answer.{c}"] = "yes" if isinstance(batch.loc[0, c], str) else ""
    results = pd.DataFrame([row, dict(row, WorkerId="M2", **{"Input.task": "bogus"})])
    results.to_csv(tmp_path / "results.csv", index=False)
    before = len(load_annotations(root))
    r = runner.invoke(cli, ["crowd", "import", str(root), str(tmp_path / "results.csv"), "--from", "mturk"])
    assert r.exit_code == 0, r.output
    assert "results.csv:3: unknown task 'bogus' (skipped)" in r.output
    n_items = int(batch.loc[0, "n_items"])
    assert f"imported {n_items} new votes" in r.output
    assert len(load_annotations(root)) == before + n_items
    r = runner.invoke(cli, ["crowd", "import", str(root), str(tmp_path / "results.csv"), "--from", "mturk"])
    assert "imported 0 new votes" in r.output  # re-import: duplicates count once
    r = runner.invoke(cli, ["crowd", "export", str(root), "--to", "labelstudio", "--out", str(tmp_path / "ls.json")])
    assert r.exit_code == 0 and (tmp_path / "ls.xml").exists()


def test_import_from_app_db(prepared, runner):
    root, _, _ = prepared
    from datakit.crowd.db import VoteDB

    tasks = load_tasks(root)
    first = tasks[tasks["task"] == tasks["task"].iloc[0]]
    VoteDB(root / "votes.sqlite").record([(t, i, "appworker", "yes") for t, i in zip(first["task"], first["item"])])
    r = runner.invoke(cli, ["crowd", "import", str(root), "--from", "app"])
    assert r.exit_code == 0 and f"imported {len(first)} new votes" in r.output
    votes = load_annotations(root)
    assert set(votes.loc[votes["worker"] == "appworker", "batch"]) == {"app"}
    r = runner.invoke(cli, ["crowd", "consensus", str(root), "--source", "app", "--format", "json"])
    assert r.exit_code == 0


def test_clean_errors(runner, tmp_path, crowd_dataset):
    root, _ = crowd_dataset
    r = runner.invoke(cli, ["crowd", "aggregate", str(root)])
    assert r.exit_code == 1 and "has no votes yet" in r.output and "Traceback" not in r.output
    r = runner.invoke(cli, ["crowd", "export", str(root), "--to", "mturk", "--out", str(tmp_path / "x.csv")])
    assert r.exit_code == 1 and "no tasks.parquet" in r.output
    r = runner.invoke(cli, ["crowd", "import", str(root), "--from", "mturk"])
    assert r.exit_code == 1 and "no tasks.parquet" in r.output
    (tmp_path / "g.csv").write_text("item,answer\nx,yes\n")
    r = runner.invoke(cli, ["crowd", "tasks", str(root), "--gold", str(tmp_path / "g.csv")])
    assert r.exit_code == 1 and "needs columns id,answer" in r.output
    bad_gold = tmp_path / "bad_gold.csv"
    from datakit import open_dataset

    bad_gold.write_text(f"id,answer\n{open_dataset(root).manifest['id'][0]},perhaps\n")
    r = runner.invoke(cli, ["crowd", "tasks", str(root), "--gold", str(bad_gold)])
    assert r.exit_code == 1 and "binary gold answer 'perhaps'" in r.output and "Traceback" not in r.output
    empty = tmp_path / "empty"
    empty.mkdir()
    r = runner.invoke(cli, ["crowd", "tasks", str(empty)])
    assert r.exit_code == 1 and "neither manifest.parquet" in r.output


def test_tasks_on_a_candidates_directory(runner, crowd_dataset, tmp_path):
    """`datakit candidates` output (candidates.parquet, synset column) works like a dataset."""
    root, _ = crowd_dataset
    from datakit import open_dataset

    m = open_dataset(root).manifest
    cand = tmp_path / "cands"
    cand.mkdir()
    frame = pd.DataFrame({"synset": m["label"], "id": m["id"], "path": m["path"]})
    # the first image was also found for a second synset
    frame = pd.concat([frame, frame.iloc[:1].assign(synset="hat")], ignore_index=True)
    frame.to_parquet(cand / "candidates.parquet")
    r = runner.invoke(cli, ["crowd", "tasks", str(cand), "--grid-size", "12", "--format", "json"])
    assert r.exit_code == 0, r.output
    assert "1 extra questions about images that are candidates for more than one synset" in r.output
    tasks = load_tasks(cand)
    assert tasks["item"].nunique() == 37 and set(tasks["question"]) == {"bag", "shirt", "shoe", "hat"}
    first = m["id"].iloc[0]
    assert tasks.loc[tasks["item"] == f"hat:{first}", "question"].tolist() == ["hat"]
    assert tasks.loc[tasks["item"] == first, "question"].tolist() == [m["label"].iloc[0]]


def test_next_round_of_tasks_for_images_needing_votes(prepared, runner):
    root, truth, _ = prepared
    r = runner.invoke(cli, ["crowd", "consensus", str(root), "--min-subset", "3", "--initial-votes", "5"])
    assert r.exit_code == 0, r.output
    plan = pd.read_parquet(root / "consensus.parquet")
    need = set(plan.loc[plan["more_votes"] > 0, "item"])
    assert need
    first = load_tasks(root)
    r = runner.invoke(cli, ["crowd", "tasks", str(root), "--needing-votes", "--grid-size", "6", "--gold-per-task", "0"])
    assert r.exit_code == 0, r.output
    tasks = load_tasks(root)
    added = tasks[~tasks["task"].isin(first["task"])]
    assert set(added["item"]) == need and added["task"].str.contains("-round2-").all()
    assert len(tasks) == len(first) + len(added)  # earlier rounds are kept
    r = runner.invoke(cli, ["crowd", "tasks", str(root), "--needing-votes", "--grid-size", "6", "--gold-per-task", "0"])
    assert r.exit_code == 0 and load_tasks(root)["task"].str.contains("-round3-").any()


def test_annotate_serve_clean_errors(runner, crowd_dataset):
    import socket

    root, _ = crowd_dataset
    r = runner.invoke(cli, ["annotate", "serve", str(root), "--port", "0"])
    assert r.exit_code == 1 and "no tasks.parquet" in r.output and "datakit crowd tasks" in r.output
    runner.invoke(cli, ["crowd", "tasks", str(root), "--grid-size", "6"])
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        r = runner.invoke(cli, ["annotate", "serve", str(root), "--port", str(port)])
    assert r.exit_code == 1 and f"cannot bind 127.0.0.1:{port}" in r.output
