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

Modules: :mod:`~datakit.recipe.spec` (the allowed keys and the dataclasses),
:mod:`~datakit.recipe.parse` (one parser a table, with the errors), and
:mod:`~datakit.recipe.load` (text, mapping or file in; the data root; TOML out).
"""
from datakit.recipe.load import load_recipe, parse_recipe, resolve_data_root
from datakit.recipe.spec import (CURATE_KEYS, CURATE_OTHERS, CURATE_STRATEGIES, RELABEL_KEYS, RELABEL_METHODS,
                                 RELABEL_UNRESOLVED, SOURCE_KEYS, SPLIT_KEYS, SPLIT_STRATEGIES, TOP_LEVEL_KEYS,
                                 CurateSpec, NormalizeSpec, Recipe, RelabelSpec, SourceSpec, SplitSpec)

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
