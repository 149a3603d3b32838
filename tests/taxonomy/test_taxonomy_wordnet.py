"""WordNet provisioning (offline, from /usr/share/wordnet) and synset lookup."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from datakit.cli import cli
from datakit.errors import DatakitError
from datakit.store.dataset import CATEGORY_COLUMNS
from datakit.taxonomy import wordnet as wnmod
from datakit.taxonomy.wordnet import (
    LEXNAMES,
    UnknownSynsetError,
    cache_dir,
    provision,
    resolve_synset,
    synset_record,
    wnid,
    wordnet_status,
)

SYSTEM = Path("/usr/share/wordnet")


@pytest.fixture
def system_wordnet():
    if not all((SYSTEM / f).exists() for f in wnmod.WORDNET_FILES):
        pytest.skip(f"WordNet 3.0 files not found in {SYSTEM} (apt-get install wordnet-base wordnet-sense-index)")
    return SYSTEM


def test_lexnames_table_matches_man_page():
    assert len(LEXNAMES) == 45
    assert [n for n, _, _ in LEXNAMES] == list(range(45))
    assert LEXNAMES[0] == (0, "adj.all", 3)
    assert LEXNAMES[1] == (1, "adj.pert", 3)
    assert LEXNAMES[2] == (2, "adv.all", 4)
    assert LEXNAMES[3] == (3, "noun.Tops", 1)
    assert LEXNAMES[5] == (5, "noun.animal", 1)
    assert LEXNAMES[28] == (28, "noun.time", 1)
    assert LEXNAMES[29] == (29, "verb.body", 2)
    assert LEXNAMES[43] == (43, "verb.weather", 2)
    assert LEXNAMES[44] == (44, "adj.ppl", 3)
    # the syntactic category agrees with the file-name prefix
    cat = {"noun": 1, "verb": 2, "adj": 3, "adv": 4}
    assert all(c == cat[name.split(".")[0]] for _, name, c in LEXNAMES)


def test_provision_copies_system_files_and_adds_lexnames(tmp_path, system_wordnet):
    before = wordnet_status(tmp_path, use_nltk_data=False)
    assert before.mode == "system-copy" and before.path is None and "not provisioned yet" in before.message
    st = provision(tmp_path, use_nltk_data=False, allow_download=False)
    corpus = tmp_path / "nltk_data" / "corpora" / "wordnet"
    assert st.mode == "system-copy" and Path(st.path) == corpus and st.origin == str(system_wordnet)
    for name in wnmod.WORDNET_FILES:
        assert not (corpus / name).is_symlink()
        assert (corpus / name).stat().st_size == (system_wordnet / name).stat().st_size
    lines = (corpus / "lexnames").read_text().splitlines()
    assert len(lines) == 45
    assert lines[0] == "00\tadj.all\t3" and lines[3] == "03\tnoun.Tops\t1" and lines[44] == "44\tadj.ppl\t3"
    # idempotent: a second call reuses the copy
    mtime = (corpus / "data.noun").stat().st_mtime
    assert provision(tmp_path, use_nltk_data=False, allow_download=False).path == st.path
    assert (corpus / "data.noun").stat().st_mtime == mtime


def test_provisioned_copy_is_readable_by_nltk(tmp_path, system_wordnet):
    reader = wnmod.get_wordnet(tmp_path, use_nltk_data=False, allow_download=False)
    dog = reader.synset("dog.n.01")
    assert dog.lexname() == "noun.animal"
    assert wnid(dog) == "n02084071"


def test_missing_wordnet_names_the_three_fixes(tmp_path):
    with pytest.raises(DatakitError, match=r"nltk\.downloader wordnet.*wordnet-base wordnet-sense-index.*nltk\.download"):
        provision(tmp_path, use_nltk_data=False, allow_download=False, system_dirs=[str(tmp_path / "none")])
    st = wordnet_status(tmp_path, use_nltk_data=False, system_dirs=[str(tmp_path / "none")])
    assert st.mode == "missing" and st.path is None


def test_cache_dir_honours_env(monkeypatch, tmp_path):
    monkeypatch.setenv("DATAKIT_CACHE", str(tmp_path / "dk"))
    assert cache_dir() == tmp_path / "dk"
    monkeypatch.delenv("DATAKIT_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "datakit"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert cache_dir() == Path.home() / ".cache" / "datakit"


def test_resolve_names_and_wnids(wn):
    dog = resolve_synset("dog.n.01", wn)
    assert resolve_synset("n02084071", wn) == dog
    assert resolve_synset("02084071-n", wn) == dog
    assert resolve_synset("whippet", wn).name() == "whippet.n.01"   # unambiguous noun


def test_unknown_names_suggest_close_matches(wn):
    with pytest.raises(UnknownSynsetError, match=r"Unknown synset 'sandle'.*sandal \(sandal\.n\.01\)"):
        resolve_synset("sandle", wn)
    with pytest.raises(UnknownSynsetError, match=r"'dog' has these senses: dog\.n\.01"):
        resolve_synset("dog.n.42", wn)
    with pytest.raises(UnknownSynsetError, match="ambiguous; name one sense: dog.n.01"):
        resolve_synset("dog", wn)
    with pytest.raises(UnknownSynsetError, match="Unknown WordNet id 'n99999999'"):
        resolve_synset("n99999999", wn)


def test_synset_record_is_a_categories_row(wn):
    rec = synset_record(resolve_synset("dog.n.01", wn))
    assert list(rec) == CATEGORY_COLUMNS
    assert rec["label"] == rec["wnid"] == "n02084071"
    assert rec["lemmas"] == "dog|domestic_dog|Canis_familiaris"
    assert rec["lexname"] == "noun.animal"
    path = rec["hypernym_path"].split(" > ")
    assert path[0] == "entity.n.01" and path[-1] == "dog.n.01"
    assert rec["depth"] == resolve_synset("dog.n.01", wn).min_depth() == 8


def test_cli_wordnet_status_and_path(wn):
    runner = CliRunner()
    result = runner.invoke(cli, ["wordnet", "status"])
    assert result.exit_code == 0, result.output
    assert "mode:" in result.output and ("system-copy" in result.output or "nltk" in result.output)
    if "system-copy" in result.output:   # the session's copy, in the session's cache
        assert os.environ["DATAKIT_CACHE"] in result.output
    result = runner.invoke(cli, ["wordnet", "path"])
    assert result.exit_code == 0
    assert os.path.isdir(result.output.strip())
    result = runner.invoke(cli, ["wordnet", "status", "--format", "json"])
    assert result.exit_code == 0 and '"mode"' in result.output


def test_download_route_is_used_when_no_system_files(tmp_path, system_wordnet, monkeypatch):
    """nltk.download is replaced by a fake that lays out the corpus the way nltk does (no network)."""
    import shutil

    import nltk

    calls = []

    def fake_download(name, download_dir=None, quiet=False, raise_on_error=False):
        calls.append((name, download_dir))
        corpus = Path(download_dir) / "corpora" / "wordnet"
        corpus.mkdir(parents=True)
        for f in wnmod.WORDNET_FILES:
            shutil.copyfile(system_wordnet / f, corpus / f)
        (corpus / "lexnames").write_text(wnmod._lexnames_text())
        return True

    monkeypatch.setattr(nltk, "download", fake_download)
    st = provision(tmp_path, use_nltk_data=False, allow_download=True, system_dirs=[str(tmp_path / "none")])
    assert calls == [("wordnet", str(tmp_path / "nltk_data"))]
    assert st.mode == "download" and st.origin == "nltk.download"
    assert wordnet_status(tmp_path, use_nltk_data=False, system_dirs=[]).mode == "download"


def test_offline_download_failure_gives_the_clear_error(tmp_path, monkeypatch):
    import nltk

    monkeypatch.setattr(nltk, "download", lambda *a, **k: False)
    with pytest.raises(DatakitError, match="WordNet 3.0 was not found. Do one of"):
        provision(tmp_path, use_nltk_data=False, allow_download=True, system_dirs=[str(tmp_path / "none")])
