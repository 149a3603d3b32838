"""WordNet access with offline provisioning, and synset lookup by name or wnid.

nltk reads WordNet 3.0 as its ``wordnet`` corpus. :func:`provision` finds or
assembles one, in this order:

1. ``nltk`` — nltk already finds ``corpora/wordnet`` on its data path;
2. ``system-copy`` — the WordNet 3.0 files of Debian's ``wordnet-base`` and
   ``wordnet-sense-index`` packages (``/usr/share/wordnet``) are *copied* (nltk
   refuses symlinks that escape its root) into
   ``<cache>/nltk_data/corpora/wordnet/`` with the ``lexnames`` file those
   packages lack written next to them;
3. ``download`` — ``nltk.download("wordnet")`` into the same cache, when allowed
   and online;
4. otherwise a :class:`~datakit.errors.DatakitError` that names the three fixes.

The cache is ``$DATAKIT_CACHE``, else ``$XDG_CACHE_HOME/datakit``, else
``~/.cache/datakit``.
"""
from __future__ import annotations

import difflib
import json
import logging
import os
import re
import shutil
import threading
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from datakit.errors import DatakitError

__all__ = [
    "LEXNAMES",
    "WORDNET_FILES",
    "SYSTEM_WORDNET_DIRS",
    "WordNetStatus",
    "cache_dir",
    "wordnet_status",
    "provision",
    "get_wordnet",
    "resolve_synset",
    "wnid",
    "synset_record",
    "UnknownSynsetError",
]

logger = logging.getLogger(__name__)

#: The 45 lexicographer files of WordNet 3.0 (``man 5 lexnames``): number, name,
#: syntactic category (1 noun, 2 verb, 3 adjective, 4 adverb).
LEXNAMES: tuple[tuple[int, str, int], ...] = (
    (0, "adj.all", 3), (1, "adj.pert", 3), (2, "adv.all", 4), (3, "noun.Tops", 1),
    (4, "noun.act", 1), (5, "noun.animal", 1), (6, "noun.artifact", 1), (7, "noun.attribute", 1),
    (8, "noun.body", 1), (9, "noun.cognition", 1), (10, "noun.communication", 1), (11, "noun.event", 1),
    (12, "noun.feeling", 1), (13, "noun.food", 1), (14, "noun.group", 1), (15, "noun.location", 1),
    (16, "noun.motive", 1), (17, "noun.object", 1), (18, "noun.person", 1), (19, "noun.phenomenon", 1),
    (20, "noun.plant", 1), (21, "noun.possession", 1), (22, "noun.process", 1), (23, "noun.quantity", 1),
    (24, "noun.relation", 1), (25, "noun.shape", 1), (26, "noun.state", 1), (27, "noun.substance", 1),
    (28, "noun.time", 1), (29, "verb.body", 2), (30, "verb.change", 2), (31, "verb.cognition", 2),
    (32, "verb.communication", 2), (33, "verb.competition", 2), (34, "verb.consumption", 2),
    (35, "verb.contact", 2), (36, "verb.creation", 2), (37, "verb.emotion", 2), (38, "verb.motion", 2),
    (39, "verb.perception", 2), (40, "verb.possession", 2), (41, "verb.social", 2), (42, "verb.stative", 2),
    (43, "verb.weather", 2), (44, "adj.ppl", 3),
)

#: Files nltk's WordNetCorpusReader opens (``lexnames`` is written by us).
WORDNET_FILES: tuple[str, ...] = (
    "cntlist.rev", "index.sense", "index.adj", "index.adv", "index.noun", "index.verb",
    "data.adj", "data.adv", "data.noun", "data.verb", "adj.exc", "adv.exc", "noun.exc", "verb.exc",
)

#: Where Debian (and a WordNet 3.0 source install) put the database files.
SYSTEM_WORDNET_DIRS: tuple[str, ...] = ("/usr/share/wordnet", "/usr/local/WordNet-3.0/dict", "/usr/share/wordnet/dict")

_PROVENANCE = "datakit-provenance.json"
_LOCK = threading.Lock()
_READERS: dict[str, Any] = {}


class UnknownSynsetError(DatakitError, ValueError):
    """A synset name or wnid that WordNet does not have; the message suggests close matches."""


@dataclass
class WordNetStatus:
    """Which WordNet datakit uses.

    Attributes
    ----------
    mode : {"nltk", "system-copy", "download", "missing"}
    path : str or None
        The corpus directory nltk reads (``.../corpora/wordnet``).
    origin : str or None
        Where the files came from (the system directory, ``nltk.download``, or nltk's own data).
    omw : bool
        Whether an Open Multilingual Wordnet (``omw-1.4``) is installed for translations.
    message : str
    """

    mode: str
    path: str | None
    origin: str | None
    omw: bool
    message: str

    def as_dict(self) -> dict:
        return asdict(self)


def cache_dir() -> Path:
    """datakit's cache directory (``$DATAKIT_CACHE``, ``$XDG_CACHE_HOME/datakit`` or ``~/.cache/datakit``)."""
    if os.environ.get("DATAKIT_CACHE"):
        return Path(os.environ["DATAKIT_CACHE"]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "datakit"


def _nltk_data_dir(cache: Path | None) -> Path:
    return (cache if cache is not None else cache_dir()) / "nltk_data"


def _lexnames_text() -> str:
    return "".join(f"{num:02d}\t{name}\t{cat}\n" for num, name, cat in LEXNAMES)


def _find_in_nltk(exclude: Path | None = None) -> Path | None:
    """The wordnet corpus nltk finds on its own data path (not in ``exclude``)."""
    import nltk

    for base in list(nltk.data.path):
        base_path = Path(base)
        if exclude is not None and base_path.resolve() == exclude.resolve():
            continue
        for candidate in (base_path / "corpora" / "wordnet", base_path / "corpora" / "wordnet.zip"):
            if candidate.is_dir() and (candidate / _PROVENANCE).exists():
                continue  # a copy datakit made (possibly for another cache): not "nltk's own"
            if candidate.is_dir() and (candidate / "data.noun").exists() and (candidate / "lexnames").exists():
                return candidate
            if candidate.is_file():
                return candidate
    return None


def _valid_copy(corpus: Path) -> bool:
    return corpus.is_dir() and all((corpus / name).exists() for name in (*WORDNET_FILES, "lexnames"))


def _system_dir(system_dirs) -> Path | None:
    for d in system_dirs:
        p = Path(d)
        if p.is_dir() and all((p / name).exists() for name in WORDNET_FILES):
            return p
    return None


def _omw_installed() -> bool:
    import nltk

    for name in ("corpora/omw-1.4", "corpora/omw-1.4.zip", "corpora/omw", "corpora/omw.zip"):
        try:
            nltk.data.find(name)
            return True
        except LookupError:
            continue
    return False


def wordnet_status(cache: str | os.PathLike | None = None, use_nltk_data: bool = True,
                   system_dirs=SYSTEM_WORDNET_DIRS) -> WordNetStatus:
    """Report which WordNet :func:`provision` would use, without changing anything."""
    data_dir = _nltk_data_dir(Path(cache) if cache is not None else None)
    corpus = data_dir / "corpora" / "wordnet"
    omw = _omw_installed()
    found = _find_in_nltk(exclude=data_dir) if use_nltk_data else None
    if found is not None:
        return WordNetStatus("nltk", str(found), "nltk data path", omw, f"nltk's own WordNet at {found}")
    if _valid_copy(corpus):
        origin = "unknown"
        prov = corpus / _PROVENANCE
        if prov.exists():
            origin = json.loads(prov.read_text()).get("origin", origin)
        mode = "download" if origin == "nltk.download" else "system-copy"
        return WordNetStatus(mode, str(corpus), origin, omw, f"datakit's copy at {corpus} (from {origin})")
    system = _system_dir(system_dirs)
    if system is not None:
        return WordNetStatus("system-copy", None, str(system), omw,
                             f"not provisioned yet; first use copies {system} into {corpus}")
    return WordNetStatus("missing", None, None, omw, _missing_message(corpus))


def _missing_message(corpus: Path) -> str:
    return (
        "WordNet 3.0 was not found. Do one of: (1) install it for nltk: "
        "`python -m nltk.downloader wordnet`; (2) install Debian's WordNet files: "
        "`apt-get install wordnet-base wordnet-sense-index` (datakit copies /usr/share/wordnet into "
        f"{corpus.parent.parent.parent} on first use); (3) run once with network access so datakit can call "
        "nltk.download('wordnet'). Set DATAKIT_CACHE to choose the cache directory."
    )


def _copy_system(system: Path, corpus: Path) -> None:
    tmp = corpus.with_name(f".{corpus.name}.partial")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    for name in WORDNET_FILES:
        shutil.copyfile(system / name, tmp / name)  # a copy: nltk refuses paths that escape its root
    (tmp / "lexnames").write_text(_lexnames_text())
    (tmp / _PROVENANCE).write_text(json.dumps({"origin": str(system)}) + "\n")
    if corpus.exists():
        shutil.rmtree(corpus)
    os.replace(tmp, corpus)


def provision(cache: str | os.PathLike | None = None, use_nltk_data: bool = True,
              allow_download: bool | None = None, system_dirs=SYSTEM_WORDNET_DIRS) -> WordNetStatus:
    """Make a WordNet nltk can read available; return which one.

    Parameters
    ----------
    cache : path, optional
        datakit's cache directory (default :func:`cache_dir`).
    use_nltk_data : bool
        Use a WordNet nltk already finds on its data path (route 1).
    allow_download : bool, optional
        Allow ``nltk.download("wordnet")`` (route 3). Default: allowed unless
        ``DATAKIT_OFFLINE`` is set.
    system_dirs : sequence of path
        Where to look for the system WordNet 3.0 files (route 2).

    Raises
    ------
    DatakitError
        When none of the routes works; the message names the three fixes.
    """
    if allow_download is None:
        allow_download = not os.environ.get("DATAKIT_OFFLINE")
    data_dir = _nltk_data_dir(Path(cache) if cache is not None else None)
    corpus = data_dir / "corpora" / "wordnet"
    with _LOCK:
        status = wordnet_status(cache, use_nltk_data, system_dirs)
        if status.path is not None:
            return status
        system = _system_dir(system_dirs)
        if system is not None:
            logger.info("copying WordNet 3.0 from %s into %s", system, corpus)
            _copy_system(system, corpus)
            return wordnet_status(cache, use_nltk_data, system_dirs)
        if allow_download:
            import nltk

            logger.info("downloading WordNet with nltk into %s", data_dir)
            ok = False
            try:
                ok = bool(nltk.download("wordnet", download_dir=str(data_dir), quiet=True, raise_on_error=False))
            except (OSError, ValueError) as exc:  # offline: fall through to the clear error
                logger.info("nltk.download failed: %s", exc)
            zipped = data_dir / "corpora" / "wordnet.zip"
            if ok and zipped.exists() and not corpus.exists():
                import zipfile

                with zipfile.ZipFile(zipped) as zf:
                    zf.extractall(data_dir / "corpora")
            if ok and _valid_copy(corpus):
                (corpus / _PROVENANCE).write_text(json.dumps({"origin": "nltk.download"}) + "\n")
                return wordnet_status(cache, use_nltk_data, system_dirs)
        raise DatakitError(_missing_message(corpus))


def get_wordnet(cache: str | os.PathLike | None = None, use_nltk_data: bool = True,
                allow_download: bool | None = None):
    """An nltk ``WordNetCorpusReader`` (provisioned on first use, then cached in memory)."""
    status = provision(cache, use_nltk_data, allow_download)
    with _LOCK:
        reader = _READERS.get(status.path)
        if reader is not None:
            return reader
        from nltk.corpus.reader import CorpusReader
        from nltk.corpus.reader.wordnet import WordNetCorpusReader
        from nltk.corpus.util import LazyCorpusLoader

        omw = LazyCorpusLoader("omw-1.4", CorpusReader, r".*/wn-data-.*\.tab", encoding="utf8") if status.omw else None
        root = Path(status.path)
        import nltk

        data_root = str(root.parent.parent)  # nltk only reads corpora under its data path
        if data_root not in nltk.data.path:
            nltk.data.path.append(data_root)
        if root.suffix == ".zip":
            root = nltk.data.find("corpora/wordnet.zip/wordnet/")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "multilingual functions are not available" when no OMW
            reader = WordNetCorpusReader(root if not isinstance(root, Path) else str(root), omw)
        _READERS[status.path] = reader
        return reader


_WNID = re.compile(r"^([nvasr])(\d{8})$")
_OFFSET_POS = re.compile(r"^(\d{8})-([nvasr])$")
_NAME = re.compile(r"^(.+)\.([nvasr])\.(\d+)$")


def wnid(synset) -> str:
    """The WordNet id of a synset in ImageNet form, e.g. ``n02084071``.

    Examples
    --------
    >>> wnid(get_wordnet().synset("dog.n.01"))   # doctest: +SKIP
    'n02084071'
    """
    return f"{synset.pos().replace('s', 'a')}{synset.offset():08d}"


def resolve_synset(spec: str, wn=None):
    """A synset from a name (``dog.n.01``), a wnid (``n02084071``), ``02084071-n`` or an unambiguous noun.

    Raises
    ------
    UnknownSynsetError
        The synset does not exist; the message suggests close matches.
    """
    from nltk.corpus.reader.wordnet import WordNetError

    wn = wn if wn is not None else get_wordnet()
    text = str(spec).strip()
    m = _WNID.match(text) or _OFFSET_POS.match(text)
    if m:
        pos, offset = (m.group(1), m.group(2)) if _WNID.match(text) else (m.group(2), m.group(1))
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # nltk warns and returns None for a missing offset
                found = wn.synset_from_pos_and_offset(pos, int(offset))
        except (WordNetError, ValueError, AttributeError):
            found = None
        if found is None:
            raise UnknownSynsetError(f"Unknown WordNet id {text!r}: WordNet 3.0 has no {pos} synset at offset "
                                     f"{offset} (ids look like n02084071).")
        return found
    m = _NAME.match(text)
    if m:
        try:
            return wn.synset(text)
        except (WordNetError, ValueError):
            lemma, pos = m.group(1), m.group(2)
            senses = wn.synsets(lemma, pos=pos)
            if senses:
                listing = ", ".join(s.name() for s in senses[:8])
                raise UnknownSynsetError(f"Unknown synset {text!r}. {lemma!r} has these senses: {listing}.") from None
            raise UnknownSynsetError(f"Unknown synset {text!r}.{_suggest(lemma, pos, wn)}") from None
    lemma = text.replace(" ", "_").lower()
    senses = wn.synsets(lemma, pos="n")
    if len(senses) == 1:
        return senses[0]
    if senses:
        listing = "; ".join(f"{s.name()} ({s.definition()[:50]})" for s in senses[:8])
        raise UnknownSynsetError(f"{text!r} is ambiguous; name one sense: {listing}.")
    raise UnknownSynsetError(f"Unknown synset {text!r} (give a name like dog.n.01 or a wnid like n02084071).{_suggest(lemma, 'n', wn)}")


def _suggest(lemma: str, pos: str, wn) -> str:
    lemma = lemma.lower()
    names = [n for n in wn.all_lemma_names(pos=pos) if abs(len(n) - len(lemma)) <= 2]
    close = difflib.get_close_matches(lemma, names, n=4, cutoff=0.6)
    if not close:
        return ""
    options = [f"{c} ({wn.synsets(c, pos=pos)[0].name()})" for c in close if wn.synsets(c, pos=pos)]
    return f" Did you mean {', '.join(options)}?"


def synset_record(synset) -> dict:
    """One ``categories.csv`` row (:data:`datakit.store.dataset.CATEGORY_COLUMNS`) for a synset.

    ``hypernym_path`` is the first path from the root, names joined by ``" > "``;
    ``depth`` is the synset's minimum depth (``entity.n.01`` is 0);
    ``lemmas`` are joined by ``"|"``.
    """
    paths = synset.hypernym_paths()
    path = paths[0] if paths else [synset]
    ident = wnid(synset)
    return {
        "label": ident,
        "name": synset.name(),
        "wnid": ident,
        "lemmas": "|".join(synset.lemma_names()),
        "gloss": synset.definition(),
        "hypernym_path": " > ".join(s.name() for s in path),
        "depth": synset.min_depth(),
        "lexname": synset.lexname(),
    }
