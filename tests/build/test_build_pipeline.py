"""End-to-end builds on small real data: the dataset directory, re-runs, dedup, splits."""
from __future__ import annotations

import json
import textwrap

import numpy as np
import pandas as pd
import pytest
from PIL import Image

import datakit
from datakit.build import build_dataset

from image_helpers import blocky_glyph as _digit, save_png as _png

DIGITS = textwrap.dedent("""
    name = "small-digits"
    seed = 7
    [[sources]]
    name = "digits"
    kind = "sklearn-digits"
    [normalize]
    style = "mnist"
    [splits]
    strategy = "fractions"
    train = 0.7
    val = 0.1
    test = 0.2
    near_duplicate_distance = 2
    [categories]
    "3" = "three"
""")


@pytest.fixture(scope="module")
def digits_build(tmp_path_factory):
    root = tmp_path_factory.mktemp("digits")
    recipe = root / "digits.toml"
    recipe.write_text(DIGITS)
    result = build_dataset(recipe, root / "out", workers=0)
    return recipe, root / "out", result


def test_dataset_directory_is_complete(digits_build):
    _, out, result = digits_build
    for name in ("datakit.json", "manifest.parquet", "rejected.parquet", "categories.csv", "DATASHEET.md"):
        assert (out / name).is_file(), name
    assert not (out / ".build").exists()  # staging removed once complete
    ds = datakit.open_dataset(out)
    m = ds.manifest
    assert result.kept == len(m) and result.kept + result.rejected == 1797
    assert m["id"].is_unique
    assert set(m["source"]) == {"digits"}
    assert m["source_ref"].str.startswith("sklearn-digits#").all()
    assert set(m["split"]) == {"train", "val", "test"}
    assert (m["width"] == 28).all() and (m["height"] == 28).all()
    assert m["phash"].dtype == np.uint64
    # every stored file exists and is the normalized 28x28 image named by its sha256
    import hashlib

    for rel, image_id in zip(m["path"][:50], m["id"][:50]):
        data = (out / rel).read_bytes()
        assert hashlib.sha256(data).hexdigest() == image_id
        assert Image.open(out / rel).size == (28, 28)
    assert ds.classes == [str(i) for i in range(10)]
    assert m.loc[m["label"] == "3", "label_name"].eq("three").all()
    assert m.loc[m["label"] == "4", "label_name"].eq("4").all()


def test_datakit_json_records_recipe_counts_checksums(digits_build):
    recipe, out, result = digits_build
    info = json.loads((out / "datakit.json").read_text())
    assert info["recipe"] == recipe.read_text()
    assert info["complete"] is True
    assert info["counts"]["kept"] == result.kept
    assert sum(info["counts"]["by_split"].values()) == result.kept
    assert sum(v["total"] for v in info["counts"]["by_class"].values()) == result.kept
    import hashlib

    assert info["checksums"]["manifest_sha256"] == hashlib.sha256((out / "manifest.parquet").read_bytes()).hexdigest()
    assert info["checksums"]["data_sha256"] == datakit.open_dataset(out).checksum
    assert info["timings"]["processed_items"] == 1797
    assert set(info["versions"]) >= {"datakit", "numpy", "pandas", "pillow"}
    sheet = (out / "DATASHEET.md").read_text()
    assert "## Categories" in sheet and "## Splits" in sheet and "sklearn-digits" in sheet
    assert f"{result.kept} images in 10 classes" in sheet


def test_splits_stratified_and_groups_kept_together(digits_build):
    _, out, _ = digits_build
    m = datakit.open_dataset(out).manifest
    for label, g in m.groupby("label"):
        frac = g["split"].value_counts(normalize=True)
        assert abs(frac.get("train", 0) - 0.7) < 0.08, (label, frac.to_dict())
        assert abs(frac.get("test", 0) - 0.2) < 0.08, (label, frac.to_dict())
    assert m.groupby("near_dup_group")["split"].nunique().max() == 1
    # recompute the pixel-confirmed near-duplicate graph from the stored images:
    # no confirmed pair straddles splits
    from datakit.dedup import near_duplicate_pairs, thumbnail

    pairs = near_duplicate_pairs(m["phash"].to_numpy(np.uint64), 2)
    assert len(pairs) > 0  # sklearn's digits have hash matches at 28x28
    thumbs = np.stack([thumbnail(np.asarray(Image.open(out / p))) for p in m["path"]])
    confirmed = pairs[np.einsum("ij,ij->i", thumbs[pairs[:, 0]], thumbs[pairs[:, 1]]) >= 0.98]
    s = m["split"].to_numpy()
    assert (s[confirmed[:, 0]] == s[confirmed[:, 1]]).all()
    info = json.loads((out / "datakit.json").read_text())
    assert info["deduplication"]["near_duplicates"]["verify"] == "pixels"


def test_hash_only_grouping_keeps_every_hash_match_together(tmp_path):
    recipe = tmp_path / "digits.toml"
    recipe.write_text(DIGITS.replace("near_duplicate_distance = 2",
                                     'near_duplicate_distance = 2\nnear_duplicate_verify = "hash"'))
    build_dataset(recipe, tmp_path / "out", workers=0)
    m = datakit.open_dataset(tmp_path / "out").manifest
    from datakit.dedup import near_duplicate_pairs

    pairs = near_duplicate_pairs(m["phash"].to_numpy(np.uint64), 2)
    assert len(pairs) > 0
    s = m["split"].to_numpy()
    assert (s[pairs[:, 0]] == s[pairs[:, 1]]).all()


def test_rerun_of_finished_build_does_no_work(digits_build, monkeypatch):
    recipe, out, _ = digits_build
    before = (out / "manifest.parquet").stat().st_mtime_ns

    def no_executor(*a, **k):
        raise AssertionError("the executor must not be used for an up-to-date dataset")

    monkeypatch.setattr("datakit.parallel.get_executor", no_executor)
    again = build_dataset(recipe, out, workers=0)
    assert again.up_to_date and again.processed == 0
    assert (out / "manifest.parquet").stat().st_mtime_ns == before


def test_builds_are_deterministic(digits_build, tmp_path):
    recipe, out, _ = digits_build
    other = build_dataset(recipe, tmp_path / "again", workers=2)
    pd.testing.assert_frame_equal(datakit.open_dataset(out).manifest, datakit.open_dataset(other.out).manifest)


def test_staged_thumbnails_or_stored_images_give_the_same_groups(digits_build, tmp_path, monkeypatch, caplog):
    """The pixel check reads the thumbnails the workers staged beside each chunk; a chunk staged without
    them (an older datakit, or a lost file) has its stored images read instead, with the same result."""
    import datakit.build as build_mod
    import datakit.build.run as build_run
    from datakit.dedup import thumbnail_pixels

    recipe, out, _ = digits_build
    real_finalize = build_run._finalize_streaming

    class Stop(Exception):
        pass

    def stop(*args, **kwargs):
        raise Stop

    monkeypatch.setattr(build_run, "_finalize_streaming", stop)
    with pytest.raises(Stop):
        build_dataset(recipe, tmp_path / "again", workers=0, chunk_size=400)
    chunks = sorted((tmp_path / "again" / build_mod.STAGING_DIR).rglob("chunk-*.parquet"))
    thumbs = sorted((tmp_path / "again" / build_mod.STAGING_DIR).rglob("chunk-*.thumbs"))
    assert len(chunks) == 5 and [t.stem for t in thumbs] == [c.stem for c in chunks]
    first = pd.read_parquet(chunks[0])
    ok = first[first["ok"]]
    staged = np.frombuffer(thumbs[0].read_bytes(), np.uint8).reshape(-1, 1024)
    assert len(staged) == len(ok)
    stored = np.stack([thumbnail_pixels(np.asarray(Image.open(tmp_path / "again" / p))) for p in ok["path"][:50]])
    np.testing.assert_array_equal(staged[:50], stored)  # the staged thumbnail is the stored image's
    for t in thumbs[::2]:
        t.unlink()
    thumbs[1].write_bytes(b"truncated")
    monkeypatch.setattr(build_run, "_finalize_streaming", real_finalize)
    with caplog.at_level("DEBUG", logger="datakit.build"):
        build_dataset(recipe, tmp_path / "again", workers=0, chunk_size=400)
    fallbacks = [r.getMessage() for r in caplog.records if "no usable staged thumbnails" in r.getMessage()]
    assert any("does not match" in m for m in fallbacks) and any("No such file" in m for m in fallbacks)
    pd.testing.assert_frame_equal(datakit.open_dataset(out).manifest,
                                  datakit.open_dataset(tmp_path / "again").manifest)


def test_exact_and_near_duplicates_and_unmapped_labels(tmp_path):
    data = tmp_path / "data"
    base = [_digit(s) for s in range(30)]
    for i, a in enumerate(base):
        _png(data / ("a" if i % 2 else "b") / f"img{i:02d}.png", a)
    _png(data / "a" / "zz_exact_copy.png", base[1])              # same pixels as a/img01.png
    near = base[3].copy()
    r, c = np.argwhere(near == 255)[10]
    near[r, c] = 200                                              # one pixel of ink lighter: a near copy
    _png(data / "a" / "zz_near_copy.png", near)
    _png(data / "c" / "other.png", base[5])                       # class c is not in the label map
    recipe = tmp_path / "r.toml"
    recipe.write_text(textwrap.dedent("""
        name = "dups"
        [[sources]]
        name = "shapes"
        kind = "folder"
        path = "data"
        label_map = { a = "A", b = "B" }
        [normalize]
        style = "mnist"
        [splits]
        train = 0.5
        val = 0.0
        test = 0.5
        near_duplicate_distance = 4
    """))
    result = build_dataset(recipe, tmp_path / "out", data_root=tmp_path, workers=0)
    ds = datakit.open_dataset(result.out)
    m, rej = ds.manifest, ds.rejected
    assert result.kept + result.rejected == 33
    dup = rej[rej["reason"] == "duplicate"]
    assert len(dup) == 1 and dup["source_ref"].iloc[0] == "a/zz_exact_copy.png"
    kept_id = m.loc[m["source_ref"] == "a/img01.png", "id"].iloc[0]
    assert dup["id"].iloc[0] == kept_id and kept_id in dup["detail"].iloc[0] and dup["stage"].iloc[0] == "dedup"
    unm = rej[rej["reason"] == "unmapped_label"]
    assert list(unm["source_ref"]) == ["c/other.png"] and unm["stage"].iloc[0] == "label"
    assert set(m["label"]) == {"A", "B"} and ds.classes == ["A", "B"]
    near_row = m[m["source_ref"] == "a/zz_near_copy.png"].iloc[0]
    orig_row = m[m["source_ref"] == "a/img03.png"].iloc[0]
    assert near_row["near_dup_group"] == orig_row["near_dup_group"]
    assert near_row["split"] == orig_row["split"]


def test_changed_recipe_rebuilds_and_drops_orphans(tmp_path):
    for i in range(12):
        _png(tmp_path / "data" / "g" / f"{i}.png", _digit(100 + i))
    text = textwrap.dedent("""
        name = "shapes"
        [[sources]]
        name = "shapes"
        kind = "folder"
        path = "data"
        [normalize]
        style = "mnist"
    """)
    recipe = tmp_path / "r.toml"
    recipe.write_text(text)
    first = build_dataset(recipe, tmp_path / "out", data_root=tmp_path, workers=0)
    assert first.processed == 12
    recipe.write_text(text + "canvas = 20\n")
    second = build_dataset(recipe, tmp_path / "out", data_root=tmp_path, workers=0)
    assert not second.up_to_date and second.processed == 12
    m = datakit.open_dataset(second.out).manifest
    assert (m["width"] == 20).all()
    stored = {p.stem for p in (tmp_path / "out" / "images").rglob("*.png")}
    assert stored == set(m["id"])  # the 28x28 images of the first recipe are gone


def test_remove_orphans_keeps_only_kept_ids(tmp_path):
    from datakit.build.orphans import _id_digest, _remove_orphans

    kept, other = "ab" + "1" * 62, "ab" + "2" * 62
    sub = tmp_path / "images" / "ab"
    sub.mkdir(parents=True)
    for name in (f"{kept}.png", f"{other}.png", f".{kept}.png.tmp", f"{kept}.png.part"):
        (sub / name).write_bytes(b"x")
    removed = _remove_orphans(tmp_path, np.sort(_id_digest(pd.Series([kept], dtype=object))))
    # the other id, the hidden temporary file and a file whose stem is not an id (kept.png) go
    assert removed == 3 and sorted(p.name for p in sub.iterdir()) == [f"{kept}.png"]


def test_optional_missing_source_is_skipped_with_a_note(tmp_path):
    for i in range(5):
        _png(tmp_path / "data" / "g" / f"{i}.png", _digit(200 + i))
    recipe = tmp_path / "r.toml"
    recipe.write_text(textwrap.dedent("""
        name = "opt"
        [[sources]]
        name = "mnist"
        kind = "idx"
        optional = true
        root = "mnist"
        split = "all"
        [[sources]]
        name = "shapes"
        kind = "folder"
        path = "data"
        [normalize]
        style = "mnist"
    """))
    result = build_dataset(recipe, tmp_path / "out", data_root=tmp_path, workers=0)
    assert list(result.skipped_sources) == ["mnist"]
    assert "no such folder" in result.skipped_sources["mnist"]
    info = datakit.open_dataset(result.out).info
    assert info["skipped_sources"]["mnist"] == result.skipped_sources["mnist"]
    assert [s["status"] for s in info["sources"]] == ["skipped", "used"]
    row = result.summary.set_index("source").loc["mnist"]
    assert row["status"] == "skipped" and row["kept"] == 0
    assert "Skipped sources" in (result.out / "DATASHEET.md").read_text()


def test_fallback_source_is_read_only_when_its_primary_is_missing(tmp_path):
    for i in range(4):
        _png(tmp_path / "spare" / "g" / f"{i}.png", _digit(300 + i))
        _png(tmp_path / "main" / "g" / f"{i}.png", _digit(400 + i))
    text = textwrap.dedent("""
        name = "fb"
        [[sources]]
        name = "primary"
        kind = "folder"
        optional = true
        path = "PRIMARY"
        [[sources]]
        name = "spare"
        fallback_for = "primary"
        kind = "folder"
        path = "spare"
        [normalize]
        style = "mnist"
    """)
    recipe = tmp_path / "r.toml"
    recipe.write_text(text.replace("PRIMARY", "absent"))
    used_spare = build_dataset(recipe, tmp_path / "a", data_root=tmp_path, workers=0)
    assert set(datakit.open_dataset(used_spare.out).manifest["source"]) == {"spare"}
    assert list(used_spare.skipped_sources) == ["primary"]
    recipe.write_text(text.replace("PRIMARY", "main"))
    used_main = build_dataset(recipe, tmp_path / "b", data_root=tmp_path, workers=0)
    assert set(datakit.open_dataset(used_main.out).manifest["source"]) == {"primary"}
    assert used_main.skipped_sources == {}
    status = {s["name"]: s["status"] for s in used_main.info["sources"]}
    assert status == {"primary": "used", "spare": "unused"}


def test_fallback_must_name_an_earlier_source():
    from datakit.errors import RecipeError
    from datakit.recipe import parse_recipe

    with pytest.raises(RecipeError, match=r"fallback_for: unknown value 'mnist'.*Valid values are \{digits\}"):
        parse_recipe('name = "x"\n[[sources]]\nname = "digits"\nkind = "sklearn-digits"\n'
                     '[[sources]]\nname = "dl"\nkind = "sklearn-digits"\nfallback_for = "mnist"\n')


def test_unlabeled_folder_builds_with_target_minus_one(tmp_path):
    for i in range(6):
        _png(tmp_path / "pool" / f"{i}.png", _digit(500 + i))
    recipe = tmp_path / "r.toml"
    recipe.write_text('name = "pool"\n[[sources]]\nkind = "folder"\npath = "pool"\nlabeled = false\n'
                      '[normalize]\nstyle = "mnist"\n[splits]\ntrain = 0.5\nval = 0.0\ntest = 0.5\n')
    result = build_dataset(recipe, tmp_path / "out", data_root=tmp_path, workers=0)
    ds = datakit.open_dataset(result.out)
    assert result.kept == 6 and ds.manifest["label"].isna().all()
    assert sorted(ds.manifest["split"].value_counts().tolist()) == [3, 3]
    x, y = ds.split("train")[0]
    assert y == -1 and tuple(x.shape) == (1, 28, 28)


def test_two_builds_into_one_directory_are_refused(tmp_path):
    import fcntl

    from datakit.errors import DatakitError

    _png(tmp_path / "data" / "g" / "0.png", _digit(600))
    recipe = tmp_path / "r.toml"
    recipe.write_text('name = "l"\n[[sources]]\nkind = "folder"\npath = "data"\n[normalize]\nstyle = "mnist"\n')
    out = tmp_path / "out"
    out.mkdir()
    with open(out / ".build.lock", "a+") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(DatakitError, match="Another build is writing to"):
            build_dataset(recipe, out, data_root=tmp_path, workers=0)
    assert build_dataset(recipe, out, data_root=tmp_path, workers=0).kept == 1


def test_data_root_precedence(tmp_path, monkeypatch):
    from datakit.build import plan_build

    for where in ("flag", "recipe_dir/rel", "env"):
        _png(tmp_path / where / "data" / "g" / "0.png", _digit(700))
    recipe_dir = tmp_path / "recipe_dir"
    text = 'name = "p"\n{root}[[sources]]\nkind = "folder"\npath = "data"\n[normalize]\nstyle = "mnist"\n'
    (recipe_dir / "with_root.toml").write_text(text.format(root='data_root = "rel"\n'))
    (recipe_dir / "no_root.toml").write_text(text.format(root=""))
    monkeypatch.setenv("DATAKIT_DATA", str(tmp_path / "env"))
    monkeypatch.chdir(tmp_path)
    # --data-root beats the recipe's data_root (resolved against the recipe's folder), which beats $DATAKIT_DATA
    assert plan_build(recipe_dir / "with_root.toml", data_root=tmp_path / "flag").data_root == tmp_path / "flag"
    assert plan_build(recipe_dir / "with_root.toml").data_root == (recipe_dir / "rel").resolve()
    assert plan_build(recipe_dir / "no_root.toml").data_root == tmp_path / "env"
