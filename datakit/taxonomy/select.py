"""Ways to choose categories from WordNet (a registry of strategies).

``subtree``
    The hyponym closure of a root synset (ImageNet's "all dogs"), optionally
    leaves only and within a depth range below the root.
``wnids``
    An explicit list of WordNet ids or synset names, one a line (how ILSVRC's
    1,000 classes are given), or a ``categories.csv``.
``non-overlapping``
    N synsets under one or more roots such that none is an ancestor of another
    (the ILSVRC constraint), picked greedily by a preference.
``random-dictionary``
    Caltech101's method: nouns sampled at random from the lexicon, kept when
    they denote picturable things (lexicographer files such as
    ``noun.animal``, ``noun.artifact``) and pass a configurable filter.

Every strategy returns a list of nltk synsets; :func:`categories_frame` turns
them into the ``categories.csv`` table.
"""
from __future__ import annotations

import logging
import os
import random
import re
from pathlib import Path
from typing import Callable, Iterable, Sequence

import pandas as pd

from datakit.errors import DatakitError
from datakit.registry import Registry
from datakit.taxonomy.wordnet import get_wordnet, resolve_synset, synset_record, wnid

__all__ = [
    "STRATEGIES",
    "PICTURABLE_LEXNAMES",
    "PREFERENCES",
    "subtree",
    "from_wnids",
    "non_overlapping",
    "random_dictionary",
    "select_synsets",
    "categories_frame",
    "write_categories",
    "read_categories",
]

logger = logging.getLogger(__name__)

#: strategy name -> function(wn, **options) -> list of synsets
STRATEGIES: Registry[Callable] = Registry("synset strategy")

#: Lexicographer files whose nouns usually denote things one can photograph.
PICTURABLE_LEXNAMES: tuple[str, ...] = ("noun.animal", "noun.artifact", "noun.food", "noun.plant", "noun.object")

#: How ``non-overlapping`` ranks candidate synsets.
PREFERENCES: tuple[str, ...] = ("hyponyms", "lemmas", "random")


def _hyponyms(s) -> list:
    return s.hyponyms()


def _descendants_with_depth(root) -> dict:
    """Every hyponym of ``root`` (transitively) -> its shortest distance below ``root``."""
    depth = {root: 0}
    frontier = [root]
    while frontier:
        nxt = []
        for s in frontier:
            for h in _hyponyms(s):
                if h not in depth:
                    depth[h] = depth[s] + 1
                    nxt.append(h)
        frontier = nxt
    return depth


def _sample(synsets: list, count: int | None, seed: int) -> list:
    if count is None or count >= len(synsets):
        return synsets
    if count < 0:
        raise ValueError(f"count must be >= 0, got {count}")
    rng = random.Random(seed)
    picked = rng.sample(range(len(synsets)), count)
    return [synsets[i] for i in sorted(picked)]


@STRATEGIES.register("subtree")
def subtree(wn, root: str, leaves_only: bool = False, min_depth: int = 1, max_depth: int | None = None,
            count: int | None = None, seed: int = 0) -> list:
    """The hyponym closure of ``root``.

    Parameters
    ----------
    root : str
        Synset name (``dog.n.01``) or wnid (``n02084071``).
    leaves_only : bool
        Keep only synsets without hyponyms.
    min_depth, max_depth : int
        Depth range below the root (the root itself is depth 0; default: every hyponym).
    count : int, optional
        Sample this many (seeded) from the closure.
    """
    if min_depth < 0 or (max_depth is not None and max_depth < min_depth):
        raise ValueError(f"need 0 <= min_depth <= max_depth, got min_depth={min_depth}, max_depth={max_depth}")
    top = resolve_synset(root, wn)
    depth = _descendants_with_depth(top)
    out = [s for s, d in depth.items() if d >= min_depth and (max_depth is None or d <= max_depth)
           and (not leaves_only or not _hyponyms(s))]
    out.sort(key=wnid)
    if not out:
        raise DatakitError(f"No synsets under {top.name()} match (leaves_only={leaves_only}, "
                           f"min_depth={min_depth}, max_depth={max_depth}).")
    return _sample(out, count, seed)


def _read_id_list(path: Path) -> list[str]:
    if path.suffix.lower() == ".csv":
        frame = pd.read_csv(path, dtype=str)
        for col in ("wnid", "label", "name"):
            if col in frame.columns:
                return [v for v in frame[col].dropna().astype(str)]
        raise DatakitError(f"{path} has none of the columns wnid, label, name (columns: {list(frame.columns)}).")
    out = []
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            out.append(re.split(r"[\s,]+", line)[0])
    return out


@STRATEGIES.register("wnids")
def from_wnids(wn, path: str | os.PathLike | None = None, ids: Sequence[str] | None = None,
               count: int | None = None, seed: int = 0) -> list:
    """Synsets listed explicitly (file order kept, duplicates dropped).

    Parameters
    ----------
    path : path, optional
        A text file with one wnid or synset name per line (the first field;
        ``#`` starts a comment), or a CSV with a ``wnid``/``label``/``name`` column.
    ids : sequence of str, optional
        The ids themselves (instead of ``path``).
    """
    if (path is None) == (ids is None):
        raise ValueError("give exactly one of path= or ids=")
    if path is not None:
        path = Path(path)
        if not path.exists():
            raise DatakitError(f"wnid list {path} does not exist.")
        ids = _read_id_list(path)
    out, bad, seen = [], [], set()
    for spec in ids:
        try:
            s = resolve_synset(spec, wn)
        except DatakitError as exc:
            bad.append(str(exc))
            continue
        if s not in seen:
            seen.add(s)
            out.append(s)
    if bad:
        raise DatakitError(f"{len(bad)} unknown synset(s):\n  " + "\n  ".join(bad))
    if not out:
        raise DatakitError("The wnid list is empty.")
    return _sample(out, count, seed)


def _ancestors(s) -> set:
    return set(s.closure(lambda x: x.hypernyms() + x.instance_hypernyms()))


@STRATEGIES.register("non-overlapping")
def non_overlapping(wn, roots: Sequence[str], count: int, prefer: str = "hyponyms", leaves_only: bool = False,
                    min_depth: int = 1, seed: int = 0) -> list:
    """``count`` synsets under ``roots``, none an ancestor of another (the ILSVRC constraint).

    Greedy: candidates are ranked by ``prefer`` (``hyponyms``: most transitive
    hyponyms first; ``lemmas``: most lemmas first; ``random``) with seeded
    random tie-breaking, and each is taken unless it is an ancestor or a
    descendant of one already taken.

    Raises
    ------
    DatakitError
        Fewer than ``count`` mutually non-overlapping synsets exist there.
    """
    if prefer not in PREFERENCES:
        raise ValueError(f"Unknown value {prefer!r} for prefer. Valid values are {set(PREFERENCES)}.")
    if count < 1:
        raise ValueError(f"count must be >= 1, got {count}")
    if not roots:
        raise ValueError("give at least one root synset")
    depth: dict = {}
    for root in roots:
        for s, d in _descendants_with_depth(resolve_synset(root, wn)).items():
            depth[s] = min(d, depth.get(s, d))
    candidates = sorted((s for s, d in depth.items() if d >= min_depth and (not leaves_only or not _hyponyms(s))),
                        key=wnid)
    rng = random.Random(seed)
    tiebreak = {s: rng.random() for s in candidates}
    if prefer == "hyponyms":
        score = {s: len(_descendants_with_depth(s)) - 1 for s in candidates}
    elif prefer == "lemmas":
        score = {s: len(s.lemma_names()) for s in candidates}
    else:
        score = {s: 0 for s in candidates}
    candidates.sort(key=lambda s: (-score[s], tiebreak[s]))
    picked, picked_set, picked_ancestors = [], set(), set()
    for s in candidates:
        if s in picked_ancestors or (_ancestors(s) & picked_set):
            continue
        picked.append(s)
        picked_set.add(s)
        picked_ancestors |= _ancestors(s)
        if len(picked) == count:
            break
    if len(picked) < count:
        raise DatakitError(f"Only {len(picked)} non-overlapping synsets exist under {', '.join(roots)} "
                           f"(asked for {count}); add roots or lower --count.")
    return sorted(picked, key=wnid)


@STRATEGIES.register("random-dictionary")
def random_dictionary(wn, count: int, seed: int = 0, lexnames: Iterable[str] = PICTURABLE_LEXNAMES,
                      require: Sequence[str] = (), exclude: str | None = None, first_sense_only: bool = True,
                      max_tries: int | None = None) -> list:
    """Caltech101's method: random nouns from the dictionary, kept when picturable.

    Noun lemmas are drawn uniformly (seeded) from WordNet's noun index, the
    way one opens a dictionary at a random page; a lemma is kept when its
    first (most frequent) sense, or any sense with ``first_sense_only=False``,
    belongs to one of ``lexnames``, descends from every synset in ``require``,
    does not match the ``exclude`` regular expression, and is not a proper
    noun (capitalised lemma).

    Raises
    ------
    DatakitError
        ``max_tries`` draws (default ``200 * count``) found fewer than ``count`` synsets.
    """
    from datakit.taxonomy.wordnet import LEXNAMES

    lexnames = set(lexnames)
    valid = {name for _, name, _ in LEXNAMES}
    unknown = lexnames - valid
    if unknown:
        raise ValueError(f"Unknown lexicographer file(s) {sorted(unknown)}. Valid values are {sorted(valid)}.")
    if count < 1:
        raise ValueError(f"count must be >= 1, got {count}")
    required = [resolve_synset(r, wn) for r in require]
    pattern = re.compile(exclude) if exclude else None
    lemmas = sorted(wn.all_lemma_names(pos="n"))
    rng = random.Random(seed)
    max_tries = max_tries if max_tries is not None else 200 * count
    picked, seen = [], set()
    for _ in range(max_tries):
        lemma = lemmas[rng.randrange(len(lemmas))]
        senses = wn.synsets(lemma, pos="n")
        for s in senses[:1] if first_sense_only else senses:
            if s in seen or s.lexname() not in lexnames:
                continue
            if any(name[:1].isupper() for name in s.lemma_names()[:1]):
                continue
            if pattern is not None and (pattern.search(lemma) or pattern.search(s.name())):
                continue
            if required and not all(r in _ancestors(s) or r == s for r in required):
                continue
            seen.add(s)
            picked.append(s)
            break
        if len(picked) == count:
            return picked
    raise DatakitError(f"random-dictionary found only {len(picked)} of {count} synsets in {max_tries} draws; "
                       "widen --lexname, drop --require/--exclude, or lower --count.")


def select_synsets(strategy: str, wn=None, **options) -> list:
    """Run the registered ``strategy`` (``subtree``, ``wnids``, ``non-overlapping``, ``random-dictionary``)."""
    fn = STRATEGIES.get(strategy)
    return fn(wn if wn is not None else get_wordnet(), **options)


def categories_frame(synsets: Iterable) -> pd.DataFrame:
    """The ``categories.csv`` table (columns :data:`datakit.store.dataset.CATEGORY_COLUMNS`), one row a synset."""
    from datakit.store.dataset import CATEGORY_COLUMNS

    return pd.DataFrame([synset_record(s) for s in synsets], columns=CATEGORY_COLUMNS)


def write_categories(frame: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Write ``categories.csv`` atomically."""
    from datakit.store.atomic import atomic_write

    path = Path(path)
    with atomic_write(path, "w") as fh:
        frame.to_csv(fh, index=False)
    return path


def read_categories(path: str | os.PathLike, wn=None) -> pd.DataFrame:
    """Read a ``categories.csv`` (or a plain list of wnids / synset names) as the categories table.

    Rows are re-derived from WordNet when the file is a plain list; a CSV is
    taken as written (it needs a ``wnid`` or ``label`` column).
    """
    path = Path(path)
    if not path.exists():
        raise DatakitError(f"Categories file {path} does not exist. Make one with `datakit synsets ... --out {path}`.")
    if path.suffix.lower() == ".csv":
        frame = pd.read_csv(path, dtype={"label": str, "wnid": str})
        if "wnid" not in frame.columns and "label" not in frame.columns:
            raise DatakitError(f"{path} needs a 'wnid' or 'label' column (columns: {list(frame.columns)}).")
        if "wnid" not in frame.columns:
            frame["wnid"] = frame["label"]
        if "label" not in frame.columns:
            frame["label"] = frame["wnid"]
        if "name" not in frame.columns or frame["name"].isna().any():
            wn = wn if wn is not None else get_wordnet()
            frame["name"] = [resolve_synset(w, wn).name() for w in frame["wnid"]]
        return frame
    wn = wn if wn is not None else get_wordnet()
    return categories_frame(from_wnids(wn, path=path))
