"""`datakit build` with a [curate] table: ImageNetV2-style test splits from crowd selection frequency."""
from __future__ import annotations

import hashlib
import json
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

import datakit
from datakit.build import build_dataset
from datakit.cli import cli
from datakit.errors import DatakitError, RecipeError
from datakit.recipe import parse_recipe

from image_helpers import blocky_glyph as _glyph, save_png as _png

BASE = """
name = "curated"
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

# selection frequencies by image (source_ref): yes votes / votes; None = no votes at all
FREQ = {"a/0.png": (5, 5), "a/1.png": (4, 5), "a/2.png": (3, 5), "a/3.png": (1, 5), "a/4.png": (0, 5),
        "a/5.png": None, "b/0.png": (4, 5), "b/1.png": (2, 5), "b/2.png": (5, 5), "b/3.png": (3, 4),
        "b/4.png": None, "b/5.png": None, "a/zz_near.png": None}


def _votes(ids: dict[str, str], freq: dict, *, repeat: str | None = None) -> pd.DataFrame:
    rows = []
    for ref, f in freq.items():
        if f is None:
            continue
        yes, n = f
        for w in range(n):
            rows.append({"task": ids[ref], "worker": f"w{w}", "label": "yes" if w < yes else "no", "time": float(w)})
    if repeat is not None:  # w4 voted "no" first, then "yes" again: the earliest vote counts
        rows.append({"task": ids[repeat], "worker": "w4", "label": "yes", "time": 99.0})
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    """12 distinct glyphs in classes a and b, a near copy of a/0.png, and votes keyed by manifest id."""
    root = tmp_path_factory.mktemp("curate")
    for c, base in (("a", 0), ("b", 10)):
        for i in range(6):
            _png(root / "data" / c / f"{i}.png", _glyph(base + i + 1))
    near = _glyph(1).copy()
    r, c = np.argwhere(near == 255)[10]
    near[r, c] = 200
    _png(root / "data" / "a" / "zz_near.png", near)
    (root / "plain.toml").write_text(BASE)
    build_dataset(root / "plain.toml", root / "plain", data_root=root, workers=0)
    m = datakit.open_dataset(root / "plain").manifest
    ids = dict(zip(m["source_ref"], m["id"]))
    votes = _votes(ids, FREQ, repeat="a/3.png")
    (root / "votes").mkdir()
    votes.to_parquet(root / "votes" / "annotations.parquet")
    return root, ids


def _build(root: Path, curate: str, out: str, base: str = BASE):
    recipe = root / f"{out}.toml"
    recipe.write_text(base + textwrap.dedent(curate))
    result = build_dataset(recipe, root / out, data_root=root, workers=0)
    ds = datakit.open_dataset(result.out)
    return result, ds


def _refs(frame: pd.DataFrame) -> set[str]:
    return set(frame["source_ref"])


def test_threshold_selects_frequent_images_and_rejects_the_rest_with_reasons(pool):
    root, ids = pool
    result, ds = _build(root, """
        [curate]
        annotations = "votes"
        strategy = "threshold"
        threshold = 0.7
    """, "thr")
    m, rej = ds.manifest, ds.rejected
    assert _refs(m) == {"a/0.png", "a/1.png", "b/0.png", "b/2.png", "b/3.png"}
    assert set(m["split"]) == {"test"}
    cur = rej[rej["stage"] == "curate"].set_index("source_ref")
    assert cur["reason"].to_dict() == {
        "a/2.png": "selection_frequency<0.7", "a/3.png": "selection_frequency<0.7",
        "a/4.png": "selection_frequency<0.7", "b/1.png": "selection_frequency<0.7",
        "a/5.png": "no_selection_frequency", "b/4.png": "no_selection_frequency",
        "b/5.png": "no_selection_frequency", "a/zz_near.png": "no_selection_frequency"}
    assert cur.loc["a/3.png", "detail"].startswith("selection frequency 0.200 from 5 votes")  # repeat vote once
    assert cur.loc["a/5.png", "id"] == ids["a/5.png"]
    row = m.set_index("source_ref").loc["b/3.png"]
    assert row["votes"] == 4 and row["selection_frequency"] == pytest.approx(0.75) and pd.isna(row["p_correct"])
    info = ds.info
    assert info["curation"]["selected"] == 5 and info["curation"]["rejected"] == 8
    assert info["curation"]["rejected_by_reason"] == {"no_selection_frequency": 4, "selection_frequency<0.7": 4}
    assert info["counts"]["rejected_by_reason"]["selection_frequency<0.7"] == 4
    assert "curated the ImageNetV2 way" in (result.out / "DATASHEET.md").read_text()
    # the images not selected stay stored (listed in rejected.parquet), for re-curation
    assert (result.out / ds.manifest["path"].iloc[0]).exists()
    assert any((result.out / "images").rglob(f"{ids['a/4.png']}.png"))


def test_top_takes_the_most_frequent_per_class(pool):
    root, _ = pool
    _, ds = _build(root, """
        [curate]
        annotations = "votes/annotations.parquet"
        strategy = "top"
        per_class = 2
        split = "test-v2"
    """, "top")
    assert ds.manifest.groupby("label")["source_ref"].apply(set).to_dict() == {
        "a": {"a/0.png", "a/1.png"}, "b": {"b/2.png", "b/0.png"}}
    assert set(ds.manifest["split"]) == {"test-v2"}
    cur = ds.rejected[ds.rejected["stage"] == "curate"].set_index("source_ref")["reason"]
    assert cur.to_dict() == {"a/2.png": "not_in_top_2", "a/3.png": "not_in_top_2", "a/4.png": "not_in_top_2",
                             "b/1.png": "not_in_top_2", "b/3.png": "not_in_top_2",
                             "a/5.png": "no_selection_frequency", "b/4.png": "no_selection_frequency",
                             "b/5.png": "no_selection_frequency", "a/zz_near.png": "no_selection_frequency"}


def test_matched_frequency_follows_the_reference_histogram(pool):
    root, _ = pool
    # reference: half its images in [0, 0.5), half in [0.5, 1]
    ref = pd.DataFrame({"task": ["r1"] * 2 + ["r2"] * 2, "worker": ["u", "v"] * 2, "label": ["no", "no", "yes", "yes"]})
    ref.to_parquet(root / "reference.parquet")
    curate = """
        [curate]
        annotations = "votes"
        strategy = "matched-frequency"
        reference = "reference.parquet"
        per_class = 4
        bins = 2
        seed = 3
    """
    _, ds = _build(root, curate, "matched")
    m = ds.manifest
    # two per class from each bin; class a's low bin {a/3, a/4} and class b's low bin {b/1} are taken whole
    assert {"a/3.png", "a/4.png", "b/1.png"} <= _refs(m)
    assert m.groupby("label").size().to_dict() == {"a": 4, "b": 3}
    a_high = _refs(m[(m["label"] == "a") & (m["selection_frequency"] >= 0.5)])
    b_high = _refs(m[(m["label"] == "b") & (m["selection_frequency"] >= 0.5)])
    assert len(a_high) == 2 and a_high < {"a/0.png", "a/1.png", "a/2.png"}
    assert len(b_high) == 2 and b_high < {"b/0.png", "b/2.png", "b/3.png"}
    cur = ds.rejected[ds.rejected["stage"] == "curate"].set_index("source_ref")["reason"]
    assert set(cur[cur.str.startswith("matched")].index) == ({"a/0.png", "a/1.png", "a/2.png"} - a_high) | (
        {"b/0.png", "b/2.png", "b/3.png"} - b_high)
    assert set(cur[cur.str.startswith("matched")]) == {"matched_frequency_bin_1_full"}
    _, again = _build(root, curate, "matched-again")  # seeded: the same draw
    assert _refs(again.manifest) == _refs(m)


def test_keep_puts_the_others_in_other_splits_never_the_curated_one(pool):
    root, _ = pool
    _, ds = _build(root, """
        [curate]
        annotations = "votes"
        threshold = 0.7
        others = "keep"
    """, "keep")
    m = ds.manifest
    assert _refs(m[m["split"] == "test"]) == {"a/0.png", "a/1.png", "b/0.png", "b/2.png", "b/3.png"}
    assert _refs(m[m["split"] == "train"]) == {"a/2.png", "a/3.png", "a/4.png", "a/5.png", "b/1.png", "b/4.png",
                                               "b/5.png"}
    # the near copy of a selected test image can go neither to test (not selected) nor to train (leakage)
    rej = ds.rejected[ds.rejected["stage"] == "curate"]
    assert rej["source_ref"].tolist() == ["a/zz_near.png"]
    assert rej["reason"].tolist() == ["near_duplicate_of_selected"]
    assert ds.info["curation"]["kept_outside_split"] == 7


def test_new_votes_refinalize_without_reprocessing(pool, tmp_path):
    root, ids = pool
    votes_dir = tmp_path / "v"
    votes_dir.mkdir()
    _votes(ids, FREQ).to_parquet(votes_dir / "annotations.parquet")
    recipe = tmp_path / "r.toml"
    recipe.write_text(BASE + f'[curate]\nannotations = "{votes_dir}"\nthreshold = 0.7\n')
    first = build_dataset(recipe, tmp_path / "out", data_root=root, workers=0)
    assert first.processed == 13 and "a/5.png" not in _refs(datakit.open_dataset(first.out).manifest)
    same = build_dataset(recipe, tmp_path / "out", data_root=root, workers=0)
    assert same.up_to_date
    more = _votes(ids, {**FREQ, "a/5.png": (3, 3)})
    more.to_parquet(votes_dir / "annotations.parquet")
    second = build_dataset(recipe, tmp_path / "out", data_root=root, workers=0)
    assert not second.up_to_date and second.processed == 0 and second.reused == 13
    m = datakit.open_dataset(second.out).manifest
    assert "a/5.png" in _refs(m)
    assert (second.out / m.set_index("source_ref").loc["a/5.png", "path"]).is_file()
    sha = hashlib.sha256((votes_dir / "annotations.parquet").read_bytes()).hexdigest()
    assert json.loads((second.out / "datakit.json").read_text())["curation"]["inputs_sha256"]["annotations"] == sha


def test_consensus_fills_p_correct_and_multiclass_answers_count_for_the_image_class(pool, tmp_path):
    root, ids = pool
    # "pick the class" answers: selected when the answer is the image's class
    mc = pd.DataFrame({"task": [ids["a/0.png"]] * 3 + [ids["b/0.png"]] * 3, "worker": ["u", "v", "w"] * 2,
                       "label": ["a", "a", "b", "a", "a", "b"]})
    mc.to_parquet(tmp_path / "mc.parquet")
    cons = pd.DataFrame({"item": [ids["a/0.png"], ids["b/0.png"]], "p_positive": [0.99, 0.2]})
    cons.to_parquet(tmp_path / "consensus.parquet")
    recipe = tmp_path / "r.toml"
    recipe.write_text(BASE + f'[curate]\nannotations = "{tmp_path / "mc.parquet"}"\n'
                             f'consensus = "{tmp_path / "consensus.parquet"}"\nthreshold = 0.5\n')
    ds = datakit.open_dataset(build_dataset(recipe, tmp_path / "out", data_root=root, workers=0).out)
    m = ds.manifest.set_index("source_ref")
    assert list(m.index) == ["a/0.png"]
    assert m.loc["a/0.png", "selection_frequency"] == pytest.approx(2 / 3)
    assert m.loc["a/0.png", "p_correct"] == pytest.approx(0.99)
    rej = ds.rejected.set_index("source_ref")
    assert rej.loc["b/0.png", "reason"] == "selection_frequency<0.5"


def _candidates_dir(root: Path) -> tuple[Path, dict[str, str]]:
    """A hand-made `datakit candidates` output: 4 images, one found for two synsets."""
    cdir = root / "cands"
    rows, ids = [], {}
    for k, (synset, seed) in enumerate([("n1", 31), ("n1", 32), ("n2", 33), ("n1", 34), ("n2", 34)]):
        tmp = cdir / "tmp.png"
        _png(tmp, _glyph(seed))
        data = tmp.read_bytes()
        cid = hashlib.sha256(data).hexdigest()
        rel = f"images/{cid[:2]}/{cid}.png"
        (cdir / rel).parent.mkdir(parents=True, exist_ok=True)
        (cdir / rel).write_bytes(data)
        ids[f"{synset}/{seed}"] = cid
        rows.append({"synset": synset, "id": cid, "path": rel, "source_ref": f"http://example.org/{seed}.png",
                     "query": synset, "expansion": "lemma", "rank": k, "license": "cc0", "attribution": "",
                     "backend": "local", "ambiguous": seed == 34})
    tmp.unlink()
    pd.DataFrame(rows).to_parquet(cdir / "candidates.parquet")
    return cdir, ids


def test_candidates_votes_match_by_candidate_id_and_synset_prefix(tmp_path):
    cdir, ids = _candidates_dir(tmp_path)
    shared = ids["n1/34"]
    votes = pd.DataFrame({
        "task": [ids["n1/31"]] * 2 + [ids["n1/32"]] * 2 + [ids["n2/33"]] * 2 + [shared] * 2 + [f"n2:{shared}"] * 2,
        "worker": ["u", "v"] * 5,
        # the shared image: "no" as an n1 (its plain id), "yes" as an n2
        "label": ["yes", "yes", "no", "no", "yes", "no", "no", "no", "yes", "yes"]})
    votes.to_parquet(cdir / "annotations.parquet")
    text = f"""
name = "cands"
[[sources]]
name = "web"
kind = "candidates"
path = "{cdir}"
synsets = ["n1", "n2"]
[normalize]
style = "none"
[curate]
annotations = "{cdir}"
threshold = 0.5
"""
    ds = datakit.open_dataset(build_dataset(parse_recipe(text), tmp_path / "out", workers=0).out)
    m = ds.manifest
    assert not set(m["id"]) & set(ids.values())  # normalized ids differ from candidate ids
    assert dict(zip(m["candidate_id"], m["label"])) == {ids["n1/31"]: "n1", ids["n2/33"]: "n2"}
    # the shared image kept its first synset (n1) after dedup, so its n1 votes count
    rej = ds.rejected.set_index("source_ref")
    assert sorted(rej.loc["http://example.org/34.png", "reason"]) == ["duplicate", "selection_frequency<0.5"]
    assert rej.loc["http://example.org/32.png", "reason"] == "selection_frequency<0.5"
    only_n2 = text.replace('synsets = ["n1", "n2"]', 'synsets = ["n2"]')
    ds2 = datakit.open_dataset(build_dataset(parse_recipe(only_n2), tmp_path / "out2", workers=0).out)
    assert set(ds2.manifest["candidate_id"]) == {ids["n2/33"], shared}  # "n2:<id>" votes, not the n1 ones
    assert ds2.manifest.set_index("candidate_id").loc[shared, "selection_frequency"] == 1.0


def test_votes_for_other_images_are_an_error(pool, tmp_path):
    root, _ = pool
    pd.DataFrame({"task": ["x", "y"], "worker": ["u", "u"], "label": ["yes", "no"]}).to_parquet(tmp_path / "v.parquet")
    recipe = tmp_path / "r.toml"
    recipe.write_text(BASE + f'[curate]\nannotations = "{tmp_path / "v.parquet"}"\n')
    with pytest.raises(DatakitError, match="None of the 2 crowd tasks .* matches an image of this build"):
        build_dataset(recipe, tmp_path / "out", data_root=root, workers=0)


CURATE_ERRORS = [
    ('[curate]\nstrategy = "top"\n', r"Missing key curate.annotations"),
    ('[curate]\nannotations = "votes"\nstrategy = "best"\n',
     r"curate.strategy: unknown value 'best'.*Valid values are \{threshold, top, matched-frequency\}"),
    ('[curate]\nannotations = "votes"\nothers = "drop"\n',
     r"curate.others: unknown value 'drop'.*Valid values are \{reject, keep\}"),
    ('[curate]\nannotations = "votes"\nthreshold = 1.5\n', r"curate.threshold must be a selection frequency between"),
    ('[curate]\nannotations = "votes"\nper_class = 0\n', r"curate.per_class must be a positive integer"),
    ('[curate]\nannotations = "votes"\nbins = "5"\n', r"curate.bins must be a positive integer"),
    ('[curate]\nannotations = "votes"\nsplit = "my test"\n', r"curate.split must be a split name"),
    ('[curate]\nannotations = "votes"\nstrategy = "matched-frequency"\n', r"Missing key curate.reference"),
    ('[curate]\nannotations = "votes"\nreference = "r.parquet"\n', r"curate.reference is only used by strategy"),
    ('[curate]\nannotations = "votes"\ntreshold = 0.5\n', r"Unknown key curate.'treshold'.*Did you mean 'threshold'"),
    ('[curate]\nannotations = 3\n', r"curate.annotations must be a path"),
]


@pytest.mark.parametrize("curate,pattern", CURATE_ERRORS)
def test_recipe_errors_name_the_key_and_valid_values(curate, pattern):
    with pytest.raises(RecipeError, match=pattern):
        parse_recipe(BASE + curate)


def test_missing_or_malformed_vote_files_fail_before_any_work(tmp_path):
    from datakit.build import plan_build

    (tmp_path / "data" / "a").mkdir(parents=True)
    _png(tmp_path / "data" / "a" / "0.png", _glyph(1))
    (tmp_path / "empty").mkdir()
    pd.DataFrame({"item": ["x"], "worker": ["u"]}).to_parquet(tmp_path / "bad.parquet")
    cases = [
        ('annotations = "nowhere"', r"curate.annotations: 'nowhere' does not exist \(looked in .*nowhere"),
        ('annotations = "empty"', r"curate.annotations: .*empty holds no annotations.parquet; collect votes"),
        ('annotations = "bad.parquet"', r"curate.annotations: .*bad.parquet has no 'task', 'label' column"),
        ('annotations = "bad.parquet"\nconsensus = "empty"', r"curate.annotations: .*has no 'task'"),
    ]
    for body, pattern in cases:
        recipe = tmp_path / "r.toml"
        recipe.write_text(BASE + "[curate]\n" + body + "\n")
        with pytest.raises(RecipeError, match=pattern):
            plan_build(recipe, data_root=tmp_path)
    pd.DataFrame({"task": ["x"], "worker": ["u"], "label": ["yes"]}).to_parquet(tmp_path / "ok.parquet")
    recipe.write_text(BASE + '[curate]\nannotations = "ok.parquet"\nconsensus = "empty"\n')
    with pytest.raises(RecipeError, match=r"curate.consensus: .*holds no consensus.parquet; compute it with"):
        plan_build(recipe, data_root=tmp_path)
    assert not (tmp_path / "out").exists()


def test_cli_build_with_curate(pool, tmp_path):
    root, _ = pool
    recipe = tmp_path / "r.toml"
    recipe.write_text(BASE + f'[curate]\nannotations = "{root / "votes"}"\nstrategy = "top"\nper_class = 1\n')
    res = CliRunner().invoke(cli, ["build", str(recipe), "--out", str(tmp_path / "out"), "--data-root", str(root),
                                   "--workers", "0", "--quiet"])
    assert res.exit_code == 0, res.output
    assert "2 images kept, 11 rejected" in res.output
    bad = tmp_path / "bad.toml"
    bad.write_text(BASE + '[curate]\nannotations = "votes"\nstrategy = "best"\n')
    res = CliRunner().invoke(cli, ["build", str(bad), "--out", str(tmp_path / "o2"), "--quiet"])
    assert res.exit_code == 1 and "curate.strategy: unknown value 'best'" in res.output
    assert "Traceback" not in res.output


def test_keep_with_the_per_class_protocol_rejects_the_remainder_that_would_go_to_test(pool):
    root, _ = pool
    base = BASE.replace("train = 0.5\nval = 0.0\ntest = 0.5\n", 'strategy = "per-class"\nper_class = 2\n')
    _, ds = _build(root, """
        [curate]
        annotations = "votes"
        threshold = 0.7
        others = "keep"
    """, "keep-per-class", base=base)
    m = ds.manifest
    assert _refs(m[m["split"] == "test"]) == {"a/0.png", "a/1.png", "b/0.png", "b/2.png", "b/3.png"}
    assert m[m["split"] == "train"].groupby("label").size().to_dict() == {"a": 2, "b": 2}
    cur = ds.rejected[ds.rejected["stage"] == "curate"].set_index("source_ref")
    assert len(cur) == 4 and cur.loc["a/zz_near.png", "reason"] == "near_duplicate_of_selected"
    rest = cur.drop(index="a/zz_near.png")
    assert set(rest.index) <= {"a/2.png", "a/3.png", "a/4.png", "a/5.png", "b/1.png", "b/4.png", "b/5.png"}
    assert rest["detail"].str.contains("the split protocol put it there").all()
    assert ds.info["curation"]["rejected"] == 4


def test_dropping_curate_reuses_the_staged_work_and_cleans_up(pool, tmp_path):
    root, _ = pool
    recipe = tmp_path / "r.toml"
    recipe.write_text(BASE + f'[curate]\nannotations = "{root / "votes"}"\n')
    curated = build_dataset(recipe, tmp_path / "out", data_root=root, workers=0)
    assert (tmp_path / "out" / ".build").is_dir() and curated.kept == 5
    recipe.write_text(BASE)
    plain = build_dataset(recipe, tmp_path / "out", data_root=root, workers=0)
    assert plain.processed == 0 and plain.reused == 13 and plain.kept == 13
    assert not (tmp_path / "out" / ".build").exists()
    assert "curation" not in plain.info
    stored = {p.stem for p in (tmp_path / "out" / "images").rglob("*.png")}
    assert stored == set(datakit.open_dataset(plain.out).manifest["id"])
