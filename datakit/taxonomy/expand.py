"""Query expansion: the search queries ImageNet made from one synset.

For each synset: every lemma (underscores to spaces); each lemma with the
parent synset's head word appended ("whippet dog"); translations of the
lemmas from an Open Multilingual Wordnet when nltk has one installed. Queries
are deduplicated (case-insensitively) and each keeps the expansion that first
produced it.
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from typing import Iterable, Sequence

import pandas as pd

from datakit.taxonomy.wordnet import get_wordnet, resolve_synset, wnid

__all__ = ["QUERY_COLUMNS", "DEFAULT_LANGS", "Expansion", "expand_synset", "expand_categories"]

logger = logging.getLogger(__name__)

#: Columns of the query table.
QUERY_COLUMNS = ["synset", "name", "query", "expansion"]

#: Languages ImageNet translated its queries into (OMW codes: Chinese, Spanish, Dutch, Italian).
DEFAULT_LANGS: tuple[str, ...] = ("cmn", "spa", "nld", "ita")


@dataclass
class Expansion:
    """The queries of one synset and notes about what was skipped.

    Attributes
    ----------
    rows : list of dict
        ``{"synset", "name", "query", "expansion"}``; ``expansion`` is ``lemma``,
        ``lemma+parent:<head word>`` or ``translation:<lang>``.
    notes : list of str
    """

    rows: list[dict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _head_word(synset) -> str:
    return synset.lemma_names()[0].replace("_", " ").split()[-1]


def expand_synset(synset, wn=None, parent: bool = True, langs: Sequence[str] | None = DEFAULT_LANGS) -> Expansion:
    """Expand one synset (name, wnid or nltk synset) into search queries.

    Parameters
    ----------
    parent : bool
        Also add each lemma followed by the head word of each direct hypernym.
    langs : sequence of str, optional
        OMW language codes to translate into; ``None`` or empty for none.
        Skipped with a note when no OMW is installed.

    Examples
    --------
    >>> [r["query"] for r in expand_synset("whippet.n.01").rows][:2]   # doctest: +SKIP
    ['whippet', 'whippet greyhound']
    """
    wn = wn if wn is not None else get_wordnet()
    s = resolve_synset(synset, wn) if isinstance(synset, str) else synset
    ident, name = wnid(s), s.name()
    out = Expansion()
    seen: set[str] = set()

    def add(query: str, expansion: str) -> None:
        key = " ".join(query.lower().split())
        if key and key not in seen:
            seen.add(key)
            out.rows.append({"synset": ident, "name": name, "query": " ".join(query.split()), "expansion": expansion})

    lemmas = [l.replace("_", " ") for l in s.lemma_names()]
    for lemma in lemmas:
        add(lemma, "lemma")
    if parent:
        for hyper in s.hypernyms() + s.instance_hypernyms():
            head = _head_word(hyper)
            for lemma in lemmas:
                if head.lower() not in re.split(r"[\s\-]+", lemma.lower()):
                    add(f"{lemma} {head}", f"lemma+parent:{head}")
    if langs:
        available = set(wn.langs()) if getattr(wn, "_omw_reader", None) is not None else set()
        if not available - {"eng"}:
            out.notes.append("translations skipped: no Open Multilingual Wordnet installed "
                             "(install it with `python -m nltk.downloader omw-1.4`)")
        else:
            for lang in langs:
                if lang not in available:
                    out.notes.append(f"translations to {lang!r} skipped: not in the installed OMW")
                    continue
                for lemma in s.lemma_names(lang=lang):
                    add(lemma.replace("_", " "), f"translation:{lang}")
    return out


def expand_categories(synsets: Iterable, wn=None, parent: bool = True,
                      langs: Sequence[str] | None = DEFAULT_LANGS) -> tuple[pd.DataFrame, list[str]]:
    """Expand many synsets; return the query table (:data:`QUERY_COLUMNS`) and the notes (deduplicated)."""
    wn = wn if wn is not None else get_wordnet()
    rows, notes = [], []
    for s in synsets:
        exp = expand_synset(s, wn, parent=parent, langs=langs)
        rows.extend(exp.rows)
        notes.extend(n for n in exp.notes if n not in notes)
    return pd.DataFrame(rows, columns=QUERY_COLUMNS), notes
