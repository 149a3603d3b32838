"""The recipe as data: allowed keys and values, and the dataclasses a parsed recipe is made of."""
from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


__all__ = [
    "Recipe", "SourceSpec", "NormalizeSpec", "SplitSpec", "CurateSpec", "RelabelSpec", "TOP_LEVEL_KEYS",
    "SOURCE_KEYS", "SPLIT_KEYS", "NEAR_DUPLICATE_VERIFY", "SPLIT_STRATEGIES", "CURATE_KEYS", "CURATE_STRATEGIES",
    "CURATE_OTHERS", "RELABEL_KEYS", "RELABEL_METHODS", "RELABEL_UNRESOLVED",
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
