"""Synset selection strategies, categories.csv, query expansion, and their CLI."""
from __future__ import annotations

import pandas as pd
import pytest
from click.testing import CliRunner

from datakit.cli import cli
from datakit.errors import DatakitError
from datakit.store.dataset import CATEGORY_COLUMNS
from datakit.taxonomy.expand import QUERY_COLUMNS, expand_categories, expand_synset
from datakit.taxonomy.select import (
    PICTURABLE_LEXNAMES,
    categories_frame,
    from_wnids,
    non_overlapping,
    random_dictionary,
    read_categories,
    select_synsets,
    subtree,
    write_categories,
)


def _ancestors(s):
    return set(s.closure(lambda x: x.hypernyms() + x.instance_hypernyms()))


def test_subtree_direct_hyponyms_and_leaves(wn):
    dog = wn.synset("dog.n.01")
    direct = subtree(wn, "n02084071", max_depth=1)
    assert set(direct) == set(dog.hyponyms())
    leaves = subtree(wn, "dog.n.01", leaves_only=True)
    assert leaves and all(not s.hyponyms() and dog in _ancestors(s) for s in leaves)
    with_root = subtree(wn, "dog.n.01", min_depth=0, max_depth=0)
    assert with_root == [dog]


def test_subtree_sampling_is_seeded(wn):
    a = subtree(wn, "dog.n.01", leaves_only=True, count=5, seed=0)
    b = subtree(wn, "dog.n.01", leaves_only=True, count=5, seed=0)
    c = subtree(wn, "dog.n.01", leaves_only=True, count=5, seed=1)
    assert a == b and len(a) == 5 and a != c


def test_subtree_errors(wn):
    with pytest.raises(ValueError, match="min_depth <= max_depth"):
        subtree(wn, "dog.n.01", min_depth=3, max_depth=1)
    with pytest.raises(DatakitError, match="No synsets under whippet.n.01"):
        subtree(wn, "whippet.n.01")


def test_wnids_file_keeps_order_and_drops_duplicates(wn, tmp_path):
    f = tmp_path / "ids.txt"
    f.write_text("# ILSVRC-style list\nn02084071  dog\nsandal.n.01\n\nn02084071\ntrouser.n.01 # comment\n")
    got = from_wnids(wn, path=f)
    assert [s.name() for s in got] == ["dog.n.01", "sandal.n.01", "trouser.n.01"]
    bad = tmp_path / "bad.txt"
    bad.write_text("dog.n.01\nsandle.n.01\nn99999999\n")
    with pytest.raises(DatakitError, match=r"2 unknown synset\(s\)"):
        from_wnids(wn, path=bad)
    with pytest.raises(DatakitError, match="does not exist"):
        from_wnids(wn, path=tmp_path / "nope.txt")


def test_non_overlapping_has_no_ancestor_pairs(wn):
    picked = non_overlapping(wn, ["garment.n.01", "footwear.n.02"], count=12, prefer="hyponyms", seed=0)
    assert len(picked) == 12 and len(set(picked)) == 12
    for s in picked:
        assert not (_ancestors(s) & set(picked)), f"{s.name()} has an ancestor among the picks"
    # the default preference takes big subtrees first: the top pick has more hyponyms than any unpicked sibling leaf
    lemmas = non_overlapping(wn, ["garment.n.01"], count=5, prefer="lemmas")
    assert all(len(s.lemma_names()) >= 1 for s in lemmas)
    with pytest.raises(DatakitError, match=r"Only \d+ non-overlapping synsets exist"):
        non_overlapping(wn, ["whippet.n.01"], count=3, min_depth=0)
    with pytest.raises(ValueError, match="Valid values are"):
        non_overlapping(wn, ["dog.n.01"], count=3, prefer="size")


def test_random_dictionary_is_picturable_and_seeded(wn):
    a = random_dictionary(wn, count=8, seed=3)
    assert a == random_dictionary(wn, count=8, seed=3)
    assert len(set(a)) == 8 and all(s.lexname() in PICTURABLE_LEXNAMES for s in a)
    animals = random_dictionary(wn, count=4, seed=0, lexnames=["noun.animal"], require=["animal.n.01"])
    animal = wn.synset("animal.n.01")
    assert all(s.lexname() == "noun.animal" and animal in _ancestors(s) for s in animals)
    none_with_a = random_dictionary(wn, count=5, seed=0, exclude="a")
    assert all("a" not in s.lemma_names()[0].lower() or "a" not in s.name() for s in none_with_a)
    with pytest.raises(ValueError, match="Unknown lexicographer file"):
        random_dictionary(wn, count=2, lexnames=["noun.animals"])
    with pytest.raises(DatakitError, match="found only"):
        random_dictionary(wn, count=3, lexnames=["noun.Tops"], max_tries=5)


def test_categories_csv_round_trip(wn, tmp_path):
    frame = categories_frame(select_synsets("wnids", wn, ids=["dog.n.01", "n04133789"]))
    assert list(frame.columns) == CATEGORY_COLUMNS
    assert list(frame["label"]) == ["n02084071", "n04133789"]
    path = write_categories(frame, tmp_path / "categories.csv")
    back = read_categories(path, wn)
    pd.testing.assert_frame_equal(back[CATEGORY_COLUMNS], frame, check_dtype=False)
    listing = tmp_path / "list.txt"
    listing.write_text("sandal.n.01\n")
    assert list(read_categories(listing, wn)["name"]) == ["sandal.n.01"]
    with pytest.raises(DatakitError, match="does not exist"):
        read_categories(tmp_path / "missing.csv", wn)


def test_expansion_lemmas_parent_and_dedup(wn):
    exp = expand_synset("whippet.n.01", wn, langs=None)
    assert [(r["query"], r["expansion"]) for r in exp.rows] == [
        ("whippet", "lemma"), ("whippet greyhound", "lemma+parent:greyhound")]
    # "tennis shoe" already ends in the parent's head word "shoe": no "tennis shoe shoe"
    queries = [r["query"] for r in expand_synset("gym_shoe.n.01", wn, langs=None).rows]
    assert queries == ["gym shoe", "sneaker", "tennis shoe", "sneaker shoe"]
    assert all(r["synset"] == "n03472535" for r in expand_synset("gym_shoe.n.01", wn).rows)
    # hyphenated lemmas count too: "T-shirt" already names a shirt
    tee = [r["query"] for r in expand_synset("jersey.n.03", wn, langs=None).rows]
    assert tee == ["jersey", "T-shirt", "tee shirt", "jersey shirt"]


def test_translations_are_skipped_with_a_note_without_omw(wn):
    exp = expand_synset("dog.n.01", wn, langs=["spa"])
    has_omw = getattr(wn, "_omw_reader", None) is not None
    if has_omw:
        assert any(r["expansion"] == "translation:spa" for r in exp.rows)
    else:
        assert exp.notes and "Open Multilingual Wordnet" in exp.notes[0]
        assert all(not r["expansion"].startswith("translation") for r in exp.rows)
    table, notes = expand_categories([wn.synset("dog.n.01"), wn.synset("cat.n.01")], wn, langs=["spa"])
    assert list(table.columns) == QUERY_COLUMNS and len(notes) <= 1


def test_cli_synsets_and_queries(wn, tmp_path):
    runner = CliRunner()
    out = tmp_path / "categories.csv"
    result = runner.invoke(cli, ["synsets", "subtree", "dog.n.01", "--max-depth", "1", "--out", str(out)])
    assert result.exit_code == 0, result.output
    frame = pd.read_csv(out, dtype=str)
    assert list(frame.columns) == CATEGORY_COLUMNS
    assert set(frame["name"]) == {s.name() for s in wn.synset("dog.n.01").hyponyms()}
    result = runner.invoke(cli, ["synsets", "random-dictionary", "--count", "3", "--format", "csv"])
    assert result.exit_code == 0 and result.output.startswith("label,name,wnid")
    result = runner.invoke(cli, ["synsets", "non-overlapping", "garment.n.01", "--count", "3", "--format", "json"])
    assert result.exit_code == 0 and '"wnid"' in result.output
    ids = tmp_path / "ids.txt"
    ids.write_text("whippet.n.01\n")
    result = runner.invoke(cli, ["synsets", "wnids", str(ids)])
    assert result.exit_code == 0 and "n02091134" in result.output
    result = runner.invoke(cli, ["queries", str(ids), "--no-translations", "--format", "csv"])
    assert result.exit_code == 0
    assert "n02091134,whippet.n.01,whippet greyhound,lemma+parent:greyhound" in result.output


def test_cli_unknown_synset_is_a_clean_error(wn):
    result = CliRunner().invoke(cli, ["synsets", "subtree", "sandle.n.01"])
    assert result.exit_code == 1
    assert "Did you mean" in result.output and "sandal (sandal.n.01)" in result.output
    assert "Traceback" not in result.output
