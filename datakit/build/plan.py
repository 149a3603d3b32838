"""Planning a build: the recipe validated, its sources instantiated, the build keys computed."""
from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from datakit.build.curate import _plan_curate
from datakit.build.staging import _STAGING_VERSION
from datakit.errors import DatakitError, RecipeError
from datakit.recipe import Recipe, load_recipe, resolve_data_root
from datakit.recipe.parse import _make_normalizer

__all__ = ["BuildPlan", "plan_build"]

logger = logging.getLogger(__name__)


@dataclass
class BuildPlan:
    """A validated recipe with its sources instantiated and checked (no work done yet).

    Attributes
    ----------
    recipe : Recipe
    data_root : Path or None
    sources : list of (SourceSpec, Source)
        The sources that will be read, in recipe order.
    skipped : dict
        Optional sources whose files are missing: name -> reason.
    normalizer : callable
        Picklable ``f(image) -> uint8 ndarray``.
    batch_normalizer : callable or None
        Its vectorized form for same-size grayscale stacks
        (:func:`datakit.normalize.get_batch_normalizer`), where the style has one.
    key : str
        Identifies the build's inputs (recipe content, data root, sources used,
        and the content of the ``[curate]`` vote files).
    staging_key : str
        Identifies the per-image work only (``key`` without ``[curate]``): staged
        chunks with this key are reused, so new votes only re-run the finalize pass.
    curate : dict or None
        ``[curate]`` paths resolved (``annotations``, ``consensus``, ``reference``)
        and their sha256 (``sha256``).
    relabel : dict or None
        ``[relabel]`` paths resolved (``annotations``, ``relabel``) and their sha256
        (:func:`datakit.crowd.relabel.plan_relabel`).
    """

    recipe: Recipe
    data_root: Path | None
    sources: list
    skipped: dict[str, str]
    normalizer: Callable
    key: str
    unused: dict[str, str] = field(default_factory=dict)
    staging_key: str = ""
    curate: dict | None = None
    relabel: dict | None = None
    batch_normalizer: Callable | None = None

    def __post_init__(self) -> None:
        if not self.staging_key:
            self.staging_key = self.key


def _make_batch_normalizer(style: str, options: dict) -> Callable | None:
    """The vectorized normalizer of a style, or None for a style without one (checked already by the caller)."""
    from datakit.normalize import get_batch_normalizer

    return get_batch_normalizer(style, **options)


def plan_build(recipe: str | os.PathLike | Recipe, *, data_root: str | os.PathLike | None = None) -> BuildPlan:
    """Load a recipe, instantiate and validate its sources, make the normalizer.

    Nothing is read beyond what ``Source.validate()`` checks (files exist).

    Raises
    ------
    RecipeError
        A malformed recipe, a bad source option, or a missing file of a
        source that is not ``optional``.
    """
    from datakit.sources import get_source

    if not isinstance(recipe, Recipe):
        recipe = load_recipe(recipe)
    root = resolve_data_root(recipe, data_root)
    if root is not None and not Path(root).is_dir():
        raise RecipeError(f"data_root {str(root)!r} does not exist (set by "
                          f"{'--data-root' if data_root is not None else 'the recipe' if recipe.data_root else '$DATAKIT_DATA'}).")
    active, skipped, unused = [], {}, {}
    for i, spec in enumerate(recipe.sources):
        where = f"sources[{i}] ({spec.name})"
        if spec.fallback_for is not None and spec.fallback_for not in skipped:
            unused[spec.name] = f"not needed: source {spec.fallback_for!r} is available"
            continue
        cls = get_source(spec.kind)
        try:
            source = cls(name=spec.name, data_root=None if root is None else str(root), **spec.options)
        except RecipeError:
            raise
        except (DatakitError, TypeError, ValueError) as exc:
            raise RecipeError(f"{where}: {exc}") from None
        try:
            validate = getattr(source, "validate", None)
            if validate is not None:
                validate()
            if spec.optional:
                len(source)  # e.g. a download happens here; failing now skips the source before any work
        except DatakitError as exc:
            if spec.optional:
                logger.warning("skipping optional source %r: %s", spec.name, exc)
                skipped[spec.name] = str(exc)
                continue
            raise RecipeError(f"{where}: {exc}") from None
        active.append((spec, source))
    if not active:
        raise RecipeError("No source is available: every source was skipped ("
                          + "; ".join(f"{k}: {v}" for k, v in skipped.items()) + ").")
    try:
        normalizer = _make_normalizer(recipe.normalize.style, recipe.normalize.options)
        batch_normalizer = _make_batch_normalizer(recipe.normalize.style, recipe.normalize.options)
    except (TypeError, ValueError) as exc:
        raise RecipeError(f"normalize: {exc}") from None
    key_src = {"recipe": recipe.sha256, "data_root": None if root is None else str(Path(root).resolve()),
               "sources": [s.name for s, _ in active], "staging": _STAGING_VERSION}
    curate = None
    relabel = None
    staging_key = None
    if recipe.curate is not None:
        curate = _plan_curate(recipe, None if root is None else Path(root))
        key_src["curate_inputs"] = curate["sha256"]
    if recipe.relabel is not None:
        from datakit.crowd.relabel import plan_relabel

        relabel = plan_relabel(recipe.relabel, recipe_path=recipe.path, data_root=None if root is None else Path(root))
        key_src["relabel_inputs"] = relabel["sha256"]
    if curate is not None or relabel is not None:
        staging_src = dict(key_src, recipe=recipe.processing_sha256())
        staging_src.pop("curate_inputs", None)
        staging_src.pop("relabel_inputs", None)
        staging_key = hashlib.sha256(json.dumps(staging_src, sort_keys=True).encode()).hexdigest()
    key = hashlib.sha256(json.dumps(key_src, sort_keys=True).encode()).hexdigest()
    return BuildPlan(recipe=recipe, data_root=None if root is None else Path(root), sources=active,
                     skipped=skipped, normalizer=normalizer, key=key, unused=unused, staging_key=staging_key or key,
                     curate=curate, relabel=relabel, batch_normalizer=batch_normalizer)
