"""The candidates stage end to end: Fashion-MNIST pool (local), fake Openverse (HTTP), resume, CLI, source."""
from __future__ import annotations

import hashlib
import json

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from datakit.cli import cli
from datakit.errors import DatakitError
from datakit.hashing import phash
from datakit.sources import get_source
from datakit.sources.candidates import CANDIDATE_COLUMNS, CandidatesSource, collect_candidates, merge_results
from datakit.sources.download import DownloadPolicy
from datakit.sources.search import SearchResult, get_backend
from datakit.sources.search.demo_pool import FASHION_SYNSETS, candidate_precision, make_fashion_pool
from datakit.sources.search.http import HttpClient
from datakit.sources.search.openverse import OpenverseBackend
from datakit.taxonomy.select import categories_frame, from_wnids, write_categories


@pytest.fixture(scope="module")
def fashion_pool(tmp_path_factory, fashion_mnist):
    root = tmp_path_factory.mktemp("fashion") / "pool"
    truth = make_fashion_pool(root, n=300, seed=0, wrong_share=0.1, extra_share=0.15, generic_share=0.05,
                              root=fashion_mnist)
    return root, truth


@pytest.fixture(scope="module")
def fashion_categories(wn):
    return categories_frame(from_wnids(wn, ids=[c["synset"] for c in FASHION_SYNSETS]))


def test_fashion_mapping_resolves_to_the_recorded_wnids(wn):
    for c in FASHION_SYNSETS:
        s = wn.synset(c["synset"])
        assert f"n{s.offset():08d}" == c["wnid"] and s.lexname() == "noun.artifact", c
    assert wn.synset("shirt.n.01") in wn.synset("jersey.n.03").hypernyms()   # the overlap the mapping notes


def test_pool_noise_is_seeded_and_configurable(fashion_pool, fashion_mnist, tmp_path):
    root, truth = fashion_pool
    assert len(truth) == 300 and (root / "ground_truth.csv").exists()
    assert len(list(root.glob("item_*.png"))) == 300 and len(list(root.glob("item_*.json"))) == 300
    wrong = truth["noise"].str.startswith("wrong")
    assert (truth.loc[wrong, "caption_class"] != truth.loc[wrong, "true_class"]).all()
    clean = truth["noise"].str.startswith("clean")
    assert (truth.loc[clean, "caption_class"] == truth.loc[clean, "true_class"]).all()
    assert 0.04 < wrong.mean() < 0.18                                          # 10% requested, n=300
    again = make_fashion_pool(tmp_path / "again", n=300, seed=0, root=fashion_mnist)
    pd.testing.assert_frame_equal(again.drop(columns="source_ref"), truth.drop(columns="source_ref"))
    noiseless = make_fashion_pool(tmp_path / "clean", n=50, seed=1, wrong_share=0, extra_share=0, generic_share=0,
                                  root=fashion_mnist)
    assert (noiseless["noise"] == "clean").all()
    with pytest.raises(ValueError, match=r"shares must be in \[0, 1\]"):
        make_fashion_pool(tmp_path / "bad", n=5, wrong_share=1.5, root=fashion_mnist)


def test_local_candidates_on_fashion_pool(fashion_pool, fashion_categories, tmp_path):
    root, truth = fashion_pool
    out = tmp_path / "cands"
    run = collect_candidates(fashion_categories, get_backend(f"local:{root}"), out, per_synset=60, workers=2)
    c = run.candidates
    assert list(c.columns) == list(CANDIDATE_COLUMNS)
    assert run.failure is None and set(c["synset"]) <= set(fashion_categories["wnid"])
    for name in ("candidates.parquet", "rejected.parquet", "synsets.csv", "categories.csv", "queries.csv",
                 "run.json"):
        assert (out / name).exists(), name
    # provenance and content: every row's image is in the store under its sha256, with its pHash
    row = c.iloc[0]
    data = (out / row["path"]).read_bytes()
    assert hashlib.sha256(data).hexdigest() == row["id"]
    from PIL import Image

    with Image.open(out / row["path"]) as im:
        assert int(row["phash"]) == phash(np.asarray(im))
    assert (c["backend"] == "local").all() and c["local"].all() and (c["license"] == "MIT").all()
    assert set(c["expansion"]) <= {"lemma"} | {e for e in c["expansion"] if e.startswith("lemma+parent:")}
    # exact duplicates stored once; images found for two synsets flagged on both rows
    stored = list((out / "images").rglob("*.png"))
    assert len(stored) == c["id"].nunique()
    multi = c.groupby("id")["synset"].nunique()
    assert set(c.loc[c["ambiguous"], "id"]) == set(multi[multi > 1].index)
    assert c["ambiguous"].any()                            # the extra-tag noise makes some
    # precision against the pool's ground truth, recomputed by hand
    prec = candidate_precision(c, root).set_index("synset")
    truth_by_file = dict(zip(truth["file"], truth["true_wnid"]))
    for w, g in c.groupby("synset"):
        correct = sum(truth_by_file[p.rsplit("/", 1)[1]] == w for p in g["source_ref"])
        assert prec.loc[w, "correct"] == correct and prec.loc[w, "precision"] == pytest.approx(correct / len(g))
    assert 0.3 < prec.loc["all", "precision"] < 1.0       # noisy captions: raw candidates are not all right
    summary = pd.read_csv(out / "synsets.csv")
    assert list(summary["synset"]) == list(fashion_categories["wnid"])
    assert (summary["candidates"] == c.groupby("synset").size().reindex(summary["synset"]).fillna(0).values).all()


def test_empty_category_is_reported_not_dropped(fashion_pool, wn, tmp_path):
    root, _ = fashion_pool
    cats = categories_frame(from_wnids(wn, ids=["sandal.n.01", "whippet.n.01"]))
    run = collect_candidates(cats, get_backend(f"local:{root}"), tmp_path / "c", per_synset=10, workers=0)
    assert run.empty_categories == ["n02091134"]
    status = run.summary.set_index("synset")["status"]
    assert status["n02091134"] == "no_results" and status["n04133789"] == "ok"
    assert any("n02091134" in n and "no candidates" in n for n in run.notes)
    info = json.loads((tmp_path / "c" / "run.json").read_text())
    assert any("whippet" in n for n in info["notes"])


def test_unreadable_and_duplicate_pool_files_are_rejected_with_reasons(wn, tmp_path, png_bytes):
    pool = tmp_path / "pool"
    pool.mkdir()
    same = png_bytes(seed=4)
    for name, data in (("a.png", same), ("b.png", same), ("c.png", b"this is text, not a PNG")):
        (pool / name).write_bytes(data)
        (pool / name.replace(".png", ".txt")).write_text("brown sandal")
    cats = categories_frame(from_wnids(wn, ids=["sandal.n.01"]))
    run = collect_candidates(cats, get_backend(f"local:{pool}"), tmp_path / "out", per_synset=10, workers=0)
    assert len(run.candidates) == 1 and run.candidates["hits"].iloc[0] >= 1
    reasons = dict(zip(run.rejected["source_ref"].str.rsplit("/", n=1).str[1], run.rejected["reason"]))
    assert reasons == {"b.png": "duplicate", "c.png": "not_an_image"} or reasons == {"a.png": "duplicate",
                                                                                       "c.png": "not_an_image"}
    assert (run.rejected["stage"] == "candidates").all()


def test_merge_round_robin_and_hits():
    a = [SearchResult("u1", 1), SearchResult("u2", 2), SearchResult("u3", 3)]
    b = [SearchResult("u2", 1), SearchResult("u4", 2)]
    merged = merge_results([({"query": "a"}, a), ({"query": "b"}, b)], limit=3)
    assert [(q["query"], r.ref, h) for q, r, h in merged] == [("a", "u1", 1), ("b", "u2", 2), ("b", "u4", 1)]


def test_http_run_fails_midway_keeps_results_and_resumes(web, wn, tmp_path, png_bytes):
    images = {f"/img/{k}.png": png_bytes(32, 32, seed=k) for k in range(6)}
    images["/img/dup.png"] = images["/img/0.png"]          # same bytes, other URL
    images["/img/text.png"] = b"<html>an error page</html>"
    for path, body in images.items():
        web.static(path, body)
    by_topic = {"sandal": ["/img/0.png", "/img/1.png", "/img/dup.png", "/img/text.png", "/img/5.png"],
                "boot": ["/img/2.png", "/img/3.png", "/img/5.png"]}
    state = {"fail": True}

    def api(q, h):
        topic = "sandal" if "sandal" in q["q"] else "boot" if "boot" in q["q"] else None
        if topic == "boot" and state["fail"]:
            return 500, {"Content-Type": "application/json"}, b'{"detail": "upstream down"}'
        paths = by_topic.get(topic, [])
        results = [{"id": p, "title": p, "url": web.base + p, "creator": "C", "license": "by",
                    "license_version": "4.0", "foreign_landing_url": web.base + "/page" + p} for p in paths]
        return 200, {"Content-Type": "application/json"}, json.dumps(
            {"result_count": len(results), "page_count": 1, "page": 1, "results": results}).encode()

    web.route("/v1/images/", api)
    cats = categories_frame(from_wnids(wn, ids=["sandal.n.01", "boot.n.01"]))
    out = tmp_path / "out"

    def run_once():
        client = HttpClient(cache_dir=out / ".http-cache", min_interval=0, max_retries=0)
        backend = OpenverseBackend(base_url=web.base, client=client)
        return collect_candidates(cats, backend, out, per_synset=20, workers=3,
                                  policy=DownloadPolicy(allow_private=True, timeout=5))

    first = run_once()
    assert first.failure is not None and "upstream down" not in first.failure and "HTTP 500" in first.failure
    st = first.summary.set_index("synset")["status"]
    assert st["n04133789"] == "ok" and st["n02872752"] in ("partial", "not_searched")
    sandal = first.candidates[first.candidates["synset"] == "n04133789"]
    assert len(sandal) == 3 and sandal["license"].eq("CC BY 4.0").all()
    assert json.loads((out / "run.json").read_text())["complete"] is False
    saved = pd.read_parquet(out / "candidates.parquet")
    assert len(saved) == len(first.candidates)               # usable on disk despite the failure
    reasons = dict(zip(first.rejected["source_ref"].str.rsplit("/", n=1).str[1], first.rejected["reason"]))
    assert reasons == {"dup.png": "duplicate", "text.png": "not_an_image"}
    fetched_once = {p: web.hits.get(p, 0) for p in images}
    api_calls = web.hits["/v1/images/"]

    state["fail"] = False
    second = run_once()
    assert second.failure is None
    assert all(web.hits.get(p, 0) == fetched_once[p] for p in by_topic["sandal"])   # nothing fetched twice
    assert web.hits["/v1/images/"] - api_calls == 2            # only boot's two queries were asked
    c = second.candidates
    assert set(c["synset"]) == {"n04133789", "n02872752"}
    five = c[c["source_ref"] == web.base + "/img/5.png"]
    assert len(five) == 2 and five["ambiguous"].all() and (five["n_synsets"] == 2).all()
    assert not c.loc[c["source_ref"] != web.base + "/img/5.png", "ambiguous"].any()
    assert json.loads((out / "run.json").read_text())["complete"] is True


def test_cli_candidates_local_and_failure_exit(fashion_pool, fashion_categories, tmp_path, web, monkeypatch):
    root, _ = fashion_pool
    cats = write_categories(fashion_categories.head(3), tmp_path / "categories.csv")
    runner = CliRunner()
    result = runner.invoke(cli, ["candidates", str(cats), "--source", f"local:{root}", "--per-synset", "20",
                                 "--out", str(tmp_path / "out"), "--quiet", "--format", "csv"])
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[0] == "synset,name,queries,results,candidates,rejected,ambiguous,status"
    assert pd.read_parquet(tmp_path / "out" / "candidates.parquet")["synset"].nunique() == 3
    # a failing HTTP backend: exit 1, a clean message saying how to resume
    web.static("/v1/images/", b"{}", content_type="application/json", status=503)
    monkeypatch.setenv("DATAKIT_OPENVERSE_URL", web.base)
    result = runner.invoke(cli, ["candidates", str(cats), "--source", "openverse", "--out", str(tmp_path / "ov"),
                                 "--quiet", "--min-interval", "0", "--timeout", "2", "--retries", "0"])
    assert result.exit_code == 1
    assert "run the same command again to resume" in result.output and "Traceback" not in result.output


def test_candidates_source_reads_a_run(fashion_pool, fashion_categories, tmp_path):
    root, _ = fashion_pool
    out = tmp_path / "c"
    run = collect_candidates(fashion_categories, get_backend(f"local:{root}"), out, per_synset=30, workers=0)
    cls = get_source("candidates")
    assert cls is CandidatesSource
    src = cls(name="fashion", path=str(out))
    items = list(src.iter_items())
    assert len(items) == len(src) == len(run.candidates)
    assert {i.label for i in items} == set(run.candidates["synset"])
    assert all(i.path and (out / i.path).exists() for i in items[:5])
    assert items[0].meta["query"] and items[0].meta["license"] == "MIT"
    unambiguous = cls(name="x", path=str(out), drop_ambiguous=True)
    assert len(unambiguous) == int((~run.candidates["ambiguous"]).sum())
    cats = src.categories()
    assert list(cats["wnid"]) == list(fashion_categories["wnid"]) and "gloss" in cats.columns
    only = cls(name="x", path=str(out), synsets=["n04133789"])
    assert only.labels() == ["n04133789"]
    with pytest.raises(DatakitError, match="no candidates.parquet"):
        cls(name="x", path=str(tmp_path)).validate()
    with pytest.raises(DatakitError, match="'path'"):
        cls(name="x")


def test_recipe_chains_candidates_into_build(fashion_pool, fashion_categories, tmp_path):
    from datakit import open_dataset
    from datakit.build import build_dataset
    from datakit.recipe import parse_recipe

    root, _ = fashion_pool
    out = tmp_path / "c"
    run = collect_candidates(fashion_categories.head(4), get_backend(f"local:{root}"), out, per_synset=25, workers=0)
    recipe = parse_recipe(f'''
name = "fashion-candidates"
[[sources]]
name = "cands"
kind = "candidates"
path = "{out}"
drop_ambiguous = true
[normalize]
style = "none"
[splits]
strategy = "fractions"
train = 0.5
test = 0.5
''')
    build_dataset(recipe, tmp_path / "ds", workers=0)
    ds = open_dataset(tmp_path / "ds")
    keep = run.candidates[~run.candidates["ambiguous"]]
    assert len(ds.manifest) == keep["id"].nunique()
    assert set(ds.manifest["label"]) == set(keep["synset"])
    assert set(ds.manifest["source_ref"]) <= set(keep["source_ref"])


def test_http_results_are_never_read_from_local_disk(web, wn, tmp_path, png_bytes):
    """A hostile API answer naming a local path is rejected, not read."""
    secret = tmp_path / "private.png"
    secret.write_bytes(png_bytes(seed=3))
    web.json("/v1/images/", lambda q: {"page_count": 1, "results": [
        {"url": str(secret), "license": "by", "license_version": "4.0"},
        {"url": f"file://{secret}", "license": "by", "license_version": "4.0"}]})
    cats = categories_frame(from_wnids(wn, ids=["sandal.n.01"]))
    backend = OpenverseBackend(base_url=web.base, client=HttpClient(min_interval=0))
    run = collect_candidates(cats, backend, tmp_path / "out", per_synset=5, workers=0, langs=None,
                             policy=DownloadPolicy(allow_private=True))
    assert run.candidates.empty
    assert set(run.rejected["reason"]) == {"bad_url"}
    assert not (tmp_path / "out" / "images").exists() or not any((tmp_path / "out" / "images").rglob("*.png"))


def test_one_recipe_selects_searches_and_builds(fashion_pool, wn, tmp_path):
    from datakit import open_dataset
    from datakit.build import build_dataset
    from datakit.recipe import parse_recipe
    from datakit.errors import RecipeError

    root, truth = fashion_pool
    text = f'''
name = "fashion-chain"
[[sources]]
name = "web"
kind = "candidates"
path = "{tmp_path / 'cands'}"
search = "local:{root}"
select = {{strategy = "wnids", ids = ["sandal.n.01", "n02774152"]}}
per_synset = 15
drop_ambiguous = true
[normalize]
style = "none"
[splits]
strategy = "fractions"
train = 0.5
test = 0.5
'''
    build_dataset(parse_recipe(text), tmp_path / "ds", workers=0)
    ds = open_dataset(tmp_path / "ds")
    cands = pd.read_parquet(tmp_path / "cands" / "candidates.parquet")
    assert set(cands["synset"]) == {"n04133789", "n02774152"}
    assert set(ds.manifest["label"]) == {"n04133789", "n02774152"}
    assert len(ds.manifest) == cands.loc[~cands["ambiguous"], "id"].nunique()
    # a finished candidates stage is not run again
    mtime = (tmp_path / "cands" / "candidates.parquet").stat().st_mtime
    src = CandidatesSource(name="web", path=str(tmp_path / "cands"), search=f"local:{root}",
                           select={"strategy": "wnids", "ids": ["sandal.n.01"]})
    src.validate()
    assert (tmp_path / "cands" / "candidates.parquet").stat().st_mtime == mtime
    with pytest.raises(DatakitError, match="exactly one of 'categories'"):
        CandidatesSource(name="web", path=str(tmp_path), search=f"local:{root}")
    with pytest.raises(DatakitError, match="needs 'search'"):
        CandidatesSource(name="web", path=str(tmp_path), select={"strategy": "subtree", "root": "dog.n.01"})
    with pytest.raises(RecipeError, match="per_synset"):
        parse_recipe(text.replace("per_synset = 15", "per_synse = 15"))


def test_given_queries_accept_synset_names(fashion_pool, wn, tmp_path):
    root, _ = fashion_pool
    cats = categories_frame(from_wnids(wn, ids=["sandal.n.01", "bag.n.04"]))
    queries = pd.DataFrame({"synset": ["sandal.n.01", "n02774152", "dog.n.01"], "query": ["sandal", "tote", "dog"]})
    run = collect_candidates(cats, get_backend(f"local:{root}"), tmp_path / "out", per_synset=10, workers=0,
                             queries=queries)
    assert set(run.candidates["synset"]) == {"n04133789", "n02774152"}
    assert set(run.candidates["expansion"]) == {"given"}
    assert any("not in the categories were ignored: n02084071" in n for n in run.notes)


def test_scheduler_runs_the_fetches_through_get_executor(fashion_pool, fashion_categories, tmp_path, monkeypatch):
    """With a scheduler the fetch function crosses a process boundary (as to Dask workers):
    it must pickle, and the result must equal the threaded run's."""
    import datakit.parallel as parallel

    root, _ = fashion_pool
    threaded = collect_candidates(fashion_categories, get_backend(f"local:{root}"), tmp_path / "a",
                                  per_synset=20, workers=2).candidates
    calls = []

    def processes(workers=None, scheduler=None):
        calls.append((workers, scheduler))
        return parallel.ProcessExecutor(2)

    monkeypatch.setattr(parallel, "get_executor", processes)
    remote = collect_candidates(fashion_categories, get_backend(f"local:{root}"), tmp_path / "b",
                                per_synset=20, workers=2, scheduler="tcp://127.0.0.1:8786").candidates
    assert calls == [(2, "tcp://127.0.0.1:8786")]
    cols = ["synset", "query", "rank", "id", "phash", "ambiguous"]
    pd.testing.assert_frame_equal(threaded[cols].reset_index(drop=True), remote[cols].reset_index(drop=True))
