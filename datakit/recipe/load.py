"""Reading a recipe from TOML text, a mapping or a file; the data root; writing TOML back."""
from __future__ import annotations

import copy
import json
import os
import re
import tomllib
from pathlib import Path
from typing import Mapping

from datakit.errors import RecipeError
from datakit.recipe.parse import (_check_keys, _parse_curate, _parse_normalize, _parse_relabel, _parse_sources,
                                  _parse_splits, _typed, _where)
from datakit.recipe.spec import _NAME_RE, TOP_LEVEL_KEYS, Recipe


__all__ = [
    "load_recipe", "parse_recipe", "resolve_data_root",
]

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
