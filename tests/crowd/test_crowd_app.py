"""The annotation app in open mode (no invitations): endpoints, bad requests, 20 concurrent annotators,
kill -9 (open and with invitations), headless Chromium."""
from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd
import pytest

from datakit import open_dataset
from datakit.crowd.app import make_server
from datakit.crowd.db import VoteDB
from datakit.crowd.tasks import make_binary_tasks, save_tasks

from browser_helpers import headless_chrome


@pytest.fixture
def app_dataset(crowd_dataset):
    root, truth = crowd_dataset
    m = open_dataset(root).manifest
    own = m.set_index("id")["label"]
    gold_ids = m.groupby("label").head(1)["id"]
    gold = pd.Series([truth[i] == own[i] for i in gold_ids], index=gold_ids)
    tasks = make_binary_tasks(m, grid_size=6, gold=gold, gold_per_task=1, seed=0)
    save_tasks(root, tasks)
    return root, tasks


@pytest.fixture
def server(app_dataset):
    root, tasks = app_dataset
    srv = make_server(root, port=0)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv, f"http://127.0.0.1:{srv.server_address[1]}", tasks
    srv.shutdown()
    srv.server_close()


def _call(url, body=None, raw=None, token=None):
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    headers = {"Content-Type": "application/json"} | ({"Authorization": f"Bearer {token}"} if token else {})
    req = urllib.request.Request(url, data=data, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _json(url, body=None, raw=None, token=None):
    status, data = _call(url, body, raw, token)
    return status, json.loads(data)


def test_pages_tasks_votes_and_gold_feedback(server):
    srv, base, tasks = server
    assert srv.server_address[0] == "127.0.0.1"
    status, page = _call(base + "/")
    assert status == 200 and b"datakit annotate" in page
    assert _call(base + "/static/app.js")[0] == 200
    status, task = _json(base + "/api/next?worker=alice")
    assert status == 200 and task["kind"] == "binary" and task["choices"] == ["yes", "no"]
    grid = tasks[tasks["task"] == task["task"]]
    assert [i["item"] for i in task["items"]] == grid.sort_values("position")["item"].tolist()
    status, png = _call(base + task["items"][0]["url"])
    assert status == 200 and png[:4] == b"\x89PNG"
    answers = {i["item"]: "yes" for i in task["items"]}
    status, reply = _json(base + "/api/submit", {"worker": "alice", "task": task["task"], "answers": answers})
    assert status == 200 and reply["recorded"] == len(answers) and reply["duplicates"] == 0
    gold = grid[grid["gold"].notna()]
    assert reply["gold_total"] == len(gold)
    assert reply["gold_correct"] == int((gold["gold"] == "yes").sum())
    assert {g["item"]: g["expected"] for g in reply["gold"]} == dict(zip(gold["item"], gold["gold"]))
    # the same submission again: nothing new, all duplicates
    status, again = _json(base + "/api/submit", {"worker": "alice", "task": task["task"], "answers": answers})
    assert again["recorded"] == 0 and again["duplicates"] == len(answers)
    # alice gets a different task next; bob gets the least-annotated one
    assert _json(base + "/api/next?worker=alice")[1]["task"] != task["task"]
    assert _json(base + "/api/next?worker=bob")[1]["task"] != task["task"]
    votes = VoteDB(Path(srv.app.root) / "votes.sqlite").annotations()
    assert len(votes) == len(answers) and set(votes["hit"]) == {task["task"]}
    assert _json(base + "/api/stats")[1]["votes"] == len(answers)


@pytest.mark.parametrize("path,body,raw,status,reason", [
    ("/api/submit", {"task": "x", "answers": {"a": "yes"}}, None, 400, "missing field 'worker'"),
    ("/api/submit", {"worker": "al", "answers": {"a": "yes"}}, None, 400, "missing field 'task'"),
    ("/api/submit", {"worker": "al", "task": "nope-0000", "answers": {"a": "yes"}}, None, 400, "unknown task 'nope-0000'"),
    ("/api/submit", {"worker": "al", "task": "TASK", "answers": {}}, None, 400, "missing field 'answers'"),
    ("/api/submit", {"worker": "al", "task": "TASK", "answers": {"ghost": "yes"}}, None, 400, "unknown item 'ghost'"),
    ("/api/submit", {"worker": "al", "task": "TASK", "answers": {"ITEM": "maybe"}}, None, 400, "invalid label 'maybe'"),
    ("/api/submit", {"worker": "a b/c", "task": "TASK", "answers": {"ITEM": "yes"}}, None, 400, "invalid worker name"),
    ("/api/submit", None, b"{not json", 400, "not valid JSON"),
    ("/api/submit", None, b"[1, 2]", 400, "must be a JSON object"),
    ("/api/vote", {"worker": "al", "task": "TASK", "item": "ITEM"}, None, 400, "missing field 'label'"),
    ("/api/nothing", {}, None, 404, "no such endpoint"),
])
def test_bad_requests_get_4xx_with_reason(server, path, body, raw, status, reason):
    srv, base, tasks = server
    task = tasks["task"].iloc[0]
    item = tasks["item"].iloc[0]
    if body is not None:
        body = json.loads(json.dumps(body).replace("TASK", task).replace("ITEM", item))
    got, reply = _json(base + path, body, raw)
    assert got == status and reason in reply["error"]
    assert _json(base + "/api/stats")[1]["votes"] == 0


def test_odd_payloads_never_get_a_500(server):
    srv, base, tasks = server
    task, item = tasks["task"].iloc[0], tasks["item"].iloc[0]
    odd = [None, 1, "x", [], {}, {"worker": 5, "task": task, "answers": {item: "yes"}},
           {"worker": "al", "task": 7, "answers": {item: "yes"}}, {"worker": "al", "task": [task], "answers": {}},
           {"worker": "al", "task": task, "answers": [item]}, {"worker": "al", "task": task, "answers": {item: 1}},
           {"worker": "al", "task": task, "answers": {item: None}}, {"worker": "", "task": task, "answers": {}},
           {"worker": "x" * 65, "task": task, "answers": {item: "yes"}},
           {"worker": "al", "task": task, "item": item, "label": ["yes"]}]
    for body in odd:
        for path in ("/api/submit", "/api/vote"):
            status, reply = _json(base + path, raw=json.dumps(body).encode())
            assert 400 <= status < 500 and reply["error"], (path, body)
    assert _json(base + "/api/stats")[1]["votes"] == 0


def test_bad_gets_get_4xx(server):
    srv, base, _ = server
    assert _json(base + "/api/next")[0] == 400
    assert _json(base + "/api/task/nope")[0] == 404
    assert _json(base + "/image/nope")[0] == 404
    assert _json(base + "/static/..%2Fapp.py")[0] == 404


def test_twenty_concurrent_annotators_lose_and_duplicate_nothing(server):
    srv, base, tasks = server
    task_ids = sorted(tasks["task"].unique())
    grids = {t: tasks[tasks["task"] == t]["item"].tolist() for t in task_ids}

    def annotator(k):
        acked = []
        for n, t in enumerate(task_ids[:4]):
            answers = {i: ("yes" if (k + n) % 2 else "no") for i in grids[t]}
            # each submission is sent twice: the repeat must not count
            for _ in range(2):
                status, reply = _json(base + "/api/submit", {"worker": f"w{k}", "task": t, "answers": answers})
                assert status == 200
                acked.append((t, reply["recorded"], reply["duplicates"]))
        return acked

    with ThreadPoolExecutor(max_workers=20) as pool:
        results = list(pool.map(annotator, range(20)))
    expected = {(t, i, f"w{k}") for k in range(20) for t in task_ids[:4] for i in grids[t]}
    stored = VoteDB(Path(srv.app.root) / "votes.sqlite").frame()
    assert len(stored) == len(expected)
    assert set(zip(stored["task"], stored["item"], stored["worker"])) == expected
    for acked in results:
        firsts, repeats = acked[0::2], acked[1::2]
        assert all(r == len(grids[t]) and d == 0 for t, r, d in firsts)
        assert all(r == 0 and d == len(grids[t]) for t, r, d in repeats)


def _start(root, port=0, extra=()):
    proc = subprocess.Popen([sys.executable, "-m", "datakit", "annotate", "serve", str(root), "--port", str(port),
                             *extra], stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    line = proc.stderr.readline()
    if "Serving" not in line:
        proc.kill()
        pytest.fail(f"server did not start: {line!r}")
    return proc, int(line.split("http://127.0.0.1:")[1].split("/")[0])


@pytest.mark.parametrize("invited", [False, True], ids=["open", "invitations"])
def test_acknowledged_votes_survive_kill_9(app_dataset, invited):
    root, tasks = app_dataset
    tokens = {}
    if invited:  # the uvicorn server with credentials: each voter sends its own bearer secret
        from datakit.crowd.credentials import CredentialStore

        tokens = CredentialStore(Path(root) / "votes.sqlite").invite([f"v{k}" for k in range(4)])
    proc, port = _start(root, extra=("--rate", "0", "--pause-below", "0"))
    base = f"http://127.0.0.1:{port}"
    acked = set()
    stop = threading.Event()
    items = tasks[["task", "item"]].to_records(index=False).tolist()

    def voter(k):
        for n, (task, item) in enumerate(items):
            if stop.is_set():
                return
            try:
                status, reply = _json(base + "/api/vote", {"worker": f"v{k}", "task": task, "item": item,
                                                           "label": "yes" if n % 2 else "no"}, token=tokens.get(f"v{k}"))
            except (urllib.error.URLError, ConnectionError, OSError, http.client.HTTPException, ValueError):
                return
            if status == 200 and reply["recorded"] == 1:
                acked.add((task, item, f"v{k}"))

    threads = [threading.Thread(target=voter, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    while len(acked) < 40 and any(t.is_alive() for t in threads):  # 144 votes in all: kill after 40
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)  # mid-voting
    proc.wait()
    stop.set()
    for t in threads:
        t.join()
    proc.stderr.close()
    assert 40 <= len(acked) < 4 * len(items)  # killed mid-voting
    proc2, port2 = _start(root)
    try:
        stored = VoteDB(Path(root) / "votes.sqlite").frame()
        assert acked <= set(zip(stored["task"], stored["item"], stored["worker"]))
        status, stats = _json(f"http://127.0.0.1:{port2}/api/stats", token=tokens.get("v0"))
        assert status == 200 and stats["votes"] == len(stored)
    finally:
        proc2.kill()
        proc2.wait()
        proc2.stderr.close()


@pytest.mark.slow
@pytest.mark.browser
def test_end_to_end_in_headless_chromium(server, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import WebDriverWait

    srv, base, tasks = server
    browser = headless_chrome(tmp_path)
    try:
        wait = WebDriverWait(browser, 30)
        browser.get(base + "/")
        browser.find_element(By.ID, "worker").send_keys("carol")
        browser.find_element(By.ID, "start").click()
        wait.until(lambda b: len(b.find_elements(By.CSS_SELECTOR, "#grid .cell")) > 0)
        question = browser.find_element(By.ID, "question").text
        task_id = browser.find_element(By.ID, "task-id").text
        grid = tasks[tasks["task"] == task_id]
        assert question.startswith(f"Which of these images contain a {grid['question'].iloc[0]}")
        cells = browser.find_elements(By.CSS_SELECTOR, "#grid .cell")
        assert len(cells) == len(grid)
        chosen = {c.get_attribute("data-item") for c in cells[::2]}
        for c in cells[::2]:
            c.click()
        browser.find_element(By.ID, "submit").click()
        wait.until(EC.visibility_of_element_located((By.ID, "next")))
        feedback = browser.find_element(By.ID, "feedback").text
        assert f"Saved {len(grid)} answers" in feedback
        votes = VoteDB(Path(srv.app.root) / "votes.sqlite").frame()
        assert len(votes) == len(grid) and set(votes["worker"]) == {"carol"}
        assert set(votes.loc[votes["label"] == "yes", "item"]) == chosen
        gold = grid[grid["gold"].notna()]
        if len(gold):
            assert "Check items:" in feedback
        browser.find_element(By.ID, "next").click()
        wait.until(lambda b: b.find_element(By.ID, "task-id").text != task_id)
    finally:
        browser.quit()


def test_multiclass_tasks_in_the_app(crowd_dataset):
    from datakit.crowd.tasks import make_multiclass_tasks

    root, truth = crowd_dataset
    m = open_dataset(root).manifest
    save_tasks(root, make_multiclass_tasks(m, classes=["bag", "shirt", "shoe"], grid_size=10, gold=truth.iloc[:2],
                                           gold_per_task=1))
    srv = make_server(root, port=0)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{srv.server_address[1]}"
    try:
        status, task = _json(base + "/api/next?worker=dana")
        assert status == 200 and task["kind"] == "multiclass" and task["choices"] == ["bag", "shirt", "shoe"]
        answers = {i["item"]: truth[i["item"]] for i in task["items"]}
        status, reply = _json(base + "/api/submit", {"worker": "dana", "task": task["task"], "answers": answers})
        assert status == 200 and reply["recorded"] == len(answers)
        assert reply["gold_total"] == 1 and reply["gold_correct"] == 1
        status, bad = _json(base + "/api/vote", {"worker": "dana", "task": task["task"],
                                                 "item": task["items"][0]["item"], "label": "yes"})
        assert status == 400 and "valid values are {bag, shirt, shoe}" in bad["error"]
    finally:
        srv.shutdown()
        srv.server_close()
