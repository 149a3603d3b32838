"""TOML recipe -> validated build plan (dataclasses), with clear errors.

A recipe names the sources, the label mapping (source labels to dataset
classes), the normalization and the split protocol of one dataset::

    name = "digits"
    seed = 0

    [[sources]]
    name = "mnist"
    kind = "idx"
    optional = true          # skipped with a note when its files are missing
    # ... the source's own options (see `datakit.sources`)

    [normalize]
    style = "mnist"          # + the normalizer's options

    [splits]
    strategy = "source"      # keep a source's own train/test split ...
    fallback = "fractions"   # ... and split the images of sources without one
    train = 0.8
    test = 0.2
    near_duplicate_distance = 4

    [categories]
    "0" = "zero"

    [curate]                 # optional: choose the test images from crowd votes (ImageNetV2)
    annotations = "pool"     # annotations.parquet (or its directory)
    strategy = "threshold"   # or "top" / "matched-frequency" (with reference = ...)
    threshold = 0.7

    [relabel]                # optional: apply crowd re-annotation of flagged labels
    annotations = "digits"   # the dataset directory with relabel.parquet + annotations.parquet
    method = "majority_vote" # or "dawid_skene"
    min_votes = 3
    agreement = 0.6
    unresolved = "keep"      # or "drop"

Every malformed recipe raises :class:`datakit.errors.RecipeError` before any
work is done, naming the key and, for names, the valid choices.
"""
from __future__ import annotations

import copy
import dataclasses
import hashlib
import inspect
import json
import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from datakit.errors import DatakitError, RecipeError
from datakit.registry import UnknownNameError

__all__ = [
    "Recipe",
    "SourceSpec",
    "NormalizeSpec",
    "SplitSpec",
    "CurateSpec",
    "RelabelSpec",
    "load_recipe",
    "parse_recipe",
    "resolve_data_root",
    "SPLIT_STRATEGIES",
    "TOP_LEVEL_KEYS",
    "SOURCE_KEYS",
    "SPLIT_KEYS",
    "CURATE_KEYS",
    "CURATE_STRATEGIES",
    "CURATE_OTHERS",
    "RELABEL_KEYS",
    "RELABEL_METHODS",
    "RELABEL_UNRESOLVED",
]

#: Keys allowed at the top level of a recipe.
TOP_LEVEL_KEYS = ("name", "description", "seed", "data_root", "sources", "normalize", "splits", "categories",
                  "curate", "relabel")
#: Keys of a ``[[sources]]`` table that the build interprets; every other key
#: is passed to the source class as an option.
SOURCE_KEYS = ("name", "kind", "optional", "label_map", "labels", "drop_unmapped", "keep_split", "fallback_for")
#: Keys of the ``[splits]`` table.
SPLIT_KEYS = ("strategy", "fallback", "train", "val", "test", "per_class", "val_per_class", "seed",
              "near_duplicate_distance", "near_duplicate_verify", "near_duplicate_similarity")
#: How near-duplicate candidates (hash matches) are confirmed.
NEAR_DUPLICATE_VERIFY = ("pixels", "hash")
#: Split protocols: stratified fractions, N images per class for training
#: (Caltech101; the rest to test), or the sources' own splits.
SPLIT_STRATEGIES = ("fractions", "per-class", "source")
#: Keys of the ``[curate]`` table (ImageNetV2-style test-split curation from crowd votes).
CURATE_KEYS = ("annotations", "consensus", "strategy", "threshold", "per_class", "bins", "reference", "split",
               "others", "seed")
#: How ``[curate]`` chooses images (see :func:`datakit.crowd.frequency.curate_by_frequency`).
CURATE_STRATEGIES = ("threshold", "top", "matched-frequency")
#: What happens to images ``[curate]`` does not select.
CURATE_OTHERS = ("reject", "keep")
#: Keys of the ``[relabel]`` table (crowd re-annotation of the images an audit flags).
RELABEL_KEYS = ("annotations", "method", "min_votes", "agreement", "unresolved")
#: How ``[relabel]`` aggregates the re-annotation votes.
RELABEL_METHODS = ("majority_vote", "dawid_skene")
#: What ``[relabel]`` does with images whose votes are too few or split.
RELABEL_UNRESOLVED = ("keep", "drop")

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")


@dataclass(frozen=True)
class SourceSpec:
    """One ``[[sources]]`` table.

    Attributes
    ----------
    name : str
        Instance name, recorded in the manifest's ``source`` column.
    kind : str
        Registered source kind (``idx``, ``usps``, ``sklearn-digits``, ``folder``, ...).
    optional : bool
        When its files are missing, skip it with a note instead of failing.
    label_map : dict or None
        Source label -> dataset class id; None keeps the source's labels.
    drop_unmapped : bool
        Labels missing from ``label_map`` are expected (rejected rows say so,
        no warning); by default they are rejected with a warning.
    keep_split : bool or None
        Keep the source's own split (None: as ``[splits] strategy`` says).
    fallback_for : str or None
        Name of an earlier source: this one is read only when that one is
        skipped (its files missing), e.g. a torchvision download of MNIST.
    options : dict
        Everything else in the table, passed to the source class.
    """

    name: str
    kind: str
    optional: bool = False
    label_map: dict[str, str] | None = None
    drop_unmapped: bool = False
    keep_split: bool | None = None
    options: dict[str, Any] = field(default_factory=dict)
    fallback_for: str | None = None


@dataclass(frozen=True)
class NormalizeSpec:
    """The ``[normalize]`` table: a registered style and its options."""

    style: str = "none"
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class SplitSpec:
    """The ``[splits]`` table.

    Attributes
    ----------
    strategy : {"fractions", "per-class", "source"}
    fallback : {"fractions", "per-class"}
        With ``strategy = "source"``: how to split images whose source has no split.
    train, val, test : float
        Fractions (sum to 1) for ``"fractions"``.
    per_class, val_per_class : int
        Images per class for training (and validation) with ``"per-class"``;
        the rest go to test.
    seed : int
    near_duplicate_distance : int
        Images whose perceptual hashes differ in at most this many bits (0-32)
        are near-duplicate candidates; confirmed ones form a group that always
        lands in one split.
    near_duplicate_verify : {"pixels", "hash"}
        ``"pixels"`` (default): a candidate pair counts only when the images'
        32x32 grayscale thumbnails correlate at ``near_duplicate_similarity``
        or more (a 64-bit hash alone confuses different small digits);
        ``"hash"``: every hash match counts.
    near_duplicate_similarity : float
        Smallest thumbnail correlation that confirms a pair (default 0.98).
    """

    strategy: str = "fractions"
    fallback: str = "fractions"
    train: float = 0.8
    val: float = 0.1
    test: float = 0.1
    per_class: int | None = None
    val_per_class: int = 0
    seed: int = 0
    near_duplicate_distance: int = 4
    near_duplicate_verify: str = "pixels"
    near_duplicate_similarity: float = 0.98


@dataclass(frozen=True)
class CurateSpec:
    """The ``[curate]`` table: choose the images of one split from crowd selection frequencies.

    ImageNetV2 (Recht et al., 2019) built its test sets from the share of
    crowd workers who said an image shows its class (the selection frequency).

    Attributes
    ----------
    annotations : str
        A directory holding ``annotations.parquet`` (a dataset or candidates
        directory) or a ``.parquet`` file with the long ``task, worker, label``
        table; ``task`` is the image's manifest id, its candidate id, or
        ``<source label>:<candidate id>``.
    consensus : str or None
        A ``consensus.parquet`` (``datakit crowd consensus``): its ``p_positive``
        fills the manifest's ``p_correct``.
    strategy : {"threshold", "top", "matched-frequency"}
    threshold : float
        ``threshold``: smallest selection frequency selected, in [0, 1].
    per_class : int
        ``top`` and ``matched-frequency``: images selected per class.
    bins : int
        ``matched-frequency``: equal-width frequency bins over [0, 1].
    reference : str or None
        ``matched-frequency``: the reference dataset's annotations (directory or
        ``.parquet``), whose selection-frequency histogram is matched.
    split : str
        The split that receives the selected images.
    others : {"reject", "keep"}
        ``reject``: images not selected go to ``rejected.parquet`` (stage
        ``curate``); ``keep``: they are split as usual, never into ``split``.
    seed : int
        Seeds the draws of ``matched-frequency``.
    """

    annotations: str
    consensus: str | None = None
    strategy: str = "threshold"
    threshold: float = 0.7
    per_class: int = 10
    bins: int = 5
    reference: str | None = None
    split: str = "test"
    others: str = "reject"
    seed: int = 0


@dataclass(frozen=True)
class RelabelSpec:
    """The ``[relabel]`` table: apply the crowd's re-annotation of flagged images (see :mod:`datakit.crowd.relabel`).

    Attributes
    ----------
    annotations : str
        The dataset directory holding ``relabel.parquet`` (``datakit crowd tasks
        DATASET --from-audit REPORT_DIR``) and the votes, ``annotations.parquet``.
    method : {"majority_vote", "dawid_skene"}
        How each image's votes are aggregated.
    min_votes : int
        Votes an image needs at least to be decided.
    agreement : float
        The winning answer's vote share (or posterior) at least, in (0, 1].
    unresolved : {"keep", "drop"}
        Images with too few or split votes keep their label, or go to
        ``rejected.parquet`` (stage ``relabel``).
    """

    annotations: str
    method: str = "majority_vote"
    min_votes: int = 3
    agreement: float = 0.6
    unresolved: str = "keep"


@dataclass(frozen=True)
class Recipe:
    """A validated recipe.

    Attributes
    ----------
    name, description : str
    seed : int
    data_root : Path or None
        As written in the recipe (relative paths resolved against the recipe's folder).
    sources : tuple of SourceSpec
    normalize : NormalizeSpec
    splits : SplitSpec
    categories : dict
        Class id -> readable name (may be empty).
    curate : CurateSpec or None
        The ``[curate]`` table, if any.
    relabel : RelabelSpec or None
        The ``[relabel]`` table, if any.
    text : str
        The recipe verbatim (TOML), stored in ``datakit.json``.
    path : Path or None
    """

    name: str
    sources: tuple[SourceSpec, ...]
    normalize: NormalizeSpec = field(default_factory=NormalizeSpec)
    splits: SplitSpec = field(default_factory=SplitSpec)
    categories: dict[str, str] = field(default_factory=dict)
    description: str = ""
    seed: int = 0
    data_root: Path | None = None
    text: str = ""
    path: Path | None = None
    curate: CurateSpec | None = None
    relabel: RelabelSpec | None = None

    @property
    def sha256(self) -> str:
        """Hash of the recipe's content (key order and comments do not matter)."""
        return hashlib.sha256(json.dumps(self.canonical(), sort_keys=True, default=str).encode()).hexdigest()

    def canonical(self) -> dict:
        """The recipe as plain data (what the hash is computed from)."""
        return {
            "name": self.name, "description": self.description, "seed": self.seed,
            "sources": [
                {"name": s.name, "kind": s.kind, "optional": s.optional, "label_map": s.label_map,
                 "drop_unmapped": s.drop_unmapped, "keep_split": s.keep_split, "options": s.options,
                 "fallback_for": s.fallback_for}
                for s in self.sources
            ],
            "normalize": {"style": self.normalize.style, "options": self.normalize.options},
            "splits": self.splits.__dict__.copy(),
            "categories": self.categories,
            # only when present, so recipes without [curate] keep their hash
            **({"curate": dataclasses.asdict(self.curate)} if self.curate is not None else {}),
            **({"relabel": dataclasses.asdict(self.relabel)} if self.relabel is not None else {}),
        }

    def processing_sha256(self) -> str:
        """Hash of everything but ``[curate]`` and ``[relabel]``: what decides the per-image work."""
        canon = self.canonical()
        canon.pop("curate", None)
        canon.pop("relabel", None)
        return hashlib.sha256(json.dumps(canon, sort_keys=True, default=str).encode()).hexdigest()


def _where(path: str | None) -> str:
    return f" in {path}" if path else ""


def _check_keys(table: Mapping, allowed: tuple[str, ...] | None, where: str, origin: str | None) -> None:
    if allowed is None:
        return
    for key in table:
        if key not in allowed:
            import difflib

            close = difflib.get_close_matches(key, allowed, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise RecipeError(f"Unknown key {where}{key!r}{_where(origin)}.{hint} "
                              f"Valid keys are {{{', '.join(allowed)}}}.")


def _typed(value: Any, types: type | tuple, key: str, origin: str | None, what: str) -> Any:
    if isinstance(value, bool) and bool not in (types if isinstance(types, tuple) else (types,)):
        raise RecipeError(f"{key} must be {what}, got {value!r}{_where(origin)}.")
    if not isinstance(value, types):
        raise RecipeError(f"{key} must be {what}, got {value!r}{_where(origin)}.")
    return value


def _label_map(table: Any, key: str, origin: str | None) -> dict[str, str]:
    if not isinstance(table, Mapping):
        raise RecipeError(f"{key} must be a table mapping source labels to dataset classes, got {table!r}{_where(origin)}.")
    out = {}
    for k, v in table.items():
        if isinstance(v, bool) or not isinstance(v, (str, int)):
            raise RecipeError(f"{key}.{k} must be a class id (string), got {v!r}{_where(origin)}.")
        out[str(k)] = str(v)
    return out


def _parse_sources(raw: Any, origin: str | None) -> tuple[SourceSpec, ...]:
    from datakit.sources import SOURCES, get_source

    if raw is None:
        raise RecipeError(f"Missing key 'sources'{_where(origin)}: add at least one [[sources]] table "
                          f"with a name and a kind (valid kinds are {{{', '.join(_source_kinds())}}}).")
    if isinstance(raw, Mapping):
        raw = [raw]
    if not isinstance(raw, list) or not raw:
        raise RecipeError(f"'sources' must be a list of [[sources]] tables{_where(origin)}.")
    specs, seen = [], set()
    for i, table in enumerate(raw):
        key = f"sources[{i}]"
        if not isinstance(table, Mapping):
            raise RecipeError(f"{key} must be a table, got {table!r}{_where(origin)}.")
        kind = table.get("kind")
        if kind is None:
            raise RecipeError(f"Missing key {key}.kind{_where(origin)}. Valid kinds are {{{', '.join(_source_kinds())}}}.")
        if not isinstance(kind, str):
            raise RecipeError(f"{key}.kind must be a string, got {kind!r}{_where(origin)}.")
        try:
            cls = get_source(kind)
        except DatakitError:
            raise RecipeError(f"{key}.kind: {SOURCES.unknown_message(kind)}") from None
        name = table.get("name", kind)
        if not isinstance(name, str) or not _NAME_RE.match(name):
            raise RecipeError(f"{key}.name must be a short name (letters, digits, '_', '-', '.'), got {name!r}{_where(origin)}.")
        if name in seen:
            raise RecipeError(f"{key}.name {name!r} is used twice{_where(origin)}; give each source a unique name.")
        seen.add(name)
        key = f"sources[{i}] ({name})"
        # `labels` is the label map when it is a table; otherwise a source option (idx: the labels file)
        labels_is_map = isinstance(table.get("labels"), Mapping)
        if "label_map" in table and labels_is_map:
            raise RecipeError(f"{key}: give either 'label_map' or a [labels] table, not both{_where(origin)}.")
        lm = table.get("label_map", table.get("labels") if labels_is_map else None)
        label_map = None if lm is None else _label_map(lm, f"{key}.label_map", origin)
        optional = _typed(table.get("optional", False), bool, f"{key}.optional", origin, "true or false")
        drop = _typed(table.get("drop_unmapped", False), bool, f"{key}.drop_unmapped", origin, "true or false")
        keep = table.get("keep_split")
        if keep is not None:
            _typed(keep, bool, f"{key}.keep_split", origin, "true or false")
        fallback = table.get("fallback_for")
        if fallback is not None:
            earlier = [s.name for s in specs if s.fallback_for is None]
            if fallback not in earlier:
                raise RecipeError(f"{key}.fallback_for: unknown value {fallback!r}{_where(origin)}; it names an "
                                  f"earlier source. Valid values are {{{', '.join(earlier)}}}.")
        options = {k: v for k, v in table.items() if k not in SOURCE_KEYS or (k == "labels" and not labels_is_map)}
        _check_source_options(cls, options, key, origin)
        specs.append(SourceSpec(name=name, kind=kind, optional=optional, label_map=label_map,
                                drop_unmapped=drop, keep_split=keep, options=options, fallback_for=fallback))
    return tuple(specs)


def _source_kinds() -> list[str]:
    import datakit.sources  # noqa: F401  (registers the built-in sources)
    from datakit.sources import SOURCES

    return SOURCES.names()


def _accepted_options(cls: type) -> tuple[set[str], bool]:
    """Keyword names ``cls`` accepts, and whether it also takes ``**options``."""
    names, var_kw = set(), False
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        try:
            params = inspect.signature(init).parameters.values()
        except (TypeError, ValueError):
            return set(), True
        kw = False
        for p in params:
            if p.kind is p.VAR_KEYWORD:
                kw = True
            elif p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD) and p.name != "self":
                names.add(p.name)
        if not kw:
            return names, False
        if klass is not cls and klass.__name__ == "Source":
            # the base class only stores **options: the subclass decides
            return names, True
    return names, True


def _check_source_options(cls: type, options: dict, key: str, origin: str | None) -> None:
    declared = getattr(cls, "OPTIONS", None)
    if declared is not None:
        for opt in options:
            if opt not in declared:
                import difflib

                valid = sorted(set(SOURCE_KEYS) | set(declared))
                close = difflib.get_close_matches(opt, valid, n=1)
                hint = f" Did you mean {close[0]!r}?" if close else ""
                raise RecipeError(f"Unknown key {key}.{opt}{_where(origin)} for source kind {cls.kind!r}.{hint} "
                                  f"Valid keys are {{{', '.join(valid)}}}.")
        return
    accepted, var_kw = _accepted_options(cls)
    accepted.discard("name")
    accepted.discard("data_root")
    if var_kw:
        return
    for opt in options:
        if opt not in accepted:
            valid = sorted(set(SOURCE_KEYS) | accepted)
            raise RecipeError(f"Unknown key {key}.{opt}{_where(origin)} for source kind {cls.kind!r}. "
                              f"Valid keys are {{{', '.join(valid)}}}.")


def _parse_normalize(raw: Any, origin: str | None) -> NormalizeSpec:
    from datakit.normalize import NORMALIZERS

    if raw is None:
        return NormalizeSpec()
    if isinstance(raw, str):
        raw = {"style": raw}
    if not isinstance(raw, Mapping):
        raise RecipeError(f"'normalize' must be a table with a 'style' key, got {raw!r}{_where(origin)}.")
    style = raw.get("style", "none")
    if not isinstance(style, str):
        raise RecipeError(f"normalize.style must be a string, got {style!r}{_where(origin)}.")
    options = {k: v for k, v in raw.items() if k != "style"}
    try:
        _make_normalizer(style, options)
    except UnknownNameError:
        raise RecipeError(f"normalize.style: {NORMALIZERS.unknown_message(style)}") from None
    except (TypeError, ValueError) as exc:
        raise RecipeError(f"normalize: bad option for style {style!r}{_where(origin)}: {exc}") from None
    return NormalizeSpec(style=style, options=options)


def _make_normalizer(style: str, options: dict):
    """The picklable callable for ``style`` with ``options``."""
    import datakit.normalize as normalize

    getter = getattr(normalize, "get_normalizer", None)
    if getter is not None:
        return getter(style, **options)
    import functools

    fn = normalize.NORMALIZERS.get(style)
    return functools.partial(fn, **options) if options else fn


def _parse_splits(raw: Any, seed: int, origin: str | None) -> SplitSpec:
    if raw is None:
        return SplitSpec(seed=seed)
    if not isinstance(raw, Mapping):
        raise RecipeError(f"'splits' must be a table{_where(origin)}.")
    _check_keys(raw, SPLIT_KEYS, "splits.", origin)
    strategy = raw.get("strategy", "fractions")
    if strategy not in SPLIT_STRATEGIES:
        raise RecipeError(f"splits.strategy: unknown value {strategy!r}{_where(origin)}. "
                          f"Valid values are {{{', '.join(SPLIT_STRATEGIES)}}}.")
    fallback = raw.get("fallback", "fractions")
    if fallback not in ("fractions", "per-class"):
        raise RecipeError(f"splits.fallback: unknown value {fallback!r}{_where(origin)}. "
                          f"Valid values are {{fractions, per-class}}.")
    fr = {}
    for k in ("train", "val", "test"):
        if k in raw:
            v = _typed(raw[k], (int, float), f"splits.{k}", origin, "a fraction between 0 and 1")
            if not 0 <= v <= 1:
                raise RecipeError(f"splits.{k} must be a fraction between 0 and 1, got {v!r}{_where(origin)}.")
            fr[k] = float(v)
    uses_fractions = strategy == "fractions" or (strategy == "source" and fallback == "fractions")
    if fr:
        defaults = {"train": 0.0, "val": 0.0, "test": 0.0}
        defaults.update(fr)
        fr = defaults
    else:
        fr = {"train": 0.8, "val": 0.1, "test": 0.1}
    if uses_fractions and abs(sum(fr.values()) - 1.0) > 1e-6:
        raise RecipeError(f"splits.train + splits.val + splits.test must sum to 1, got "
                          f"{fr['train']} + {fr['val']} + {fr['test']} = {sum(fr.values()):g}{_where(origin)}.")
    per_class = raw.get("per_class")
    uses_per_class = strategy == "per-class" or (strategy == "source" and fallback == "per-class")
    if per_class is not None:
        _typed(per_class, int, "splits.per_class", origin, "a positive integer")
        if per_class < 1:
            raise RecipeError(f"splits.per_class must be a positive integer, got {per_class!r}{_where(origin)}.")
    elif uses_per_class:
        raise RecipeError(f"Missing key splits.per_class{_where(origin)}: the per-class protocol needs the number "
                          "of training images per class (e.g. per_class = 30, the rest go to test).")
    val_pc = _typed(raw.get("val_per_class", 0), int, "splits.val_per_class", origin, "an integer >= 0")
    if val_pc < 0:
        raise RecipeError(f"splits.val_per_class must be >= 0, got {val_pc!r}{_where(origin)}.")
    split_seed = _typed(raw.get("seed", seed), int, "splits.seed", origin, "an integer")
    try:
        from datakit.dedup import MAX_DISTANCE as max_dist
    except ImportError:  # pragma: no cover
        max_dist = 32
    dist = _typed(raw.get("near_duplicate_distance", 4), int, "splits.near_duplicate_distance", origin,
                  f"an integer between 0 and {max_dist}")
    if not 0 <= dist <= max_dist:
        raise RecipeError(f"splits.near_duplicate_distance must be between 0 and {max_dist} (bits of a 64-bit "
                          f"perceptual hash), got {dist!r}{_where(origin)}.")
    verify = raw.get("near_duplicate_verify", "pixels")
    if verify not in NEAR_DUPLICATE_VERIFY:
        raise RecipeError(f"Unknown value {verify!r} for splits.near_duplicate_verify{_where(origin)}. "
                          f"Valid values are {{{', '.join(NEAR_DUPLICATE_VERIFY)}}}.")
    sim = raw.get("near_duplicate_similarity", 0.98)
    if isinstance(sim, bool) or not isinstance(sim, (int, float)) or not -1.0 <= float(sim) <= 1.0:
        raise RecipeError(f"splits.near_duplicate_similarity must be a number in [-1, 1], got {sim!r}"
                          f"{_where(origin)}.")
    return SplitSpec(strategy=strategy, fallback=fallback, train=fr["train"], val=fr["val"], test=fr["test"],
                     per_class=per_class, val_per_class=val_pc, seed=split_seed, near_duplicate_distance=dist,
                     near_duplicate_verify=verify, near_duplicate_similarity=float(sim))


def _parse_curate(raw: Any, seed: int, origin: str | None) -> CurateSpec | None:
    if raw is None:
        return None
    if not isinstance(raw, Mapping):
        raise RecipeError(f"'curate' must be a table{_where(origin)}.")
    _check_keys(raw, CURATE_KEYS, "curate.", origin)
    if "annotations" not in raw:
        raise RecipeError(f"Missing key curate.annotations{_where(origin)}: name the crowd votes to curate from "
                          "(a directory holding annotations.parquet, or a .parquet file).")
    paths = {}
    for key in ("annotations", "consensus", "reference"):
        value = raw.get(key)
        if value is not None:
            _typed(value, str, f"curate.{key}", origin, "a path (string)")
            if not value.strip():
                raise RecipeError(f"curate.{key} must be a path, got an empty string{_where(origin)}.")
        paths[key] = value
    strategy = raw.get("strategy", "threshold")
    if strategy not in CURATE_STRATEGIES:
        raise RecipeError(f"curate.strategy: unknown value {strategy!r}{_where(origin)}. "
                          f"Valid values are {{{', '.join(CURATE_STRATEGIES)}}}.")
    others = raw.get("others", "reject")
    if others not in CURATE_OTHERS:
        raise RecipeError(f"curate.others: unknown value {others!r}{_where(origin)}. "
                          f"Valid values are {{{', '.join(CURATE_OTHERS)}}}.")
    threshold = _typed(raw.get("threshold", 0.7), (int, float), "curate.threshold", origin,
                       "a selection frequency between 0 and 1")
    if not 0 <= threshold <= 1:
        raise RecipeError(f"curate.threshold must be a selection frequency between 0 and 1, got {threshold!r}"
                          f"{_where(origin)}.")
    per_class = _typed(raw.get("per_class", 10), int, "curate.per_class", origin, "a positive integer")
    if per_class < 1:
        raise RecipeError(f"curate.per_class must be a positive integer, got {per_class!r}{_where(origin)}.")
    bins = _typed(raw.get("bins", 5), int, "curate.bins", origin, "a positive integer")
    if bins < 1:
        raise RecipeError(f"curate.bins must be a positive integer, got {bins!r}{_where(origin)}.")
    split = _typed(raw.get("split", "test"), str, "curate.split", origin, "a split name")
    if not _NAME_RE.match(split):
        raise RecipeError(f"curate.split must be a split name (letters, digits, '_', '-', '.'), got {split!r}"
                          f"{_where(origin)}.")
    cseed = _typed(raw.get("seed", seed), int, "curate.seed", origin, "an integer")
    if strategy == "matched-frequency" and paths["reference"] is None:
        raise RecipeError(f"Missing key curate.reference{_where(origin)}: strategy 'matched-frequency' matches the "
                          "selection-frequency distribution of a reference dataset; name its annotations "
                          "(a directory holding annotations.parquet, or a .parquet file).")
    if strategy != "matched-frequency" and paths["reference"] is not None:
        raise RecipeError(f"curate.reference is only used by strategy 'matched-frequency', not {strategy!r}"
                          f"{_where(origin)}; remove it or change the strategy.")
    return CurateSpec(annotations=paths["annotations"], consensus=paths["consensus"], strategy=strategy,
                      threshold=float(threshold), per_class=per_class, bins=bins, reference=paths["reference"],
                      split=split, others=others, seed=cseed)


def _parse_relabel(raw: Any, origin: str | None) -> RelabelSpec | None:
    if raw is None:
        return None
    if not isinstance(raw, Mapping):
        raise RecipeError(f"'relabel' must be a table{_where(origin)}.")
    _check_keys(raw, RELABEL_KEYS, "relabel.", origin)
    if "annotations" not in raw:
        raise RecipeError(f"Missing key relabel.annotations{_where(origin)}: name the dataset directory holding "
                          "relabel.parquet and the re-annotation votes (annotations.parquet).")
    annotations = _typed(raw["annotations"], str, "relabel.annotations", origin, "a path (string)")
    if not annotations.strip():
        raise RecipeError(f"relabel.annotations must be a path, got an empty string{_where(origin)}.")
    method = raw.get("method", "majority_vote")
    if method not in RELABEL_METHODS:
        raise RecipeError(f"relabel.method: unknown value {method!r}{_where(origin)}. "
                          f"Valid values are {{{', '.join(RELABEL_METHODS)}}}.")
    unresolved = raw.get("unresolved", "keep")
    if unresolved not in RELABEL_UNRESOLVED:
        raise RecipeError(f"relabel.unresolved: unknown value {unresolved!r}{_where(origin)}. "
                          f"Valid values are {{{', '.join(RELABEL_UNRESOLVED)}}}.")
    min_votes = _typed(raw.get("min_votes", 3), int, "relabel.min_votes", origin, "a positive integer")
    if min_votes < 1:
        raise RecipeError(f"relabel.min_votes must be a positive integer, got {min_votes!r}{_where(origin)}.")
    agreement = _typed(raw.get("agreement", 0.6), (int, float), "relabel.agreement", origin,
                       "a share of the votes in (0, 1]")
    if not 0 < agreement <= 1:
        raise RecipeError(f"relabel.agreement must be a share of the votes in (0, 1], got {agreement!r}"
                          f"{_where(origin)}.")
    return RelabelSpec(annotations=annotations, method=method, min_votes=min_votes, agreement=float(agreement),
                       unresolved=unresolved)


def parse_recipe(text_or_dict: str | Mapping, *, origin: str | os.PathLike | None = None) -> Recipe:
    """Validate a recipe given as TOML text or an already-parsed dict.

    Parameters
    ----------
    text_or_dict : str or mapping
        TOML text, or the table it parses to.
    origin : path, optional
        Where the recipe came from (used in messages and to resolve a relative ``data_root``).

    Returns
    -------
    Recipe

    Raises
    ------
    RecipeError
        Bad TOML (with the line number), an unknown key, an unknown source kind
        or normalizer (listing the valid names), a bad value.

    Examples
    --------
    >>> r = parse_recipe('''
    ... name = "tiny"
    ... [[sources]]
    ... name = "digits"
    ... kind = "sklearn-digits"
    ... [normalize]
    ... style = "none"
    ... ''')
    >>> r.name, r.sources[0].kind, r.splits.strategy
    ('tiny', 'sklearn-digits', 'fractions')
    """
    where = str(origin) if origin is not None else None
    if isinstance(text_or_dict, str):
        text = text_or_dict
        try:
            raw = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise RecipeError(f"Bad TOML{_where(where)}: {exc}") from None
    elif isinstance(text_or_dict, Mapping):
        raw = copy.deepcopy(dict(text_or_dict))
        text = _dump_toml(raw)
    else:
        raise TypeError(f"parse_recipe expects TOML text or a dict, got {type(text_or_dict).__name__}")
    _check_keys(raw, TOP_LEVEL_KEYS, "", where)
    name = raw.get("name")
    if name is None:
        raise RecipeError(f"Missing key 'name'{_where(where)}: every recipe names its dataset (name = \"digits\").")
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise RecipeError(f"name must be a short name (letters, digits, '_', '-', '.'), got {name!r}{_where(where)}.")
    description = _typed(raw.get("description", ""), str, "description", where, "a string")
    seed = _typed(raw.get("seed", 0), int, "seed", where, "an integer")
    data_root = raw.get("data_root")
    if data_root is not None:
        _typed(data_root, str, "data_root", where, "a path (string)")
        data_root = Path(os.path.expanduser(data_root))
        if not data_root.is_absolute() and origin is not None:
            data_root = Path(origin).resolve().parent / data_root
    sources = _parse_sources(raw.get("sources"), where)
    normalize = _parse_normalize(raw.get("normalize"), where)
    splits = _parse_splits(raw.get("splits"), seed, where)
    cats = raw.get("categories", {})
    if not isinstance(cats, Mapping):
        raise RecipeError(f"'categories' must be a table of class id = \"readable name\"{_where(where)}.")
    categories = {}
    for k, v in cats.items():
        if not isinstance(v, str):
            raise RecipeError(f"categories.{k} must be a readable name (string), got {v!r}{_where(where)}.")
        categories[str(k)] = v
    curate = _parse_curate(raw.get("curate"), seed, where)
    relabel = _parse_relabel(raw.get("relabel"), where)
    return Recipe(name=name, description=description, seed=seed, data_root=data_root, sources=sources,
                  normalize=normalize, splits=splits, categories=categories, text=text,
                  path=Path(origin) if origin is not None else None, curate=curate, relabel=relabel)


def load_recipe(path: str | os.PathLike, data_root: str | os.PathLike | None = None) -> Recipe:
    """Read and validate a TOML recipe file.

    Parameters
    ----------
    path : path
        The recipe file.
    data_root : path, optional
        Overrides the recipe's ``data_root`` (like ``--data-root``).

    Raises
    ------
    RecipeError
        The file is missing or the recipe is malformed (see :func:`parse_recipe`).
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise RecipeError(f"Recipe file {path} does not exist.") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise RecipeError(f"Cannot read recipe {path}: {exc}") from None
    recipe = parse_recipe(text, origin=path)
    if data_root is not None:
        import dataclasses

        recipe = dataclasses.replace(recipe, data_root=Path(data_root))
    return recipe


def resolve_data_root(recipe: Recipe, data_root: str | os.PathLike | None = None) -> Path | None:
    """The data root in effect: ``data_root`` argument, the recipe's, then ``$DATAKIT_DATA``."""
    if data_root is not None:
        return Path(data_root)
    if recipe.data_root is not None:
        return Path(recipe.data_root)
    env = os.environ.get("DATAKIT_DATA")
    return Path(env) if env else None


def _dump_toml(obj: Mapping) -> str:
    """A readable TOML-like rendering of a dict recipe (stored verbatim in datakit.json)."""
    lines = []

    def scalar(v):
        return json.dumps(v, default=str)

    def table(prefix, d):
        subs = []
        for k, v in d.items():
            if isinstance(v, Mapping):
                subs.append((k, v))
            elif isinstance(v, list) and v and all(isinstance(x, Mapping) for x in v):
                subs.append((k, v))
            else:
                lines.append(f"{json.dumps(str(k))} = {scalar(v)}" if not re.match(r"^[A-Za-z0-9_-]+$", str(k))
                             else f"{k} = {scalar(v)}")
        for k, v in subs:
            name = f"{prefix}.{k}" if prefix else str(k)
            if isinstance(v, list):
                for item in v:
                    lines.append(f"\n[[{name}]]")
                    table(name, item)
            else:
                lines.append(f"\n[{name}]")
                table(name, v)

    table("", obj)
    return "\n".join(lines).strip() + "\n"
