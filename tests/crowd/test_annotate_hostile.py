"""Hostile input: every refusal is a 4xx with a reason, stores nothing, and the app keeps serving."""
from __future__ import annotations

import pandas as pd
import pytest
from starlette.testclient import TestClient

from datakit import open_dataset
from datakit.crowd.app import AnnotationApp, create_app
from datakit.crowd.app.limits import RateLimiter
from datakit.crowd.app.state import RequestError
from datakit.crowd.tasks import make_binary_tasks, save_tasks

BASE = "http://127.0.0.1:8000"


@pytest.fixture
def app(crowd_dataset):
    """An app with alice invited: (TestClient, state, alice's bearer header, a task spec)."""
    root, truth = crowd_dataset
    m = open_dataset(root).manifest
    save_tasks(root, make_binary_tasks(m, grid_size=6, gold=pd.Series([True], index=m["id"][:1]), seed=0))
    state = AnnotationApp(root)
    token = state.credentials.invite(["alice"])["alice"]
    c = TestClient(create_app(state, max_body=4096, rate=5, burst=5), base_url=BASE, client=("127.0.0.1", 40000))
    task = state.tasks[next(iter(state.tasks))]
    return c, state, {"Authorization": f"Bearer {token}"}, task


def still_serving(c, state, auth):
    assert state.db.count() == 0
    assert c.get("/api/stats", headers=auth).json()["votes"] == 0


def good(task):
    return {"task": task["task"], "answers": {i: "yes" for i in task["items"]}}


def test_oversized_body_413(app):
    c, state, auth, task = app
    body = good(task) | {"padding": "x" * 5000}
    r = c.post("/api/submit", json=body, headers=auth)
    assert r.status_code == 413 and "4096-byte limit" in r.json()["error"]

    def chunks():  # no Content-Length: the limit holds on the stream too
        yield b'{"task": "' + b"x" * 3000
        yield b"y" * 3000 + b'"}'

    r = c.post("/api/submit", content=chunks(), headers=auth | {"Content-Type": "application/json"})
    assert r.status_code == 413
    still_serving(c, state, auth)


@pytest.mark.parametrize("raw", [b"{not json", b"\xff\xfe", b'{"task": ', b"[" * 100000 + b"]" * 100000])
def test_malformed_json_400(app, raw):
    c, state, auth, task = app
    c2 = TestClient(create_app(state, max_body=1 << 20, rate=0), base_url=BASE, client=("127.0.0.1", 1))  # roomy
    r = c2.post("/api/submit", content=raw, headers=auth | {"Content-Type": "application/json"})
    assert r.status_code == 400 and "not valid JSON" in r.json()["error"]
    still_serving(c, state, auth)


@pytest.mark.parametrize("change,reason", [
    (lambda b: b | {"task": "nope-0000"}, "unknown task 'nope-0000'"),
    (lambda b: b | {"answers": {"ghost": "yes"}}, "unknown item 'ghost'"),
    (lambda b: b | {"answers": dict(b["answers"], ghost="yes")}, "unknown item 'ghost'"),  # one bad item: none stored
    (lambda b: b | {"answers": {k: "maybe" for k in b["answers"]}}, "invalid label 'maybe'"),
    (lambda b: b | {"task": ["x"]}, "must be a string"),
])
def test_unknown_tasks_and_items_400(app, change, reason):
    c, state, auth, task = app
    r = c.post("/api/submit", json=change(good(task)), headers=auth)
    assert r.status_code == 400 and reason in r.json()["error"]
    r = c.post("/api/vote", json={"task": task["task"], "item": "ghost", "label": "yes"}, headers=auth)
    assert r.status_code == 400 and "unknown item 'ghost'" in r.json()["error"]
    still_serving(c, state, auth)


@pytest.mark.parametrize("path", [
    "/static/..%2Fstate.py", "/static/%2e%2e/%2e%2e/db.py", "/static/../app/state.py", "/static/.hidden",
    "/static/%2Fetc%2Fpasswd", "/image/..%2F..%2Fmanifest.parquet", "/image/%2Fetc%2Fpasswd",
    "/image/images/../../manifest.parquet", "/api/task/..%2F..%2Fetc",
])
def test_path_traversal_404(app, path):
    c, state, auth, task = app
    r = c.get(path, headers=auth)
    assert r.status_code == 404, r.text
    assert b"import" not in r.content and b"PAR1" not in r.content and b"root:" not in r.content
    assert c.get("/static/app.js").status_code == 200


def test_too_many_requests_429_per_worker(app):
    c, state, auth, task = app
    statuses = [c.get("/api/me", headers=auth).status_code for _ in range(5)]
    assert statuses == [200] * 5  # the burst
    r = c.post("/api/submit", json=good(task), headers=auth)
    assert r.status_code == 429 and "too many requests" in r.json()["error"] and int(r.headers["Retry-After"]) >= 1
    still_serving(TestClient(create_app(state, rate=0), base_url=BASE, client=("127.0.0.1", 1)), state, auth)
    # images are not counted: a page loads a whole grid at once
    for item in task["items"] * 2:
        assert c.get(f"/image/{item}", headers=auth).status_code == 200
    # another worker has their own bucket
    bob = {"Authorization": f"Bearer {state.credentials.invite(['bob'])['bob']}"}
    assert c.get("/api/me", headers=bob).status_code == 200


def test_token_bucket_refills():
    now = [0.0]
    limiter = RateLimiter(2.0, 3, clock=lambda: now[0])
    for _ in range(3):
        limiter.check("w")
    with pytest.raises(RequestError, match="too many requests") as err:
        limiter.check("w")
    assert err.value.status == 429 and err.value.extra["retry_after"] == 0.5
    now[0] = 0.5
    limiter.check("w")  # one token back after 1/rate seconds
    with pytest.raises(RequestError):
        limiter.check("w")
    limiter.check("other")


@pytest.mark.parametrize("headers,status,reason", [
    ({"Content-Type": "application/x-www-form-urlencoded", "Origin": "http://evil.example",
      "Sec-Fetch-Site": "cross-site"}, 403, "cross-site request refused"),
    ({"Content-Type": "application/json", "Origin": "http://evil.example"}, 403, "cross-site request refused"),
    ({"Content-Type": "application/json", "Origin": "null"}, 403, "cross-site"),
    ({"Content-Type": "text/plain", "Sec-Fetch-Site": "same-site"}, 403, "Sec-Fetch-Site: same-site"),
    ({"Content-Type": "application/x-www-form-urlencoded"}, 415, "Content-Type: application/json"),
    ({"Content-Type": "text/plain"}, 415, "Content-Type: application/json"),
])
def test_cross_site_form_posts_refused(app, headers, status, reason):
    c, state, auth, task = app
    import json

    c.cookies.clear()
    join = c.get("/join?token=" + auth["Authorization"].split()[1], follow_redirects=False)  # the victim's cookie
    assert join.status_code == 303
    r = c.post("/api/submit", content=json.dumps(good(task)).encode(), headers=headers)
    assert r.status_code == status and reason in r.json()["error"]
    still_serving(c, state, auth)
    ok = c.post("/api/submit", json=good(task), headers={"Origin": BASE, "Sec-Fetch-Site": "same-origin"})
    assert ok.status_code == 200 and ok.json()["recorded"] == len(task["items"])


def test_odd_methods_and_paths_never_500(app):
    c, state, auth, task = app
    assert c.put("/api/submit", json={}, headers=auth).status_code == 405
    assert c.get("/api/submit", headers=auth).status_code == 405
    assert c.post("/api/nothing", json={}, headers=auth).status_code == 404
    assert c.get("/nothing").json()["error"] == "no such page '/nothing'"
    r = c.get("/", headers=auth)
    assert r.headers["x-frame-options"] == "DENY" and "default-src 'self'" in r.headers["content-security-policy"]
    still_serving(c, state, auth)
