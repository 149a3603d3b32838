"""The annotation app for a crowd: invitations, revocation, the operator's view, pauses, live rounds."""
from __future__ import annotations

import hashlib
import sqlite3

import pandas as pd
import pytest
from click.testing import CliRunner
from starlette.testclient import TestClient

from datakit import open_dataset
from datakit.cli import cli
from datakit.crowd.app import AnnotationApp, create_app
from datakit.crowd.credentials import CredentialStore
from datakit.crowd.tasks import load_tasks, make_binary_tasks, save_tasks

BASE = "http://127.0.0.1:8000"


@pytest.fixture
def dataset(crowd_dataset):
    """36 images in 6 binary grids of 6, one gold item per grid (gold answer 'yes' or 'no')."""
    root, truth = crowd_dataset
    m = open_dataset(root).manifest
    own = m.set_index("id")["label"]
    gold_ids = m.groupby("label").head(2)["id"]
    gold = pd.Series([truth[i] == own[i] for i in gold_ids], index=gold_ids)
    save_tasks(root, make_binary_tasks(m, grid_size=6, gold=gold, gold_per_task=1, seed=0))
    return root


def client(root, **options) -> TestClient:
    state = AnnotationApp(root, pause_below=options.pop("pause_below", None), min_gold=options.pop("min_gold", 10))
    return TestClient(create_app(state, **options), base_url=BASE, client=("127.0.0.1", 40000))


def invite(root, *names) -> dict[str, str]:
    r = CliRunner().invoke(cli, ["annotate", "invite", str(root), "--workers", ",".join(names), "--operator",
                                 "--url", BASE])
    assert r.exit_code == 0, r.output
    links = dict(line.split("\t") for line in r.stdout.splitlines())
    return {w: link.split("token=")[1] for w, link in links.items()}


def bearer(token) -> dict:
    return {"Authorization": f"Bearer {token}"}


def answers_for(task, label="yes"):
    return {i["item"]: label for i in task["items"]}


def test_invite_prints_links_and_stores_only_hashes(dataset):
    r = CliRunner().invoke(cli, ["annotate", "invite", str(dataset), "--workers", "alice,bob", "--url",
                                 "http://10.0.0.5:8765"])
    assert r.exit_code == 0, r.output
    lines = r.stdout.splitlines()
    assert [line.split("\t")[0] for line in lines] == ["alice", "bob"]
    tokens = [line.split("\t")[1].split("http://10.0.0.5:8765/join?token=")[1] for line in lines]
    assert len(set(tokens)) == 2 and all(len(t) >= 40 for t in tokens)
    assert "only hashes are kept" in r.stderr
    raw = (dataset / "votes.sqlite").read_bytes()
    wal = dataset / "votes.sqlite-wal"
    raw += wal.read_bytes() if wal.exists() else b""
    assert not any(t.encode() in raw for t in tokens)
    stored = sqlite3.connect(dataset / "votes.sqlite").execute("SELECT worker, token_hash FROM credentials").fetchall()
    assert dict(stored) == {w: hashlib.sha256(t.encode()).hexdigest() for w, t in zip(["alice", "bob"], tokens)}


def test_invite_from_csv_and_clean_errors(dataset, tmp_path):
    runner = CliRunner()
    sheet = tmp_path / "crowd.csv"
    sheet.write_text("worker,email\ncarol,c@example.org\ndan,d@example.org\n")
    r = runner.invoke(cli, ["annotate", "invite", str(dataset), "--csv", str(sheet)])
    assert r.exit_code == 0 and [x.split("\t")[0] for x in r.stdout.splitlines()] == ["carol", "dan"]
    r = runner.invoke(cli, ["annotate", "invite", str(dataset)])
    assert r.exit_code == 2 and "--workers alice,bob or --csv FILE" in r.output
    r = runner.invoke(cli, ["annotate", "invite", str(dataset), "--workers", "a b"])
    assert r.exit_code == 1 and "invalid worker name 'a b'" in r.output
    r = runner.invoke(cli, ["annotate", "revoke", str(dataset), "--worker", "zoe"])
    assert r.exit_code == 1 and "'zoe' has no active invitation (active: carol, dan)" in r.output


def test_every_call_needs_a_valid_unrevoked_credential(dataset):
    tokens = invite(dataset, "alice", "bob")
    c = client(dataset)
    for path in ("/api/next", "/api/me", "/api/stats", "/api/operator"):
        r = c.get(path)
        assert r.status_code == 401 and "invitation link" in r.json()["error"], path
    assert c.get("/api/next", headers=bearer("made-up")).status_code == 401
    task = c.get("/api/next", headers=bearer(tokens["alice"])).json()
    assert task["worker"] == "alice"
    image = c.get(task["items"][0]["url"])
    assert image.status_code == 401
    assert c.get(task["items"][0]["url"], headers=bearer(tokens["alice"])).content[:4] == b"\x89PNG"
    # the body cannot choose the worker: naming someone else is refused, naming yourself is fine
    r = c.post("/api/submit", json={"worker": "bob", "task": task["task"], "answers": answers_for(task)},
               headers=bearer(tokens["alice"]))
    assert r.status_code == 403 and "cannot vote as 'bob'" in r.json()["error"]
    r = c.post("/api/submit", json={"task": task["task"], "answers": answers_for(task)}, headers=bearer(tokens["alice"]))
    assert r.status_code == 200 and r.json()["recorded"] == 6
    assert set(AnnotationApp(dataset).db.frame()["worker"]) == {"alice"}
    # revoking ends the credential at once, for a running app too; the votes stay
    r = CliRunner().invoke(cli, ["annotate", "revoke", str(dataset), "--worker", "alice"])
    assert r.exit_code == 0 and "revoked alice" in r.output
    r = c.get("/api/next", headers=bearer(tokens["alice"]))
    assert r.status_code == 401 and "revoked" in r.json()["error"]
    assert c.get("/api/next", headers=bearer(tokens["bob"])).status_code == 200
    assert len(AnnotationApp(dataset).db.frame()) == 6
    # the operator's credential opens the operator's pages, not the worker's
    assert c.get("/api/next", headers=bearer(tokens["operator"])).status_code == 403
    assert c.get("/api/operator", headers=bearer(tokens["bob"])).status_code == 403
    assert c.get("/api/operator", headers=bearer(tokens["operator"])).status_code == 200


def test_invitation_link_sets_the_cookie(dataset):
    tokens = invite(dataset, "alice")
    c = client(dataset)
    r = c.get(f"/join?token={tokens['alice']}", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/"
    cookie = r.headers["set-cookie"]
    assert "datakit_annotate=" in cookie and "HttpOnly" in cookie and "SameSite=lax" in cookie
    assert c.get("/api/me").json() == {"worker": "alice", "tasks_done": 0, "tasks_left": 6, "gold_correct": 0,
                                       "gold_total": 0, "paused": None, "mode": "invitations"}
    r = c.get(f"/join?token={tokens['operator']}", follow_redirects=False)
    assert r.headers["location"] == "/operator"
    bad = client(dataset).get("/join?token=nope")
    assert bad.status_code == 401 and "Ask the operator for a new one" in bad.text


def test_open_mode_serves_only_loopback(dataset):
    state = AnnotationApp(dataset)
    remote = TestClient(create_app(state), base_url=BASE, client=("10.1.2.3", 40000))
    r = remote.get("/api/next?worker=alice")
    assert r.status_code == 403 and "datakit annotate invite" in r.json()["error"]
    assert client(dataset).get("/api/next?worker=alice").status_code == 200


def test_serve_refuses_the_network_without_invitations(dataset):
    r = CliRunner().invoke(cli, ["annotate", "serve", str(dataset), "--host", "0.0.0.0", "--port", "0"])
    assert r.exit_code == 1 and "refusing to serve 0.0.0.0 without invitations" in r.output
    assert "datakit annotate invite" in r.output


def test_operator_view_and_pausing_a_failing_worker(dataset):
    tokens = invite(dataset, "alice", "mallory")
    c = client(dataset, pause_below=0.6, min_gold=3)
    tasks = load_tasks(dataset)
    gold = dict(zip(tasks["item"], tasks["gold"]))
    flip = {"yes": "no", "no": "yes"}
    done = []
    for worker, right in (("alice", True), ("mallory", False)):
        for k in range(3):
            if worker == "alice":
                task = c.get("/api/next", headers=bearer(tokens[worker])).json()
                done.append(task["task"])
            else:  # mallory answers the grids alice answered (a worker may submit any task)
                task = c.get(f"/api/task/{done[k]}", headers=bearer(tokens[worker])).json()
            answers = {i["item"]: (gold[i["item"]] if right else flip[gold[i["item"]]])
                       if isinstance(gold[i["item"]], str) else "yes" for i in task["items"]}
            r = c.post("/api/submit", json={"task": task["task"], "answers": answers}, headers=bearer(tokens[worker]))
            assert r.status_code == 200
    assert r.json()["paused"] is True and r.json()["worker_gold_total"] == 3
    # mallory is refused from now on, with the reason; her votes are kept and flagged
    r = c.get("/api/next", headers=bearer(tokens["mallory"]))
    assert r.status_code == 403 and r.json()["paused"] is True
    assert "0 of 3 check items right (0%), below the 60% required" in r.json()["error"]
    assert c.get("/api/next", headers=bearer(tokens["alice"])).status_code == 200
    report = c.get("/api/operator", headers=bearer(tokens["operator"])).json()
    workers = {w["worker"]: w for w in report["workers"]}
    assert workers["alice"]["gold_accuracy"] == 1.0 and workers["alice"]["paused"] is None
    assert workers["mallory"]["gold_accuracy"] == 0.0 and workers["mallory"]["flagged_votes"] == 18
    assert workers["mallory"]["paused"].startswith("0 of 3")
    # same grids: they agree on the 15 ordinary items (both 'yes' where gold is missing), never on gold
    assert workers["alice"]["agreement_votes"] == 18 and workers["mallory"]["agreement"] < 1
    assert report["totals"] == {"tasks": 6, "votes": 36, "workers": 2, "tasks_without_votes": 3,
                                "flagged_votes": 18, "paused_workers": 1}
    assert report["rounds"] == [{"round": 1, "tasks": 6, "tasks_with_votes": 3, "tasks_without_votes": 3,
                                 "votes": 36, "workers_per_task": 1.0}]
    assert sum(t["votes"] for t in report["tasks"]) == 36
    assert {q["question"] for q in report["consensus"]["questions"]} == set(tasks["question"])
    assert len(AnnotationApp(dataset).db.flagged()) == 18
    page = c.get("/operator")
    assert page.status_code == 200 and b"operator.js" in page.content
    # the operator lets her back in
    r = c.post("/api/operator/unpause", json={"worker": "mallory"}, headers=bearer(tokens["operator"]))
    assert r.status_code == 200
    assert c.get("/api/next", headers=bearer(tokens["mallory"])).status_code == 200


def test_a_new_round_is_served_without_a_restart(dataset):
    tokens = invite(dataset, "alice")
    c = client(dataset)
    seen = set()
    while True:
        task = c.get("/api/next", headers=bearer(tokens["alice"])).json()
        if task.get("done"):
            break
        seen.add(task["task"])
        c.post("/api/submit", json={"task": task["task"], "answers": answers_for(task)}, headers=bearer(tokens["alice"]))
    assert len(seen) == 6
    # while the app runs: `datakit crowd tasks --needing-votes` adds a round (here: a tag on the same images)
    m = open_dataset(dataset).manifest
    extra = make_binary_tasks(m.iloc[:12], grid_size=6, seed=1, tag="round2")
    save_tasks(dataset, pd.concat([load_tasks(dataset), extra], ignore_index=True))
    task = c.get("/api/next", headers=bearer(tokens["alice"])).json()
    assert task["task"] in set(extra["task"])
    report = c.get("/api/operator", headers=bearer(tokens["operator"])).json()
    assert [(r["round"], r["tasks"]) for r in report["rounds"]] == [(1, 6), (2, len(extra["task"].unique()))]


def test_credential_store_replaces_and_revokes(tmp_path):
    store = CredentialStore(tmp_path / "votes.sqlite")
    first = store.invite(["alice"])["alice"]
    second = store.invite(["alice"])["alice"]
    assert store.verify(first) is None and store.verify(second).worker == "alice"
    assert store.revoke("alice") and not store.revoke("alice")
    assert store.verify(second).revoked and store.has_workers()
    with pytest.raises(ValueError, match="given twice: bob"):
        store.invite(["bob", "bob"])
    with pytest.raises(ValueError, match="operator's name"):
        store.invite(["operator"])


def test_annotate_commands_have_help_and_unpause(dataset):
    runner = CliRunner()
    for sub in ("invite", "revoke", "unpause", "serve"):
        r = runner.invoke(cli, ["annotate", sub, "--help"])
        assert r.exit_code == 0 and "Usage:" in r.output and len(r.output.splitlines()) > 4, sub
    r = runner.invoke(cli, ["annotate", "unpause", str(dataset), "--worker", "alice"])
    assert r.exit_code == 1 and "'alice' is not paused (paused: none)" in r.output
    AnnotationApp(dataset).db.pause("alice", "1 of 6 check items right")
    r = runner.invoke(cli, ["annotate", "unpause", str(dataset), "--worker", "alice"])
    assert r.exit_code == 0 and "unpaused alice" in r.output
    assert AnnotationApp(dataset).db.paused() == {}


def test_a_broken_new_round_keeps_the_old_tasks(dataset, caplog):
    c = client(dataset)
    assert c.get("/api/stats").json()["tasks"] == 6
    tasks = load_tasks(dataset)
    ghost = tasks.iloc[:1].assign(task="bag-round2-0000", item="no-such-image")
    save_tasks(dataset, pd.concat([tasks, ghost], ignore_index=True))
    with caplog.at_level("ERROR"):
        assert c.get("/api/stats").json()["tasks"] == 6
    assert "still serving the previous 6 tasks" in caplog.text and "have no image" in caplog.text
    save_tasks(dataset, pd.concat([tasks, tasks.iloc[:3].assign(task="bag-round2-0000")], ignore_index=True))
    assert c.get("/api/stats").json()["tasks"] == 7
