"""Tasks, the annotation table, and Mechanical Turk / Label Studio import-export."""
from __future__ import annotations

import csv
import json

import pandas as pd
import pytest

from datakit import open_dataset
from datakit.crowd.io import export_labelstudio, export_mturk, import_labelstudio, import_mturk
from datakit.crowd.simulate import SimulatedCrowd, truth_for_tasks
from datakit.crowd.tasks import (TASK_COLUMNS, check_votes_known, gold_answers, load_annotations, load_tasks,
                                 make_binary_tasks, make_multiclass_tasks, save_annotations, save_tasks)
from datakit.errors import DatakitError


def test_binary_tasks_grids_gold_and_shuffle(crowd_dataset):
    root, truth = crowd_dataset
    m = open_dataset(root).manifest
    gold_ids = m.groupby("label").head(2)["id"]
    gold = pd.Series([truth[i] == l for i, l in zip(gold_ids, m.set_index("id").loc[gold_ids, "label"])],
                     index=gold_ids)
    tasks = make_binary_tasks(m, grid_size=5, gold=gold, gold_per_task=2, seed=1,
                              categories=pd.DataFrame({"label": ["bag"], "name": ["handbag"], "gloss": ["a bag"]}))
    assert list(tasks.columns) == TASK_COLUMNS
    assert (tasks.groupby("task").size() <= 5).all()
    # every non-gold candidate appears exactly once, gold ones only as gold
    ordinary = tasks[tasks["gold"].isna()]
    assert sorted(ordinary["item"]) == sorted(set(m["id"]) - set(gold_ids))
    assert set(tasks.loc[tasks["gold"].notna(), "item"]) <= set(gold_ids)
    assert (tasks[tasks["gold"].notna()].groupby("task").size() == 2).all()
    # each task asks about one class, its items are candidates of that class
    own = m.set_index("id")["label"]
    assert (tasks["item"].map(own) == tasks["question"]).all()
    assert set(tasks.loc[tasks["question"] == "bag", "question_name"]) == {"handbag"}
    assert gold_answers(tasks).isin(["yes", "no"]).all()
    again = make_binary_tasks(m, grid_size=5, gold=gold, gold_per_task=2, seed=1)
    assert again["item"].tolist() == tasks["item"].tolist()  # seeded
    with pytest.raises(ValueError, match="gold_per_task"):
        make_binary_tasks(m, grid_size=4, gold_per_task=4)
    with pytest.raises(DatakitError, match="gold ids not in the manifest"):
        make_binary_tasks(m, gold=pd.Series({"nope": True}))
    with pytest.raises(ValueError, match="binary gold answer"):
        make_binary_tasks(m, gold=pd.Series({m["id"][0]: "perhaps"}))


def test_multiclass_tasks(crowd_dataset):
    root, truth = crowd_dataset
    m = open_dataset(root).manifest
    tasks = make_multiclass_tasks(m, classes=["bag", "shirt", "shoe"], grid_size=10,
                                  gold=truth.iloc[:3], gold_per_task=1)
    assert set(tasks["kind"]) == {"multiclass"} and set(tasks["question"]) == {"bag|shirt|shoe"}
    assert tasks[tasks["gold"].isna()]["item"].nunique() == 33
    with pytest.raises(ValueError, match="not among the classes"):
        make_multiclass_tasks(m, classes=["bag", "shirt"], gold=pd.Series({m["id"][0]: "hat"}))
    with pytest.raises(ValueError, match="at least 2 classes"):
        make_multiclass_tasks(m, classes=["bag"])


def test_annotations_roundtrip_and_duplicate_rule(tmp_path):
    votes = pd.DataFrame({"task": ["a", "a", "a", "b"], "worker": ["u", "u", "v", "u"],
                          "label": ["yes", "no", "no", "yes"], "time": [5.0, 1.0, 2.0, 3.0]})
    table = save_annotations(tmp_path, votes)
    # u voted twice on a: the earliest (time 1.0, "no") counts
    assert len(table) == 3
    assert table[(table["task"] == "a") & (table["worker"] == "u")]["label"].tolist() == ["no"]
    again = save_annotations(tmp_path, votes)  # re-import: nothing new
    assert len(again) == 3 and len(load_annotations(tmp_path)) == 3
    with pytest.raises(DatakitError, match=r"unknown tasks: \['b'\]"):
        check_votes_known(votes, {"a"})
    with pytest.raises(DatakitError, match="no tasks.parquet"):
        load_tasks(tmp_path)


def _fake_mturk_results(tasks, path, truth):
    """A results file as Mechanical Turk writes it, answered by a simulated crowd, plus bad rows."""
    crowd = SimulatedCrowd(n_workers=4, accuracy=1.0, seed=0)
    grids = {t: g.sort_values("position") for t, g in tasks.groupby("task")}
    width = max(len(g) for g in grids.values())
    header = (["HITId", "AssignmentId", "WorkerId", "AssignmentStatus", "SubmitTime", "WorkTimeInSeconds", "Input.task"]
              + [f"Input.item_{j}" for j in range(1, width + 1)] + [f"Answer.item_{j}" for j in range(1, width + 1)])
    rows = []
    for n, (task, g) in enumerate(grids.items()):
        items = g["item"].tolist()
        for a, worker in enumerate(["W1", "W2"]):
            answers = [crowd.vote("sim0", truth[i], ["yes", "no"]) for i in items]
            pad = [""] * (width - len(items))
            rows.append([f"H{n}", f"A{n}{a}", worker, "Submitted", "Tue Nov 28 10:12:13 PST 2026", "42", task]
                        + items + pad + answers + pad)
    good = len(rows)
    bad = list(rows[0])
    bad[2] = ""  # missing WorkerId
    rows.append(bad)
    unknown = list(rows[1])
    unknown[6] = "no-such-task"
    rows.append(unknown)
    invalid = list(rows[0])
    invalid[2] = "W3"
    invalid[7 + width] = "maybe"
    rows.append(invalid)
    rejected = list(rows[0])
    rejected[2], rejected[3] = "W4", "Rejected"
    rows.append(rejected)
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows)
    return good


def test_mturk_export_and_import_with_malformed_rows(crowd_dataset, tmp_path):
    root, true_class = crowd_dataset
    m = open_dataset(root).manifest
    tasks = make_binary_tasks(m, grid_size=6, gold_per_task=0)
    out = export_mturk(tasks, tmp_path / "batch.csv", image_url="https://example.org/{path}",
                       paths=dict(zip(m["id"], m["path"])))
    batch = pd.read_csv(out)
    assert len(batch) == tasks["task"].nunique()
    assert batch.loc[0, "image_url_1"] == f"https://example.org/{m.set_index('id').loc[batch.loc[0, 'item_1'], 'path']}"
    layout = (tmp_path / "batch.html").read_text()
    assert 'name="item_1" value="yes"' in layout and "${image_url_6}" in layout and "${image_url_7}" not in layout
    truth = truth_for_tasks(tasks, true_class)
    good = _fake_mturk_results(tasks, tmp_path / "results.csv", truth)
    result = import_mturk(tmp_path / "results.csv", tasks)
    # header is line 1, so the appended bad rows are lines good+2 .. good+4
    assert result.errors == [
        (good + 2, "missing WorkerId"),
        (good + 3, "unknown task 'no-such-task'"),
        (good + 4, "invalid answer 'maybe' for item_1; valid values are {yes, no}"),
    ]
    assert result.skipped == 1
    assert len(result.votes) == 2 * len(tasks)
    assert set(result.votes["worker"]) == {"W1", "W2"}
    assert (result.votes["label"] == result.votes["task"].map(truth)).all()  # accuracy-1 crowd
    assert result.votes["time"].notna().all() and (result.votes["work_time"] == 42).all()


def test_mturk_import_rejects_foreign_csv(tmp_path, crowd_dataset):
    root, _ = crowd_dataset
    tasks = make_binary_tasks(open_dataset(root).manifest, grid_size=6, gold_per_task=0)
    (tmp_path / "x.csv").write_text("a,b\n1,2\n")
    with pytest.raises(DatakitError, match="not a Mechanical Turk results file"):
        import_mturk(tmp_path / "x.csv", tasks)


def test_labelstudio_export_and_import(crowd_dataset, tmp_path):
    root, true_class = crowd_dataset
    m = open_dataset(root).manifest
    tasks = make_binary_tasks(m, grid_size=6, gold_per_task=0)
    js, xml = export_labelstudio(tasks, tmp_path / "tasks.json", paths=dict(zip(m["id"], m["path"])))
    exported = json.loads(js.read_text())
    assert len(exported) == len(tasks) and exported[0]["data"]["image"].startswith("images/")
    assert '<Choice value="yes"/>' in xml.read_text()
    truth = truth_for_tasks(tasks, true_class)
    records = []
    for k, rec in enumerate(exported):
        item = rec["data"]["item"]
        rec = dict(rec, id=k, annotations=[
            {"id": 10 * k, "completed_by": 1, "result": [{"from_name": "answer", "to_name": "image", "type": "choices",
                                                           "value": {"choices": [truth[item]]}}],
             "was_cancelled": False, "created_at": "2026-11-28T10:00:00Z", "lead_time": 3.5},
            {"id": 10 * k + 1, "completed_by": {"email": "ann@example.org"}, "was_cancelled": True, "result": []},
        ])
        records.append(rec)
    records.append({"id": 999, "data": {"task": "ghost", "item": "x"}, "annotations": []})
    records.append({"id": 1000, "data": {"task": exported[0]["data"]["task"], "item": exported[0]["data"]["item"]},
                    "annotations": [{"id": 5, "completed_by": 2,
                                     "result": [{"value": {"choices": ["perhaps"]}}]}]})
    (tmp_path / "export.json").write_text(json.dumps(records, indent=1))
    result = import_labelstudio(tmp_path / "export.json", tasks)
    assert len(result.votes) == len(tasks) and result.skipped == len(tasks)
    assert (result.votes["label"] == result.votes["task"].map(truth)).all()
    assert [r for _, r in result.errors] == ["unknown task 'ghost'",
                                             "invalid answer 'perhaps'; valid values are {yes, no}"]
    lines = (tmp_path / "export.json").read_text().splitlines()
    for line, _ in result.errors:  # reported lines are where the bad records start
        assert lines[line - 1].strip() == "{"
    (tmp_path / "broken.json").write_text('[{"data": ')
    with pytest.raises(DatakitError, match="invalid JSON"):
        import_labelstudio(tmp_path / "broken.json", tasks)


def test_save_and_load_tasks(crowd_dataset):
    root, _ = crowd_dataset
    tasks = make_binary_tasks(open_dataset(root).manifest, grid_size=6)
    save_tasks(root, tasks)
    pd.testing.assert_frame_equal(load_tasks(root), tasks)


def test_simulated_crowd_answers_tasks(crowd_dataset):
    root, true_class = crowd_dataset
    tasks = make_binary_tasks(open_dataset(root).manifest, grid_size=6, gold_per_task=0)
    truth = truth_for_tasks(tasks, true_class)
    assert (truth == "no").sum() == 9  # every fourth of 36 candidates is from another class
    perfect = SimulatedCrowd(n_workers=5, accuracy=1.0, seed=0).answer_tasks(tasks, truth, assignments=3)
    assert len(perfect) == 3 * len(tasks)
    assert (perfect["label"] == perfect["task"].map(truth)).all()
    adversaries = SimulatedCrowd(n_workers=5, adversary_share=1.0, seed=0).answer_tasks(tasks, truth)
    assert (adversaries["label"] != adversaries["task"].map(truth)).all()
    spam = SimulatedCrowd(n_workers=5, spammer_share=1.0, seed=0).answer_tasks(tasks, truth, assignments=5)
    assert 0.35 < (spam["label"] == "yes").mean() < 0.65
    with pytest.raises(ValueError, match="spammer_share"):
        SimulatedCrowd(spammer_share=1.5)
    with pytest.raises(ValueError, match="accuracy"):
        SimulatedCrowd(accuracy=(0.9, 0.5))
    confused = SimulatedCrowd(n_workers=3, accuracy=0.0, confusions={("shirt", "bag"): 1.0}, seed=0)
    assert {confused.vote("sim0", "shirt", ["bag", "shirt", "shoe"]) for _ in range(20)} == {"bag"}
