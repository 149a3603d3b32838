"""Parsing each table of a recipe, with errors that name the key, the file and the valid values."""
from __future__ import annotations

import inspect
from typing import Any, Mapping

from datakit.errors import DatakitError, RecipeError
from datakit.recipe.spec import (CURATE_KEYS, CURATE_OTHERS, CURATE_STRATEGIES, NEAR_DUPLICATE_VERIFY, RELABEL_KEYS,
                                 RELABEL_METHODS, RELABEL_UNRESOLVED, SOURCE_KEYS, SPLIT_KEYS, SPLIT_STRATEGIES,
                                 _NAME_RE, CurateSpec, NormalizeSpec, RelabelSpec, SourceSpec, SplitSpec)
from datakit.registry import UnknownNameError


__all__ = [
    "_check_keys", "_make_normalizer", "_parse_curate", "_parse_normalize", "_parse_relabel",
    "_parse_sources", "_parse_splits", "_typed", "_where",
]

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
