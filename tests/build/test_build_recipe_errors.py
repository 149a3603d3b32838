"""Malformed recipes fail before any work, naming the key and the valid choices."""
from __future__ import annotations

import textwrap

import pytest
from click.testing import CliRunner

from datakit.cli import cli
from datakit.errors import RecipeError
from datakit.recipe import load_recipe, parse_recipe

GOOD = """
name = "tiny"
[[sources]]
name = "digits"
kind = "sklearn-digits"
[normalize]
style = "mnist"
[splits]
strategy = "fractions"
train = 0.8
val = 0.1
test = 0.1
"""

CASES = [
    # (recipe text, pattern the RecipeError message must match)
    ('name = "x"\n[[sources]\nkind = "idx"\n', r"Bad TOML.*line 2"),
    ('colour = "blue"\n' + GOOD, r"Unknown key 'colour'.*Valid keys are \{name, description, seed"),
    (GOOD.replace('kind = "sklearn-digits"', 'kind = "mnistt"'),
     r"sources\[0\]\.kind: Unknown source 'mnistt'.*Valid values are \{.*idx.*sklearn-digits.*usps"),
    (GOOD.replace('style = "mnist"', 'style = "lecun"'),
     r"normalize.style: Unknown normalizer 'lecun'.*Valid values are \{.*mnist"),
    (GOOD.replace('kind = "sklearn-digits"', 'kind = "sklearn-digits"\nshuffle = true'),
     r"Unknown key sources\[0\] \(digits\)\.shuffle.*Valid keys are \{"),
    (GOOD.replace('strategy = "fractions"', 'strategy = "random"'),
     r"splits.strategy: unknown value 'random'.*Valid values are \{fractions, per-class, source\}"),
    (GOOD.replace("test = 0.1", "test = 0.3"), r"must sum to 1"),
    (GOOD.replace('strategy = "fractions"', 'strategy = "per-class"'), r"Missing key splits.per_class"),
    (GOOD.replace('name = "tiny"', ""), r"Missing key 'name'"),
    ('name = "x"\n', r"Missing key 'sources'.*valid kinds are \{.*sklearn-digits"),
    (GOOD + '[categories]\n"0" = 3\n', r"categories.0 must be a readable name"),
    (GOOD.replace('[splits]', '[splits]\nnear_duplicate_distance = 99'), r"between 0 and 32"),
]


@pytest.mark.parametrize("text,pattern", CASES)
def test_malformed_recipe_raises_recipe_error(text, pattern):
    with pytest.raises(RecipeError, match=pattern):
        parse_recipe(text)


def test_good_recipe_parses_and_hash_ignores_comments():
    a = parse_recipe(GOOD)
    b = parse_recipe("# a comment\n" + GOOD)
    assert a.sources[0].kind == "sklearn-digits" and a.normalize.style == "mnist"
    assert (a.splits.train, a.splits.val, a.splits.test) == (0.8, 0.1, 0.1)
    assert a.sha256 == b.sha256
    assert a.sha256 != parse_recipe(GOOD.replace("0.8", "0.7").replace("val = 0.1", "val = 0.2")).sha256


def test_dict_recipe_equals_toml_recipe():
    import tomllib

    assert parse_recipe(tomllib.loads(GOOD)).sha256 == parse_recipe(GOOD).sha256


def test_missing_recipe_file(tmp_path):
    with pytest.raises(RecipeError, match="does not exist"):
        load_recipe(tmp_path / "nope.toml")


def test_missing_source_path_fails_before_any_work(tmp_path):
    from datakit.build import build_dataset

    recipe = tmp_path / "r.toml"
    recipe.write_text(textwrap.dedent("""
        name = "m"
        [[sources]]
        name = "mnist"
        kind = "idx"
        images = "no/such/file-idx3-ubyte.gz"
        [normalize]
        style = "mnist"
    """))
    out = tmp_path / "out"
    with pytest.raises(RecipeError, match=r"sources\[0\] \(mnist\).*images.*no such file"):
        build_dataset(recipe, out, data_root=tmp_path, workers=0)
    assert not out.exists()  # nothing was written


def test_missing_data_root(tmp_path):
    from datakit.build import build_dataset

    recipe = tmp_path / "r.toml"
    recipe.write_text(GOOD)
    with pytest.raises(RecipeError, match="data_root .* does not exist.*--data-root"):
        build_dataset(recipe, tmp_path / "out", data_root=tmp_path / "absent", workers=0)


@pytest.mark.parametrize("text,pattern", [CASES[0], CASES[1], CASES[2], CASES[3]])
def test_cli_shows_clean_message(tmp_path, text, pattern):
    import re

    recipe = tmp_path / "bad.toml"
    recipe.write_text(text)
    result = CliRunner().invoke(cli, ["build", str(recipe), "--out", str(tmp_path / "out"), "--quiet"])
    assert result.exit_code == 1
    assert "Traceback" not in result.output
    assert result.output.startswith("Error: ")
    assert re.search(pattern, result.output, flags=re.S)
    assert not (tmp_path / "out").exists()


def test_labels_table_is_a_label_map_but_a_labels_path_is_a_source_option():
    r = parse_recipe(GOOD.replace('kind = "sklearn-digits"', 'kind = "sklearn-digits"\nlabels = { "0" = "zero" }'))
    assert r.sources[0].label_map == {"0": "zero"} and "labels" not in r.sources[0].options
    r = parse_recipe('name = "m"\n[[sources]]\nkind = "idx"\nimages = "a.gz"\nlabels = "b.gz"\n')
    assert r.sources[0].label_map is None and r.sources[0].options == {"images": "a.gz", "labels": "b.gz"}
