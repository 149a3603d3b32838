"""The local backend: SQLite FTS5 index over names, sidecars and EXIF; ranked search; CLI."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner
from PIL import Image

from datakit.cli import cli
from datakit.errors import DatakitError
from datakit.sources.search import get_backend
from datakit.sources.search.local import PoolIndex, fts_query, read_image_text


@pytest.fixture
def pool(tmp_path, png_bytes):
    root = tmp_path / "pool"
    (root / "sub").mkdir(parents=True)
    (root / "red_sandal_0001.png").write_bytes(png_bytes(seed=1))
    (root / "img_0002.png").write_bytes(png_bytes(seed=2))
    (root / "img_0002.txt").write_text("A leather sandal on a beach\n")
    (root / "sub" / "img_0003.png").write_bytes(png_bytes(seed=3))
    (root / "sub" / "img_0003.json").write_text(json.dumps({
        "caption": "studio photo", "tags": ["ankle boot", "leather"], "license": "CC BY 4.0", "author": "Ann"}))
    # EXIF ImageDescription and Windows XPKeywords (UTF-16LE)
    im = Image.new("RGB", (32, 32), (90, 90, 90))
    exif = Image.Exif()
    exif[270] = "a handbag on a table"
    exif[0x9C9E] = "purse;tote".encode("utf-16-le") + b"\x00\x00"
    im.save(root / "img_0004.jpg", format="JPEG", exif=exif.tobytes())
    (root / "notes.md").write_text("sandal sandal sandal")           # not an image: not indexed
    (root / ".hidden.png").write_bytes(png_bytes(seed=9))            # hidden: not indexed
    return root


def test_read_image_text_sources(pool):
    assert read_image_text(pool / "red_sandal_0001.png")["name"] == "red sandal 0001"
    assert "leather sandal" in read_image_text(pool / "img_0002.png")["caption"]
    side = read_image_text(pool / "sub" / "img_0003.png")
    assert side["tags"] == "ankle boot leather" and side["license"] == "CC BY 4.0" and side["attribution"] == "Ann"
    exif = read_image_text(pool / "img_0004.jpg")["exif"]
    assert "handbag" in exif and "purse" in exif and "tote" in exif


def test_build_and_search_every_text_source(pool):
    idx = PoolIndex(pool)
    counts = idx.build()
    assert counts == {"indexed": 4, "unchanged": 0, "removed": 0, "total": 4}
    assert idx.index_path == pool / ".datakit-index.sqlite"
    names = lambda results: [Path(r.ref).name for r in results]  # noqa: E731
    assert sorted(names(idx.search("sandal"))) == ["img_0002.png", "red_sandal_0001.png"]   # name + .txt
    assert names(idx.search("ankle boot")) == ["img_0003.png"]                             # .json tags
    assert names(idx.search("purse")) == ["img_0004.jpg"]                                  # EXIF XPKeywords
    assert names(idx.search("handbags")) == ["img_0004.jpg"]                               # stemming
    assert idx.search("boot sandal") == []                                                 # all words
    assert sorted(names(idx.search("boot sandal", mode="any"))) == ["img_0002.png", "img_0003.png",
                                                                     "red_sandal_0001.png"]
    r = idx.search("boot")[0]
    assert r.license == "CC BY 4.0" and r.attribution == "Ann" and r.local and r.rank == 1
    assert Path(r.ref).is_absolute()


def test_ranking_prefers_documents_matching_more_words(pool):
    idx = PoolIndex(pool)
    idx.build()
    results = idx.search("leather sandal beach", mode="any")
    assert Path(results[0].ref).name == "img_0002.png"      # matches all three words
    assert [r.rank for r in results] == list(range(1, len(results) + 1))
    scores = [r.meta["score"] for r in results]
    assert scores == sorted(scores)                          # bm25: lower is better


def test_incremental_rebuild(pool, png_bytes):
    idx = PoolIndex(pool)
    idx.build()
    assert idx.build() == {"indexed": 0, "unchanged": 4, "removed": 0, "total": 4}
    txt = pool / "img_0002.txt"
    txt.write_text("a sneaker")
    os.utime(txt, (txt.stat().st_atime, txt.stat().st_mtime + 10))
    (pool / "sub" / "img_0003.png").unlink()
    (pool / "new.png").write_bytes(png_bytes(seed=7))
    assert idx.build() == {"indexed": 2, "unchanged": 2, "removed": 1, "total": 4}
    assert [Path(r.ref).name for r in idx.search("sneaker")] == ["img_0002.png"]
    assert idx.search("boot") == []


def test_queries_with_syntax_characters_are_safe(pool):
    idx = PoolIndex(pool)
    idx.build()
    for q in ['"', "AND OR NOT", "t-shirt", "sandal*", "(boot", "NEAR(a b)", "--", ""]:
        idx.search(q)                                        # no sqlite syntax error
    assert fts_query('say "hi"') == '"say" "hi"'
    with pytest.raises(ValueError, match="Valid values are"):
        fts_query("x", mode="some")


def test_errors(tmp_path, pool):
    with pytest.raises(DatakitError, match="does not exist"):
        PoolIndex(tmp_path / "nope")
    with pytest.raises(DatakitError, match="Build it with `datakit index build"):
        PoolIndex(pool).search("sandal")


def test_backend_builds_a_missing_index_and_paginates(pool):
    backend = get_backend(f"local:{pool}", page_size=1, mode="any")
    results = backend.search("sandal boot leather", limit=3)
    assert [r.rank for r in results] == [1, 2, 3] and len({r.ref for r in results}) == 3


def test_cli_index_build_and_search(pool):
    runner = CliRunner()
    result = runner.invoke(cli, ["index", "build", str(pool), "--quiet"])
    assert result.exit_code == 0, result.output
    assert "indexed 4, unchanged 0, removed 0; 4 images" in result.output
    result = runner.invoke(cli, ["index", "search", str(pool), "ankle boot", "--format", "csv"])
    assert result.exit_code == 0
    assert result.output.splitlines()[0] == "rank,score,path,license"
    assert "sub/img_0003.png,CC BY 4.0" in result.output
    result = runner.invoke(cli, ["index", "build", str(pool / "missing")])
    assert result.exit_code == 2 and "does not exist" in result.output
