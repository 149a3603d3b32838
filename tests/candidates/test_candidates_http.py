"""HTTP search backends against fake servers on 127.0.0.1 answering with the real APIs' shapes."""
from __future__ import annotations

import json

import pytest

from datakit.errors import DatakitError
from datakit.sources.search import BackendError, get_backend
from datakit.sources.search.http import HttpClient, retry_after_seconds
from datakit.sources.search.json_http import JsonHttpBackend, load_config
from datakit.sources.search.openverse import OpenverseBackend
from datakit.sources.search.wikimedia import WikimediaBackend


class Sleeps(list):
    """A fake ``time.sleep`` that records the waits."""

    def __call__(self, seconds):
        self.append(seconds)


def openverse_api(web, n_items=7, page_size_default=20):
    """Openverse /v1/images/ (result_count, page_count, page, results[...])."""
    items = [{"id": f"uuid-{i}", "title": f"Sandal {i}", "url": f"{web.base}/img/{i}.jpg",
              "creator": f"Photographer {i}", "creator_url": None, "license": "by-sa" if i % 2 else "cc0",
              "license_version": "2.0" if i % 2 else "1.0", "license_url": "https://creativecommons.org/",
              "foreign_landing_url": f"https://www.flickr.com/photos/x/{i}", "provider": "flickr",
              "source": "flickr", "filetype": "jpg", "tags": [{"name": "sandal"}], "width": 640, "height": 480,
              "attribution": f'"Sandal {i}" by Photographer {i} is licensed under CC BY-SA 2.0.'}
             for i in range(1, n_items + 1)]

    def answer(q):
        size = int(q.get("page_size", page_size_default))
        page = int(q.get("page", 1))
        chunk = items[(page - 1) * size: page * size]
        pages = -(-len(items) // size)
        return {"result_count": len(items), "page_count": pages, "page_size": size, "page": page,
                "results": chunk, "warnings": []}

    web.json("/v1/images/", answer)
    return items


def test_openverse_paginates_and_captures_license(web, tmp_path):
    openverse_api(web, n_items=7)
    backend = OpenverseBackend(base_url=web.base, page_size=3, cache_dir=tmp_path / "cache", min_interval=0)
    results = backend.search("sandal", limit=100)
    assert [r.rank for r in results] == list(range(1, 8))
    assert web.hits["/v1/images/"] == 3                      # pages 1..3, then page_count stops it
    assert [q["page"] for p, q, _ in web.log] == ["1", "2", "3"]
    assert web.log[0][1]["q"] == "sandal"
    first, second = results[0], results[1]
    assert first.ref == f"{web.base}/img/1.jpg" and first.license == "CC BY-SA 2.0"
    assert second.license == "CC0 1.0"
    assert first.attribution.startswith('"Sandal 1" by Photographer 1')
    assert first.landing_url == "https://www.flickr.com/photos/x/1"
    # a smaller limit stops early, and the cache answers repeated pages
    again = backend.search("sandal", limit=2)
    assert len(again) == 2 and web.hits["/v1/images/"] == 3 and backend.client.cache_hits >= 1


def test_retry_after_is_honoured_on_429_then_success(web, tmp_path):
    calls = {"n": 0}

    def handler(q, h):
        calls["n"] += 1
        if calls["n"] == 1:
            return 429, {"Retry-After": "7", "Content-Type": "application/json"}, b'{"detail": "throttled"}'
        return 200, {"Content-Type": "application/json"}, json.dumps({"page_count": 1, "results": []}).encode()

    web.route("/v1/images/", handler)
    sleeps = Sleeps()
    client = HttpClient(min_interval=0, backoff=0.5, sleep=sleeps)
    backend = OpenverseBackend(base_url=web.base, client=client)
    assert backend.search("x", 5) == []
    assert calls["n"] == 2 and sleeps == [7.0]


def test_5xx_backs_off_exponentially_then_fails_with_backend_error(web):
    web.static("/v1/images/", b"oops", content_type="text/plain", status=503)
    sleeps = Sleeps()
    client = HttpClient(min_interval=0, backoff=1.0, max_retries=3, sleep=sleeps)
    with pytest.raises(BackendError, match="failed after 4 attempts.*re-run to resume"):
        OpenverseBackend(base_url=web.base, client=client).search("x", 5)
    assert sleeps == [1.0, 2.0, 4.0] and web.hits["/v1/images/"] == 4


def test_4xx_is_not_retried_and_secrets_are_redacted(web):
    web.static("/v1/images/", b"{}", content_type="application/json", status=401)
    client = HttpClient(min_interval=0, sleep=Sleeps())
    with pytest.raises(BackendError, match=r"api_key=%2A%2A%2A.*HTTP 401") as info:
        client.get_json(f"{web.base}/v1/images/", {"api_key": "SECRET123"})
    assert "SECRET123" not in str(info.value)
    assert web.hits["/v1/images/"] == 1


def test_rate_limit_waits_between_requests_to_one_host(web):
    web.json("/a", lambda q: {"ok": 1})
    sleeps = Sleeps()
    client = HttpClient(min_interval=5.0, sleep=sleeps)
    client.get_json(f"{web.base}/a", {"i": 1})
    client.get_json(f"{web.base}/a", {"i": 2})
    assert len(sleeps) == 1 and 4.0 < sleeps[0] <= 5.0


def test_non_json_answer_is_a_backend_error(web):
    web.static("/a", b"<html>", content_type="text/html")
    with pytest.raises(BackendError, match="did not return JSON"):
        HttpClient(min_interval=0).get_json(f"{web.base}/a")


def test_retry_after_http_date():
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412470.0) == 10.0
    assert retry_after_seconds("soon") is None


def commons_api(web):
    """Wikimedia Commons: generator=search + prop=imageinfo, with continue tokens."""
    def page(pid, index, mime="image/jpeg"):
        return {"pageid": pid, "ns": 6, "title": f"File:Sandal {pid}.jpg", "index": index,
                "imagerepository": "local",
                "imageinfo": [{"url": f"{web.base}/wiki/{pid}.jpg",
                               "descriptionurl": f"https://commons.wikimedia.org/wiki/File:Sandal_{pid}.jpg",
                               "mime": mime, "width": 800, "height": 600, "size": 1234,
                               "extmetadata": {
                                   "LicenseShortName": {"value": "CC BY-SA 4.0", "source": "commons-desc-page"},
                                   "Artist": {"value": f'<a href="//commons.wikimedia.org/wiki/User:U{pid}">User &amp; {pid}</a>',
                                              "source": "commons-desc-page"}}}]}

    def answer(q):
        assert q["generator"] == "search" and q["gsrnamespace"] == "6" and "imageinfo" in q["prop"]
        if "gsroffset" not in q:
            # dict keyed by page id, not in rank order; one SVG to be skipped
            return {"batchcomplete": "", "continue": {"gsroffset": 3, "continue": "gsroffset||"},
                    "query": {"pages": {"30": page(30, 3), "10": page(10, 1), "20": page(20, 2, "image/svg+xml")}}}
        assert q["gsroffset"] == "3" and q["continue"] == "gsroffset||"
        return {"batchcomplete": "", "query": {"pages": {"40": page(40, 4)}}}

    web.json("/w/api.php", answer)


def test_wikimedia_follows_continue_and_reads_extmetadata(web):
    commons_api(web)
    backend = WikimediaBackend(api_url=f"{web.base}/w/api.php", page_size=3, min_interval=0)
    results = backend.search("sandal", limit=10)
    assert [r.meta["pageid"] for r in results] == [10, 30, 40]      # SVG skipped, index order kept
    assert [r.rank for r in results] == [1, 2, 3]
    assert results[0].license == "CC BY-SA 4.0"
    assert results[0].attribution == "Sandal 10.jpg by User & 10"
    assert results[0].landing_url.startswith("https://commons.wikimedia.org/wiki/File:")
    assert web.hits["/w/api.php"] == 2


def test_wikimedia_api_error_is_a_backend_error(web):
    web.json("/w/api.php", lambda q: {"error": {"code": "badvalue", "info": "Unrecognized value"}})
    with pytest.raises(BackendError, match="badvalue"):
        WikimediaBackend(api_url=f"{web.base}/w/api.php", min_interval=0).search("x", 5)


def test_json_http_config_paths_next_links_and_headers(web, tmp_path, monkeypatch):
    def answer(q):
        page = int(q.get("page", 1))
        data = {"data": {"items": [{"links": {"image": f"{web.base}/p{page}-{i}.png", "html": f"{web.base}/h{i}"},
                                    "author": {"name": f"A{i}"}, "lic": "CC BY 4.0", "title": f"t{i}"}
                                   for i in range(2)]},
                "links": {"next": f"/api/search?q=x&page={page + 1}" if page < 2 else None}}
        return data

    web.json("/api/search", answer)
    monkeypatch.setenv("MY_TEST_KEY", "k-123")
    cfg = tmp_path / "api.toml"
    cfg.write_text(f'''url = "{web.base}/api/search?q={{query}}&page={{page}}"
results = "data.items"
url_field = "links.image"
license_field = "lic"
attribution_field = "author.name"
title_field = "title"
landing_field = "links.html"
next_url = "links.next"
min_interval = 0
[headers]
X-Api-Key = "${{MY_TEST_KEY}}"
''')
    backend = get_backend(f"json-http:{cfg}")
    assert isinstance(backend, JsonHttpBackend)
    results = backend.search("red sandal", limit=10)
    assert [r.ref.rsplit("/", 1)[1] for r in results] == ["p1-0.png", "p1-1.png", "p2-0.png", "p2-1.png"]
    assert results[0].license == "CC BY 4.0" and results[0].attribution == "A0"
    assert web.log[0][1]["q"] == "red sandal"
    assert web.log[0][2].get("X-Api-Key") == "k-123"


def test_json_http_config_errors(tmp_path):
    cfg = tmp_path / "bad.toml"
    cfg.write_text('url = "http://x/?q={query}"\nresults = "items"\nurl_fiel = "u"\n')
    with pytest.raises(DatakitError, match=r"Unknown key\(s\) \['url_fiel'\].*Valid keys"):
        load_config(cfg)
    cfg.write_text('url = "http://x/?q={query}"\nresults = "items"\n')
    with pytest.raises(DatakitError, match="missing the required key 'url_field'"):
        load_config(cfg)
    cfg.write_text('url = "http://x/"\nresults = "items"\nurl_field = "u"\n')
    with pytest.raises(DatakitError, match=r"must contain \{query\}"):
        load_config(cfg)


def test_unknown_backend_lists_valid_ones():
    with pytest.raises(DatakitError, match=r"Unknown search backend 'openvers'.*Did you mean 'openverse'"):
        get_backend("openvers")
    with pytest.raises(DatakitError, match="needs a pool directory"):
        get_backend("local")


def test_openverse_page_refusal_after_page_one_ends_results(web):
    def answer(q, h):
        if q["page"] == "1":
            body = {"page_count": 50, "results": [{"url": f"{web.base}/i{k}.jpg", "license": "by",
                                                   "license_version": "4.0"} for k in range(2)]}
            return 200, {"Content-Type": "application/json"}, json.dumps(body).encode()
        return 401, {"Content-Type": "application/json"}, b'{"detail": "Authentication required for page 2"}'

    web.route("/v1/images/", answer)
    backend = OpenverseBackend(base_url=web.base, page_size=2, min_interval=0)
    assert len(backend.search("x", limit=10)) == 2
    web.route("/v1/images/", lambda q, h: (401, {}, b"{}"))
    with pytest.raises(BackendError, match="HTTP 401") as info:
        OpenverseBackend(base_url=web.base, min_interval=0).search("y", limit=10)
    assert info.value.status == 401
