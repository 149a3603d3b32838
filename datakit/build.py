"""Build a dataset directory from a recipe: stream, stage, resume, dedupe, split, write.

The build runs in two passes.

1. **Process** (per image, through :func:`datakit.parallel.get_executor`):
   decode, normalize, encode as PNG into the content-addressed store, hash.
   Results are staged as Parquet chunk files under ``<out>/.build/<source>/``
   (one per ``chunk_size`` items, written atomically), so a run killed at any
   moment resumes from the last complete chunk and never redoes it. Decoded
   images are never held beyond the batches in flight.
2. **Finalize** (compact columns only: id, label, source, phash, ...): drop exact
   duplicates (first occurrence kept), group near-duplicates by perceptual hash,
   assign splits per group (stratified, deterministic), then write
   ``manifest.parquet`` (row groups), ``rejected.parquet``, ``categories.csv``,
   ``DATASHEET.md`` and, last, ``datakit.json``, which marks the build complete.

With a ``[curate]`` table, finalize also fills ``votes``, ``selection_frequency``
and ``p_correct`` from crowd votes and puts the images chosen by selection
frequency (ImageNetV2) into the curated split; the others are rejected (stage
``curate``) or split elsewhere. The vote files' sha256 is part of the build key,
and curated builds keep ``.build`` (metadata only), so new votes re-run only
the finalize pass. A ``[relabel]`` table works the same way: after the splits,
it relabels, keeps or drops the images a crowd re-annotated
(:mod:`datakit.crowd.relabel`); its vote files are part of the build key too.

A re-run of a complete build with the same recipe, data root and available
sources does no work. Timings live in ``datakit.json``, never in the manifest,
so an interrupted-then-resumed build writes a manifest identical to an
uninterrupted one.
"""
from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import functools
import hashlib
import itertools
import json
import logging
import os
import shutil
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import pandas as pd
from PIL import Image

from datakit._memory import release_memory as _release_memory
from datakit.errors import DatakitError, ImageRejected, RecipeError
from datakit.recipe import Recipe, SourceSpec, _make_normalizer, load_recipe, resolve_data_root
from datakit.sources.base import SourceItem
from datakit.store.atomic import _UMASK, atomic_write_bytes, atomic_write_json, atomic_write_parquet
from datakit.store.images import ImageStore, content_id, encode_png
from datakit.store.manifest import MANIFEST_COLUMNS, REJECTED_COLUMNS, conform
from datakit.store.splits import SPLIT_ORDER, UNLABELED_KEY, assign_split_codes, assign_splits, split_counts
from datakit.store.writer import DatasetWriter, versions

__all__ = ["BuildResult", "BuildPlan", "build_dataset", "plan_build", "process_item", "STAGING_DIR"]

logger = logging.getLogger(__name__)

#: Staging folder inside the output directory (removed when the build completes).
STAGING_DIR = ".build"
#: Bump when the staging layout or the per-item work changes meaning.
#: 2: pHashes of chunks holding failed rows are no longer rounded through float64.
_STAGING_VERSION = 2

#: Bytes of one staged thumbnail (32x32 uint8 grayscale, :func:`datakit.dedup.thumbnail_pixels`).
_THUMB_BYTES = 1024

_STAGE_COLUMNS = {
    "seq": "int64", "source": "string", "source_ref": "string", "source_label": "string",
    "source_split": "string", "query": "string", "rank": "Int64", "license": "string",
    "ok": "bool", "id": "string", "path": "string", "width": "Int64", "height": "Int64",
    "phash": "UInt64", "stage": "string", "reason": "string", "detail": "string",
    # the candidates source's content id of the image as found (crowd tasks are keyed by it); chunks staged
    # before this column existed read it as null
    "candidate_id": "string",
    # the decoded image's size before normalization; null in chunks staged before these columns existed
    "original_width": "Int64", "original_height": "Int64",
}


@dataclass
class BuildResult:
    """What a build did.

    Attributes
    ----------
    out : Path
        The dataset directory.
    kept, rejected : int
        Images in ``manifest.parquet`` and rows in ``rejected.parquet``.
    skipped_sources : dict
        Source name -> why it was skipped (optional sources whose files are missing).
    seconds : float
        Wall time of this call.
    resumed : bool
        Staged chunks of an interrupted run were reused.
    up_to_date : bool
        The dataset was already built from this recipe: nothing was done.
    processed, reused : int
        Items processed in this call, and items taken from staged chunks.
    summary : DataFrame
        Per source: status, items, kept, rejected and kept images per split.
    info : dict
        The content of ``datakit.json``.
    """

    out: Path
    kept: int
    rejected: int
    skipped_sources: dict[str, str]
    seconds: float
    resumed: bool = False
    up_to_date: bool = False
    processed: int = 0
    reused: int = 0
    summary: pd.DataFrame = field(default_factory=pd.DataFrame)
    info: dict = field(default_factory=dict)


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

    def __post_init__(self) -> None:
        if not self.staging_key:
            self.staging_key = self.key


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
                     curate=curate, relabel=relabel)


# --------------------------------------------------------------------------- [curate] inputs


def _resolve_curate_path(value: str, key: str, recipe: Recipe, root: Path | None, want: str) -> Path:
    """An absolute path, or a relative one looked up next to the recipe, under the data root, then here."""
    path = Path(os.path.expanduser(value))
    tried = [path] if path.is_absolute() else (
        ([recipe.path.resolve().parent / path] if recipe.path is not None else [])
        + ([root / path] if root is not None else []) + [Path.cwd() / path])
    for cand in tried:
        if cand.is_dir() or cand.is_file():
            return cand
    raise RecipeError(f"curate.{key}: {value!r} does not exist (looked in "
                      f"{', '.join(str(t) for t in dict.fromkeys(tried))}); it names {want}.")


def _vote_file(path: Path, key: str, filename: str) -> Path:
    if path.is_dir():
        inner = path / filename
        if not inner.is_file():
            raise RecipeError(f"curate.{key}: {path} holds no {filename}"
                              + ("; collect votes with `datakit annotate serve` or `datakit crowd import` first."
                                 if filename == "annotations.parquet" else
                                 "; compute it with `datakit crowd consensus` first."))
        return inner
    if path.suffix != ".parquet":
        raise RecipeError(f"curate.{key}: {path} is neither a directory holding {filename} nor a .parquet file.")
    return path


def _read_table(path: Path, key: str, needs: tuple[str, ...]) -> pd.DataFrame:
    try:
        frame = pd.read_parquet(path)
    except (OSError, ValueError) as exc:
        raise RecipeError(f"curate.{key}: cannot read {path}: {exc}") from None
    missing = [c for c in needs if c not in frame.columns]
    if missing:
        raise RecipeError(f"curate.{key}: {path} has no {', '.join(repr(c) for c in missing)} column "
                          f"(columns: {list(frame.columns)}).")
    return frame


def _plan_curate(recipe: Recipe, root: Path | None) -> dict:
    """Resolve and check the ``[curate]`` files before any work; hash them for re-run detection."""
    spec = recipe.curate
    files = {"annotations": _vote_file(_resolve_curate_path(spec.annotations, "annotations", recipe, root,
                                                            "a directory holding annotations.parquet or a .parquet "
                                                            "file"), "annotations", "annotations.parquet")}
    _read_table(files["annotations"], "annotations", ("task", "worker", "label"))
    if spec.consensus is not None:
        files["consensus"] = _vote_file(_resolve_curate_path(spec.consensus, "consensus", recipe, root,
                                                             "consensus.parquet or a directory holding it"),
                                        "consensus", "consensus.parquet")
        _read_table(files["consensus"], "consensus", ("item", "p_positive"))
    if spec.reference is not None:
        ref = _resolve_curate_path(spec.reference, "reference", recipe, root,
                                   "the reference dataset's annotations (a directory or a .parquet file)")
        files["reference"] = _vote_file(ref, "reference", "annotations.parquet")
        if ref.is_dir() and (ref / "manifest.parquet").is_file():
            files["reference_manifest"] = ref / "manifest.parquet"
        frame = _read_table(files["reference"], "reference", ())
        if not ({"task", "worker", "label"} <= set(frame.columns)
                or {"item", "selection_frequency"} <= set(frame.columns)):
            raise RecipeError(f"curate.reference: {files['reference']} is neither an annotations table (task, "
                              f"worker, label) nor a consensus table (item, selection_frequency); columns: "
                              f"{list(frame.columns)}.")
    return {**{k: str(v) for k, v in files.items()},
            "sha256": {k: _file_sha256(v) for k, v in files.items()}}


# --------------------------------------------------------------------------- per-item work


def _rejection(stage: str, reason: str, detail: str = "") -> dict:
    return {"ok": False, "stage": stage, "reason": reason, "detail": detail[:1000]}


def _put_image(store_root: str, data: bytes) -> tuple[str, str]:
    """Store PNG bytes under their sha256: temporary name, then rename.

    Atomic for readers and for killed processes. There is no fsync per image
    (it cost 0.4-7 ms an image here); the build flushes with ``os.sync()``
    before it commits each staged chunk and before it marks the dataset complete.
    """
    import tempfile

    image_id = content_id(data)
    rel = ImageStore.relpath(image_id)
    target = Path(store_root) / rel
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        try:
            os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp creates 0600
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    return image_id, rel


def process_item(item: SourceItem, *, normalizer: Callable, label_map: dict | None, store_root: str) -> dict:
    """Decode, normalize, store and hash one :class:`~datakit.sources.SourceItem`.

    Module-level and picklable (with :func:`functools.partial`), so it runs on
    local worker processes and Dask workers alike. The image is written into
    the content-addressed store under ``store_root`` (which workers must share).

    Returns
    -------
    dict
        ``ok=True`` with ``id``, ``path``, ``width``, ``height`` (of the stored
        image), ``original_width``, ``original_height`` (of the decoded image,
        before the normalizer), ``phash`` and
        ``thumb`` (the 1,024 bytes of :func:`datakit.dedup.thumbnail_pixels`,
        for the near-duplicate pixel check); or ``ok=False`` with ``stage`` (label/decode/normalize), ``reason`` and ``detail``.
    """
    from datakit.dedup import thumbnail_pixels
    from datakit.hashing import phash
    from datakit.sources.decode import item_to_image

    if label_map is not None and (item.label is None or str(item.label) not in label_map):
        return _rejection("label", "unmapped_label",
                          f"source label {item.label!r} is not in label_map ({len(label_map)} labels)")
    try:
        image = item_to_image(item)
    except ImageRejected as exc:
        return _rejection("decode", exc.reason, exc.detail)
    original_width, original_height = image.size if isinstance(image, Image.Image) else np.shape(image)[1::-1]
    try:
        array = normalizer(image)
    except ImageRejected as exc:
        return _rejection("normalize", exc.reason, exc.detail)
    array = np.asarray(array)
    if array.dtype != np.uint8:
        raise TypeError(f"the normalizer returned {array.dtype}, expected uint8")
    image_id, rel = _put_image(store_root, encode_png(array))
    return {"ok": True, "id": image_id, "path": rel, "width": int(array.shape[1]),
            "height": int(array.shape[0]), "original_width": int(original_width),
            "original_height": int(original_height), "phash": phash(array), "thumb": thumbnail_pixels(array).tobytes()}


# --------------------------------------------------------------------------- staging


class _Staging:
    """The ``.build`` folder: chunk files per source, resumable."""

    def __init__(self, out: Path, key: str, chunk_size: int) -> None:
        self.dir = out / STAGING_DIR
        state = {"key": key, "chunk_size": chunk_size, "version": _STAGING_VERSION}
        state_path = self.dir / "state.json"
        if self.dir.exists():
            try:
                old = json.loads(state_path.read_text())
            except (OSError, ValueError):
                old = None
            if old != state:
                logger.info("discarding staged chunks of a different build in %s", self.dir)
                shutil.rmtree(self.dir)
        if not self.dir.exists():
            self.dir.mkdir(parents=True)
            atomic_write_json(state_path, state)
        self.chunk_size = chunk_size

    def source_dir(self, name: str) -> Path:
        return self.dir / name

    def chunk_path(self, name: str, index: int) -> Path:
        return self.source_dir(name) / f"chunk-{index:06d}.parquet"

    def complete_chunks(self, name: str) -> int:
        """Number of consecutive complete chunks from chunk 0."""
        n = 0
        while self.chunk_path(name, n).exists():
            n += 1
        return n

    def done(self, name: str) -> dict | None:
        path = self.source_dir(name) / "done.json"
        if path.exists():
            try:
                return json.loads(path.read_text())
            except (OSError, ValueError):
                return None
        return None

    def mark_done(self, name: str, items: int, chunks: int) -> None:
        atomic_write_json(self.source_dir(name) / "done.json", {"items": items, "chunks": chunks})

    @staticmethod
    def thumbs_path(chunk: Path) -> Path:
        """The chunk's thumbnails: 1,024 bytes per ok row, in row order (see :func:`process_item`)."""
        return chunk.with_suffix(".thumbs")

    def write_chunk(self, name: str, index: int, rows: list[dict]) -> None:
        path = self.chunk_path(name, index)
        thumbs = [r.get("thumb") for r in rows if r.get("ok")]
        if thumbs and all(isinstance(t, bytes) and len(t) == _THUMB_BYTES for t in thumbs):
            atomic_write_bytes(self.thumbs_path(path), b"".join(thumbs))
        if hasattr(os, "sync"):
            os.sync()  # the images (and thumbnails) this chunk refers to reach the disk before the chunk does
        atomic_write_parquet(path, _stage_frame(rows))

    def read(self, name: str) -> pd.DataFrame:
        n = self.complete_chunks(name)
        frames = [pd.read_parquet(self.chunk_path(name, i)) for i in range(n)]
        frame = pd.concat(frames, ignore_index=True) if frames else _stage_frame([])
        for col, dtype in _STAGE_COLUMNS.items():
            if col not in frame.columns:  # staged by an older datakit
                frame[col] = pd.Series([None] * len(frame), dtype=dtype)
        return frame

    def remove(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


def _stage_frame(rows: list[dict]) -> pd.DataFrame:
    frame = pd.DataFrame(rows)
    if "phash" in frame.columns:
        # a failed row has no phash: pandas would make the column float64 and round 64-bit hashes
        frame["phash"] = pd.array([r.get("phash") for r in rows], dtype="UInt64")
    for col, dtype in _STAGE_COLUMNS.items():
        if col not in frame.columns:
            frame[col] = pd.Series([None] * len(frame), dtype=dtype if dtype != "bool" else object)
    frame = frame[list(_STAGE_COLUMNS)]
    frame["ok"] = frame["ok"].fillna(False).astype(bool)
    for col, dtype in _STAGE_COLUMNS.items():
        if col != "ok":
            frame[col] = frame[col].astype(dtype)
    return frame


def _str_or_none(v: Any) -> str | None:
    return None if v is None else str(v)


def _process_source(spec: SourceSpec, source, plan: BuildPlan, staging: _Staging, out: Path, executor_factory,
                    batch_size: int, progress: Callable[[int], None] | None) -> tuple[int, int]:
    """Process one source into staged chunks. Returns (processed, reused) item counts."""
    name = spec.name
    done = staging.done(name)
    if done is not None:
        if progress:
            progress(done["items"])
        return 0, done["items"]
    start_chunk = staging.complete_chunks(name)
    start = start_chunk * staging.chunk_size
    if progress and start:
        progress(start)
    staging.source_dir(name).mkdir(parents=True, exist_ok=True)
    fn = functools.partial(process_item, normalizer=plan.normalizer, label_map=spec.label_map,
                           store_root=str(out))
    pending: deque = deque()

    def feed() -> Iterator:
        for seq, item in enumerate(itertools.islice(source.iter_items(), start, None), start=start):
            meta = item.meta or {}
            pending.append({"seq": seq, "source": name, "source_ref": str(item.source_ref),
                            "source_label": _str_or_none(item.label), "source_split": _str_or_none(item.split),
                            "query": _str_or_none(meta.get("query")), "rank": meta.get("rank"),
                            "license": _str_or_none(meta.get("license")),
                            "candidate_id": _str_or_none(meta.get("candidate_id"))})
            yield item

    buffer: list[dict] = []
    chunk = start_chunk
    processed = 0
    executor = executor_factory()
    for result in executor.map(fn, feed(), batch_size=batch_size, progress=progress):
        row = pending.popleft()
        if result.ok:
            row.update(result.value)
        else:
            row.update(_rejection("process", result.reason or "error", result.detail))
        buffer.append(row)
        processed += 1
        if len(buffer) == staging.chunk_size:
            staging.write_chunk(name, chunk, buffer)
            chunk += 1
            buffer = []
    if buffer:
        staging.write_chunk(name, chunk, buffer)
        chunk += 1
    staging.mark_done(name, start + processed, chunk)
    return processed, start


# --------------------------------------------------------------------------- finalize


def _class_order(labels: list[str], categories: dict[str, str]) -> list[str]:
    """The recipe's [categories] order when it lists every class, else natural order ("2" before "10")."""
    present = set(labels)
    if present and present <= set(categories):
        return [c for c in categories if c in present]
    return sorted(present, key=lambda s: (0, int(s), s) if s.lstrip("-").isdigit() else (1, 0, s))


def _group_near_duplicates(recipe: Recipe, hashes: np.ndarray, out: Path,
                           thumbnails: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """Near-duplicate group of each kept image, as the recipe's ``[splits]`` asks.

    ``thumbnails(indices)`` gives the 32x32 uint8 thumbnails of those kept
    images (:meth:`_Chunks.thumbnails`); only images with a candidate partner
    are asked for (pixel check).
    """
    from datakit.dedup import confirmed_duplicate_groups, near_duplicate_groups

    dist = recipe.splits.near_duplicate_distance
    if not len(hashes):
        return np.zeros(0, np.int64)
    if recipe.splits.near_duplicate_verify != "pixels":
        return near_duplicate_groups(hashes, dist)
    return confirmed_duplicate_groups(hashes, dist, thumbnails, min_similarity=recipe.splits.near_duplicate_similarity,
                                      workdir=out / STAGING_DIR)  # the staging folder: removed with the build


def _dedup_stats(recipe: Recipe, dist: int, sizes: np.ndarray, moved: int, exact: int) -> dict:
    """The ``deduplication`` entry of datakit.json (group sizes: images per near-duplicate group)."""
    return {
        "near_duplicates": {
            "max_distance": dist,
            "verify": recipe.splits.near_duplicate_verify,
            "min_similarity": recipe.splits.near_duplicate_similarity,
            "groups_with_several_images": int((sizes > 1).sum()),
            "images_in_such_groups": int(sizes[sizes > 1].sum()),
            "largest_group": int(sizes.max()) if len(sizes) else 0,
            "moved_from_source_split": moved,
        },
        "exact_duplicates": exact,
    }


def _finalize(plan: BuildPlan, staging: _Staging, out: Path) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """Dedupe, group, split. Returns (manifest, rejected, stats)."""

    recipe = plan.recipe
    frames = []
    for spec, _ in plan.sources:
        frame = _chunk_labels(staging.read(spec.name), spec, _keeps_split(spec, recipe))
        _warn_unmapped(spec, *_note_unmapped(frame, spec))
        frames.append(frame)
    rows = pd.concat(frames, ignore_index=True)
    failed = rows[~rows["ok"]]
    ok = rows[rows["ok"]].reset_index(drop=True)
    # exact duplicates: first occurrence (recipe order, then source order) kept
    dup = ok["id"].duplicated(keep="first").to_numpy()
    first_ref = ok[~dup].set_index("id")["source_ref"]
    first_src = ok[~dup].set_index("id")["source"]
    dups = ok[dup]
    dup_rej = pd.DataFrame({
        "id": dups["id"], "source": dups["source"], "source_ref": dups["source_ref"], "stage": "dedup",
        "reason": "duplicate",
        "detail": [f"same content as kept image {i} ({first_src[i]}: {first_ref[i]})" for i in dups["id"]],
    })
    kept = ok[~dup].reset_index(drop=True)
    # near duplicates -> one split per group
    dist = recipe.splits.near_duplicate_distance
    hashes = kept["phash"].to_numpy(dtype=np.uint64)
    chunks, kept_ok = _Chunks.of(plan, staging), np.flatnonzero(~dup)
    groups = _group_near_duplicates(recipe, hashes, out, lambda idx: chunks.thumbnails(kept_ok[idx], out))
    spec_split = recipe.splits
    strategy = spec_split.strategy if spec_split.strategy != "source" else spec_split.fallback
    fixed = kept["fixed"].astype(object).where(kept["fixed"].notna(), None).tolist()
    fractions = (spec_split.train, spec_split.val, spec_split.test)
    curation = None
    if plan.curate is not None:
        kept, curation = _select_by_frequency(plan, kept)
        fixed, fractions = _curated_fixed(recipe.curate, kept["selected"].to_numpy(), fixed, fractions, strategy)
    splits = assign_splits(kept["label"].astype(object).where(kept["label"].notna(), None).tolist(), groups,
                           strategy=strategy, fractions=fractions,
                           per_class=spec_split.per_class, val_per_class=spec_split.val_per_class,
                           seed=spec_split.seed, fixed=fixed)
    kept["split"] = pd.array(splits, dtype="string")
    kept["near_dup_group"] = groups.astype(np.int64)
    cur_rej = None
    if curation is not None:
        kept, cur_rej = _apply_curation(recipe.curate, kept, curation)
        groups = kept["near_dup_group"].to_numpy(dtype=np.int64)
    relabel_rej = relabelling = None
    if plan.relabel is not None:  # after the splits: a relabelled image stays in its split
        from datakit.crowd.relabel import apply_relabel

        kept, relabel_rej, relabelling = apply_relabel(recipe.relabel, plan.relabel, kept)
        groups = kept["near_dup_group"].to_numpy(dtype=np.int64)
    moved = int(((kept["fixed"].notna()) & (kept["fixed"] != kept["split"])).fillna(False).sum())
    sizes = np.bincount(groups) if len(groups) else np.zeros(0, np.int64)
    label_names = recipe.categories
    kept["label_name"] = kept["label"].map(lambda v: label_names.get(v, v) if isinstance(v, str) else None
                                           ).astype("string")
    drop_cols = ["ok", "stage", "reason", "detail", "seq", "fixed", "selected", "curation_reason"]
    if not kept["candidate_id"].notna().any():
        drop_cols.append("candidate_id")  # only candidates sources have one
    manifest = conform(kept.drop(columns=[c for c in drop_cols if c in kept.columns]), MANIFEST_COLUMNS)
    manifest["phash"] = manifest["phash"].astype("uint64")
    rej_cols = ["id", "source", "source_ref", "stage", "reason", "detail"]
    parts = [failed[rej_cols]] + [f[rej_cols] for f in (dup_rej, cur_rej, relabel_rej) if f is not None and len(f)]
    rejected = pd.concat(parts, ignore_index=True) if len(parts) > 1 else failed[rej_cols].reset_index(drop=True)
    rejected = conform(rejected, REJECTED_COLUMNS)
    stats = _dedup_stats(recipe, dist, sizes, moved, int(dup.sum()))
    if curation is not None:
        stats["curation"] = curation
    if relabelling is not None:
        stats["relabel"] = relabelling
    return manifest, rejected, stats


# --------------------------------------------------------------------------- streaming finalize (no [curate])


def _read_chunk(path: Path, columns: list[str] | None = None) -> pd.DataFrame:
    """One staged chunk (all columns, or ``columns``), with columns staged by an older datakit filled null."""
    if columns is None:
        frame = pd.read_parquet(path)
        for col, dtype in _STAGE_COLUMNS.items():
            if col not in frame.columns:
                frame[col] = pd.Series([None] * len(frame), dtype=dtype)
        return frame
    import pyarrow.parquet as pq

    have = set(pq.read_schema(path).names)
    frame = pd.read_parquet(path, columns=[c for c in columns if c in have])
    for col in columns:
        if col not in frame.columns:
            frame[col] = pd.Series([None] * len(frame), dtype=_STAGE_COLUMNS[col])
    return frame


#: The staged columns the first finalize pass needs (the rest is read again only to write the manifest).
_COMPACT_COLUMNS = ["ok", "id", "source_label", "source_split", "phash", "candidate_id"]


def _keeps_split(spec: SourceSpec, recipe: Recipe) -> bool:
    """Whether a source's own train/test split is kept (``keep_split``, else the ``source`` strategy)."""
    return spec.keep_split if spec.keep_split is not None else recipe.splits.strategy == "source"


def _note_unmapped(frame: pd.DataFrame, spec: SourceSpec) -> tuple[int, set[str]]:
    """Images of a staged frame whose label is missing from the label map.

    With ``drop_unmapped`` their detail says they were dropped on purpose;
    otherwise returns their count and labels, for :func:`_warn_unmapped`.
    """
    unmapped = (~frame["ok"]) & (frame["reason"] == "unmapped_label")
    if not unmapped.any():
        return 0, set()
    if spec.drop_unmapped:
        frame.loc[unmapped, "detail"] = "dropped (drop_unmapped = true): " + frame.loc[unmapped, "detail"]
        return 0, set()
    return int(unmapped.sum()), set(frame.loc[unmapped, "source_label"].dropna().astype(str))


def _warn_unmapped(spec: SourceSpec, n: int, labels: set[str]) -> None:
    if n:
        logger.warning("source %r: %d images have labels missing from label_map (%s); they are in "
                       "rejected.parquet (set drop_unmapped = true if this is intended)",
                       spec.name, n, ", ".join(sorted(labels)[:10]))


def _chunk_labels(frame: pd.DataFrame, spec: SourceSpec, keep_split: bool) -> pd.DataFrame:
    """Add ``label`` (after the label map) and ``fixed`` to a staged chunk, as :func:`_finalize` does."""
    lm = spec.label_map
    labels = frame["source_label"].astype(object)
    if lm is not None:
        labels = labels.map(lambda v: lm.get(v) if isinstance(v, str) else None)
    frame["label"] = labels.where(labels.notna(), None).astype("string")
    frame["fixed"] = frame["source_split"] if keep_split else pd.Series([pd.NA] * len(frame), dtype="string")
    return frame


def _codes(values: pd.Series, vocab: dict) -> np.ndarray:
    """Integer code per value (-1 for null), growing ``vocab`` (value -> code)."""
    codes, uniques = pd.factorize(values.astype(object).where(values.notna(), None), use_na_sentinel=True)
    if not len(uniques):
        return np.full(len(values), -1, dtype=np.int32)
    mapping = np.array([vocab.setdefault(str(u), len(vocab)) for u in uniques], dtype=np.int32)
    return np.where(codes >= 0, mapping[np.maximum(codes, 0)], -1).astype(np.int32)


def _id_digest(ids: pd.Series) -> np.ndarray:
    """64-bit digest of each id (equal ids, equal digests; verify candidates against full ids)."""
    return pd.util.hash_array(ids.astype(object).to_numpy(), categorize=False).astype(np.uint64)


class _Chunks:
    """The staged chunks in build order, with the number of ok rows of each (for gathering rows by ok index)."""

    def __init__(self) -> None:
        self.entries: list[tuple[SourceSpec, Path, bool]] = []
        self.ok_counts: list[int] = []

    @classmethod
    def of(cls, plan: BuildPlan, staging: _Staging) -> "_Chunks":
        """Every staged chunk of the plan's sources (reads only their ``ok`` column)."""
        chunks = cls()
        for spec, _ in plan.sources:
            keep = _keeps_split(spec, plan.recipe)
            for i in range(staging.complete_chunks(spec.name)):
                path = staging.chunk_path(spec.name, i)
                chunks.entries.append((spec, path, keep))
                chunks.ok_counts.append(int(_read_chunk(path, ["ok"])["ok"].to_numpy(dtype=bool).sum()))
        return chunks

    def thumbnails(self, ok_indices: np.ndarray, out: Path) -> np.ndarray:
        """The staged thumbnails (uint8, shape (k, 1024)) of the ok rows at sorted ``ok_indices``.

        Rows of a chunk staged without thumbnails (by an older datakit) are made
        from their stored images instead.
        """
        from datakit.dedup import thumbnail_pixels

        result = np.empty((len(ok_indices), _THUMB_BYTES), dtype=np.uint8)
        bounds = np.r_[0, np.cumsum(self.ok_counts)]
        for k, (_, path, _) in enumerate(self.entries):
            lo, hi = np.searchsorted(ok_indices, [bounds[k], bounds[k + 1]])
            if hi <= lo:
                continue
            local = ok_indices[lo:hi] - bounds[k]
            try:
                with open(_Staging.thumbs_path(path), "rb") as fh:
                    if os.fstat(fh.fileno()).st_size != self.ok_counts[k] * _THUMB_BYTES:
                        raise OSError("size does not match the chunk")
                    if len(local) * 16 >= self.ok_counts[k]:  # many rows: one read
                        whole = np.frombuffer(fh.read(), dtype=np.uint8).reshape(-1, _THUMB_BYTES)
                        result[lo:hi] = whole[local]
                        del whole
                    else:
                        fd = fh.fileno()
                        for r, row in enumerate(local.tolist(), start=int(lo)):
                            result[r] = np.frombuffer(os.pread(fd, _THUMB_BYTES, row * _THUMB_BYTES), dtype=np.uint8)
                continue
            except OSError as exc:
                logger.debug("no usable staged thumbnails for %s (%s): reading its images", path, exc)
            frame = _read_chunk(path, ["ok", "path"])
            paths = frame.loc[frame["ok"].to_numpy(dtype=bool), "path"].to_numpy()[local]
            for r, rel in enumerate(paths, start=int(lo)):
                with Image.open(out / rel) as im:
                    result[r] = thumbnail_pixels(np.asarray(im))
        return result

    def gather(self, ok_indices: np.ndarray, columns: list[str]) -> pd.DataFrame:
        """Columns of the ok rows at sorted ``ok_indices`` (reads only the chunks holding them)."""
        bounds = np.r_[0, np.cumsum(self.ok_counts)]
        parts = []
        for k, (_, path, _) in enumerate(self.entries):
            lo, hi = np.searchsorted(ok_indices, [bounds[k], bounds[k + 1]])
            if hi <= lo:
                continue
            frame = _read_chunk(path, ["ok"] + columns)
            frame = frame[frame["ok"].to_numpy(dtype=bool)]
            parts.append(frame.iloc[ok_indices[lo:hi] - bounds[k]][columns])
        if not parts:
            return pd.DataFrame({c: pd.Series([], dtype=_STAGE_COLUMNS[c]) for c in columns})
        return pd.concat(parts, ignore_index=True)


def _nested_counts(key_codes: np.ndarray, key_names: list, split_codes: np.ndarray,
                   split_names: list[str]) -> dict:
    """``{key: {split: n, ..., "total": n}}`` as ``split_counts`` gives it (null key last, as "<NA>")."""
    nk, ns = len(key_names) + 1, len(split_names)
    kc = np.where(key_codes < 0, nk - 1, key_codes)
    table = np.bincount(kc * ns + split_codes, minlength=nk * ns).reshape(nk, ns)
    present = [split_names[j] for j in range(ns) if table[:, j].any()]
    cols = [s for s in SPLIT_ORDER if s in present] + sorted(s for s in present if s not in SPLIT_ORDER)
    col_idx = [split_names.index(c) for c in cols]
    keys = sorted((str(key_names[i]), i) for i in range(nk - 1) if table[i].any())
    if table[nk - 1].any():
        keys.append(("<NA>", nk - 1))
    return {name: {**{c: int(table[i, j]) for c, j in zip(cols, col_idx)}, "total": int(table[i].sum())}
            for name, i in keys}


def _manifest_checksum(path: Path) -> str:
    """:attr:`Dataset.checksum` of a manifest file, read one column and row group at a time."""
    import pyarrow.parquet as pq

    h = hashlib.sha256()
    pf = pq.ParquetFile(path, pre_buffer=False)  # one row group at a time (iter_batches reads ahead)
    for col in ("id", "label", "split"):
        first = True
        for group in range(pf.num_row_groups):
            values = pf.read_row_group(group, columns=[col]).column(0).to_pandas().astype("string").fillna("None")
            if not len(values):
                continue
            h.update((("" if first else "\n") + "\n".join(values)).encode())
            first = False
            del values
    return h.hexdigest()


def _remove_orphans(out: Path, keep: np.ndarray) -> int:
    """Delete stored images no manifest row refers to (left by an earlier recipe), and temporary files.

    ``keep`` holds the kept ids as sorted 64-bit digests (:func:`_id_digest`):
    a file is deleted only when its digest is not among them, so a kept image
    is never deleted.
    """
    removed = 0
    images = out / "images"
    if not images.is_dir():
        return 0
    for sub in images.iterdir():
        if not sub.is_dir():
            continue
        files = list(sub.iterdir())
        stems = [f.stem for f in files]
        digests = _id_digest(pd.Series(stems, dtype=object)) if stems else np.zeros(0, np.uint64)
        pos = np.minimum(np.searchsorted(keep, digests), max(len(keep) - 1, 0))
        known = (keep[pos] == digests) if len(keep) else np.zeros(len(files), bool)
        for f, k in zip(files, known):
            if f.name.startswith(".") or not k:
                f.unlink(missing_ok=True)
                removed += 1
    return removed


def _finalize_streaming(plan: BuildPlan, staging: _Staging, out: Path, writer: DatasetWriter) -> dict:
    """The finalize pass for builds without ``[curate]``, in memory proportional to compact columns.

    Writes ``manifest.parquet`` (chunk by chunk, identical to what :func:`_finalize` gives) and
    ``rejected.parquet``. Returns kept, rejected, stats, classes, keep_digests, counts, data_sha256.
    """

    recipe = plan.recipe
    _release_memory()  # what the per-image pass freed
    chunks = _Chunks()
    label_vocab: dict[str, int] = {}
    fixed_vocab: dict[str, int] = {}
    cols: dict[str, list[np.ndarray]] = {k: [] for k in ("digest", "phash", "label", "fixed", "source", "cid")}
    failed_parts: list[pd.DataFrame] = []
    rej_cols = ["id", "source", "source_ref", "stage", "reason", "detail"]
    for s_code, (spec, _) in enumerate(plan.sources):
        keep = _keeps_split(spec, recipe)
        unmapped_n, unmapped_labels = 0, set()
        for i in range(staging.complete_chunks(spec.name)):
            path = staging.chunk_path(spec.name, i)
            frame = _read_chunk(path, _COMPACT_COLUMNS)
            ok = frame["ok"].to_numpy(dtype=bool)
            if not ok.all():
                frame = _read_chunk(path)  # failed rows go to rejected.parquet whole
            frame = _chunk_labels(frame, spec, keep)
            if not ok.all():
                n, labels = _note_unmapped(frame, spec)
                unmapped_n += n
                unmapped_labels |= labels
                failed_parts.append(frame.loc[~ok, rej_cols])
            good = frame[ok]
            chunks.entries.append((spec, path, keep))
            chunks.ok_counts.append(len(good))
            cols["digest"].append(_id_digest(good["id"]))
            cols["phash"].append(good["phash"].to_numpy(dtype=np.uint64))
            cols["label"].append(_codes(good["label"], label_vocab))
            cols["fixed"].append(_codes(good["fixed"], fixed_vocab).astype(np.int16))
            cols["source"].append(np.full(len(good), s_code, dtype=np.int16))
            cols["cid"].append(good["candidate_id"].notna().to_numpy(dtype=bool))
            del frame, good
        _warn_unmapped(spec, unmapped_n, unmapped_labels)
    arr = {}
    for k in list(cols):  # one column at a time: its chunk list is freed before the next is joined
        parts = cols.pop(k)
        arr[k] = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int32)
        del parts
    _release_memory()
    n_ok = len(arr["digest"])
    # exact duplicates: rows whose 64-bit digest repeats are candidates, checked on their full ids
    dup = np.zeros(n_ok, dtype=bool)
    dup_rej = None
    if n_ok:
        order = np.argsort(arr["digest"], kind="stable")
        sd = arr["digest"][order]
        same = sd[1:] == sd[:-1]
        cand_mask = np.zeros(n_ok, dtype=bool)
        cand_mask[1:] |= same
        cand_mask[:-1] |= same
        cand = np.sort(order[cand_mask])
        del order, sd, same, cand_mask
        if len(cand):
            cf = chunks.gather(cand, ["id", "source", "source_ref"])
            is_dup = cf["id"].duplicated(keep="first").to_numpy()
            dup[cand[is_dup]] = True
            firsts = cf[~is_dup].set_index("id")
            first_ref, first_src = firsts["source_ref"], firsts["source"]
            dups = cf[is_dup]
            dup_rej = pd.DataFrame({
                "id": dups["id"], "source": dups["source"], "source_ref": dups["source_ref"], "stage": "dedup",
                "reason": "duplicate",
                "detail": [f"same content as kept image {i} ({first_src[i]}: {first_ref[i]})" for i in dups["id"]],
            })
    kept_ok = np.flatnonzero(~dup).astype(np.int32 if n_ok < 2**31 else np.int64)
    n_kept = len(kept_ok)
    hashes = arr.pop("phash")[kept_ok].astype(np.uint64)
    # the kept ids' digests are needed again only at the very end (orphan images): they wait on disk
    digests_path = out / STAGING_DIR / "kept-digests.npy"
    np.save(digests_path, np.sort(arr.pop("digest")[kept_ok]))
    dist = recipe.splits.near_duplicate_distance
    _release_memory()
    groups = _group_near_duplicates(recipe, hashes, out, lambda idx: chunks.thumbnails(kept_ok[idx], out))
    groups = np.asarray(groups, dtype=np.int64)
    del hashes
    _release_memory()
    spec_split = recipe.splits
    strategy = spec_split.strategy if spec_split.strategy != "source" else spec_split.fallback
    fractions = (spec_split.train, spec_split.val, spec_split.test)
    assign_splits([], strategy=strategy, fractions=fractions, per_class=spec_split.per_class,
                  val_per_class=spec_split.val_per_class, seed=spec_split.seed)  # validates the options
    label_names = list(label_vocab)
    kept_label = arr["label"][kept_ok]
    kept_fixed = arr["fixed"][kept_ok].astype(np.int64)
    split_codes, split_names = assign_split_codes(
        np.where(kept_label < 0, len(label_names), kept_label), label_names + [UNLABELED_KEY], groups,
        fixed_codes=kept_fixed, fixed_names=list(fixed_vocab), strategy=strategy, fractions=fractions,
        per_class=spec_split.per_class, val_per_class=spec_split.val_per_class, seed=spec_split.seed)
    split_codes = split_codes.astype(np.int8 if len(split_names) < 128 else np.int64)
    _release_memory()
    fixed_as_split = np.array([split_names.index(f) for f in fixed_vocab] + [-1], dtype=np.int64)
    moved = int(((kept_fixed >= 0) & (fixed_as_split[kept_fixed] != split_codes)).sum())
    sizes = np.bincount(groups) if len(groups) else np.zeros(0, np.int64)
    with_cid = bool(arr["cid"][kept_ok].any())
    categories = recipe.categories
    split_arr = np.asarray(split_names, dtype=object)

    def manifest_frames() -> Iterator[pd.DataFrame]:
        bounds = np.r_[0, np.cumsum(chunks.ok_counts)]
        kept_pos = np.cumsum(~dup) - 1  # kept index of each ok row (valid where not dup)
        drop_cols = ["ok", "stage", "reason", "detail", "seq", "fixed", "selected", "curation_reason"]
        if not with_cid:
            drop_cols.append("candidate_id")
        empty = None
        for k, (spec, path, keep) in enumerate(chunks.entries):
            frame = _chunk_labels(_read_chunk(path), spec, keep)
            frame = frame[frame["ok"].to_numpy(dtype=bool)]
            sel = ~dup[bounds[k]:bounds[k + 1]]
            frame = frame[sel].reset_index(drop=True)
            idx = kept_pos[bounds[k]:bounds[k + 1]][sel]
            frame["split"] = pd.array(split_arr[split_codes[idx]].astype(str), dtype="string")
            frame["near_dup_group"] = groups[idx]
            frame["label_name"] = frame["label"].map(
                lambda v: categories.get(v, v) if isinstance(v, str) else None).astype("string")
            part = conform(frame.drop(columns=[c for c in drop_cols if c in frame.columns]), MANIFEST_COLUMNS)
            part["phash"] = part["phash"].astype("uint64")
            if len(part):
                yield part
            elif empty is None:
                empty = part
        if n_kept == 0:
            if empty is None:
                frame = _stage_frame([])
                frame["label"] = pd.Series([], dtype="string")
                frame["fixed"] = pd.Series([], dtype="string")
                frame["split"] = pd.Series([], dtype="string")
                frame["near_dup_group"] = np.zeros(0, np.int64)
                frame["label_name"] = pd.Series([], dtype="string")
                empty = conform(frame.drop(columns=[c for c in drop_cols if c in frame.columns]), MANIFEST_COLUMNS)
                empty["phash"] = empty["phash"].astype("uint64")
            yield empty

    writer.write_manifest(manifest_frames())
    _release_memory()
    parts = failed_parts + ([dup_rej] if dup_rej is not None and len(dup_rej) else [])
    rejected = (pd.concat(parts, ignore_index=True) if parts
                else pd.DataFrame({c: pd.Series([], dtype="string") for c in rej_cols}))
    rejected = conform(rejected, REJECTED_COLUMNS)
    writer.write_rejected(rejected)
    stats = _dedup_stats(recipe, dist, sizes, moved, int(dup.sum()))
    present = np.unique(kept_label[kept_label >= 0])
    classes = _class_order([label_names[c] for c in present], categories)
    source_names = [spec.name for spec, _ in plan.sources]
    split_present = np.bincount(split_codes, minlength=len(split_names)) if n_kept else np.zeros(0, np.int64)
    counts = {
        "kept": int(n_kept),
        "rejected": int(len(rejected)),
        "by_split": {name: int(split_present[j]) for name, j in sorted((split_names[j], j)
                                                                      for j in range(len(split_present))
                                                                      if split_present[j])},
        "by_class": (_nested_counts(kept_label.astype(np.int64), label_names, split_codes, split_names)
                     if n_kept else {}),
        "by_source": (_nested_counts(arr["source"][kept_ok].astype(np.int64), source_names, split_codes,
                                     split_names) if n_kept else {}),
        "rejected_by_reason": {str(k): int(v) for k, v in rejected.groupby("reason").size().items()},
        "rejected_by_source": {f"{s}": {str(r): int(n) for r, n in g.groupby("reason").size().items()}
                               for s, g in rejected.groupby("source")},
    }
    keep_digests = np.load(digests_path)
    digests_path.unlink()
    return {"kept": n_kept, "rejected": rejected, "stats": stats, "classes": classes,
            "keep_digests": keep_digests, "counts": counts,
            "data_sha256": _manifest_checksum(out / "manifest.parquet")}


# --------------------------------------------------------------------------- [curate]


def _task_keys(kept: pd.DataFrame, known: set[str]) -> list[str | None]:
    """Per kept row, the crowd task id its votes are filed under, or None.

    Tried in order: the manifest id (votes on a built dataset), then
    ``<source label>:<candidate id>`` and ``<label>:<candidate id>`` (an image
    found for several synsets is asked about per synset), then the candidate id
    (votes on a candidates directory).
    """
    out = []
    cids = kept["candidate_id"].astype(object).where(kept["candidate_id"].notna(), None).tolist()
    for image_id, source_label, label, cid in zip(kept["id"].astype(str), kept["source_label"].astype(object),
                                                  kept["label"].astype(object), cids):
        tries = [image_id]
        if cid is not None:
            tries += [f"{lab}:{cid}" for lab in (source_label, label) if isinstance(lab, str)] + [str(cid)]
        out.append(next((t for t in tries if t in known), None))
    return out


def _reference_frequencies(files: dict) -> pd.Series | pd.DataFrame:
    """The reference dataset's selection frequencies: per class when its manifest is there, else pooled."""
    from datakit.crowd.frequency import selection_frequency
    from datakit.crowd.tasks import conform_annotations

    frame = pd.read_parquet(files["reference"])
    if {"task", "worker", "label"} <= set(frame.columns):
        freq = selection_frequency(conform_annotations(frame))["selection_frequency"]
    else:
        freq = frame.set_index(frame["item"].astype(str))["selection_frequency"]
    freq = freq.astype("float64").dropna()
    if "reference_manifest" in files:
        labels = pd.read_parquet(files["reference_manifest"], columns=["id", "label"])
        labels = labels.set_index(labels["id"].astype(str))["label"]
        per = pd.DataFrame({"selection_frequency": freq.to_numpy(),
                            "label": pd.Series(freq.index, dtype=object).map(labels).to_numpy()})
        per = per[per["label"].notna()]
        if len(per):
            return per.assign(label=per["label"].astype(str))
    return freq


def _select_by_frequency(plan: BuildPlan, kept: pd.DataFrame) -> tuple[pd.DataFrame, dict]:
    """Fill ``votes``, ``selection_frequency``, ``p_correct`` and choose images (``selected``, ``curation_reason``)."""
    from datakit.crowd.frequency import add_vote_columns, curate_by_frequency
    from datakit.crowd.tasks import NO, YES, conform_annotations

    spec = plan.recipe.curate
    files = plan.curate
    try:
        votes = conform_annotations(pd.read_parquet(files["annotations"]))
    except DatakitError as exc:
        raise RecipeError(f"curate.annotations: {files['annotations']}: {exc}") from None
    consensus = pd.read_parquet(files["consensus"]) if "consensus" in files else None
    known = set(votes["task"].dropna().astype(str))
    if consensus is not None:
        known |= set(consensus["item"].dropna().astype(str))
    keys = _task_keys(kept, known)
    key_to_id: dict[str, str] = {}
    for key, image_id in zip(keys, kept["id"].astype(str)):
        if key is not None:
            key_to_id.setdefault(key, image_id)
    if not key_to_id:
        raise DatakitError(f"None of the {len(known)} crowd tasks in {files['annotations']} matches an image of this "
                           f"build (task ids are matched to the manifest id, the candidate id, or "
                           f"<label>:<candidate id>); are these the votes for this dataset's images?")
    unmatched = len(known - set(key_to_id))
    if unmatched:
        logger.info("curate: %d crowd tasks match no kept image (rejected earlier, or other images)", unmatched)
    v = votes[votes["task"].astype(str).isin(key_to_id)].copy()
    v["task"] = v["task"].astype(str).map(key_to_id)
    # a multiclass answer selects the image when it names the image's class
    row_label = kept.set_index(kept["id"].astype(str))["label"].astype(object)
    lab = v["label"].astype(object)
    other = ~lab.isin([YES, NO]).to_numpy()
    if other.any():
        truth = v["task"].map(row_label).astype(object)
        v.loc[other, "label"] = np.where(lab[other].astype(str).to_numpy() == truth[other].astype(str).to_numpy(),
                                         YES, NO)
    c = None
    if consensus is not None:
        c = consensus[consensus["item"].astype(str).isin(key_to_id)].copy()
        c["item"] = c["item"].astype(str).map(key_to_id)
        c = c.drop_duplicates("item", keep="last")
    counts_ok = c is not None and {"votes", "selection_frequency"} <= set(c.columns)
    filled = add_vote_columns(kept, votes=v if len(v) else None,
                              consensus=c if (len(v) or counts_ok) else None)
    if c is not None and "p_correct" not in filled.columns:
        filled["p_correct"] = kept["id"].astype(str).map(c.set_index("item")["p_positive"]).astype("float64")
    for col, dtype in (("votes", "Int64"), ("selection_frequency", "float64")):
        if col not in filled.columns:
            filled[col] = pd.Series([None] * len(filled), dtype=dtype, index=filled.index)
    reference = _reference_frequencies(files) if spec.strategy == "matched-frequency" else None
    try:
        chosen = curate_by_frequency(filled, spec.strategy, threshold=spec.threshold, per_class=spec.per_class,
                                     reference=reference, bins=spec.bins, seed=spec.seed)
    except ValueError as exc:
        raise RecipeError(f"curate: {exc}") from None
    if not chosen["selected"].any():
        logger.warning("curate: no image was selected for split %r (strategy %r); check the votes and the options",
                       spec.split, spec.strategy)
    unlabeled = (~chosen["selected"]) & chosen["curation_reason"].isna()
    chosen.loc[unlabeled, "curation_reason"] = "unlabeled"
    info = {"strategy": spec.strategy, "split": spec.split, "others": spec.others,
            **({"threshold": spec.threshold} if spec.strategy == "threshold" else {"per_class": spec.per_class}),
            **({"bins": spec.bins, "seed": spec.seed, "reference": files["reference"]}
               if spec.strategy == "matched-frequency" else {}),
            "annotations": files["annotations"], "consensus": files.get("consensus"),
            "inputs_sha256": files["sha256"],
            "votes_used": int(len(v)), "images_with_votes": int(chosen["votes"].notna().sum()),
            "tasks_not_matched": int(unmatched), "candidates": int(len(chosen)),
            "selected": int(chosen["selected"].sum())}
    return chosen, info


def _curated_fixed(spec, selected: np.ndarray, fixed: list, fractions: tuple, strategy: str) -> tuple[list, tuple]:
    """Fixed splits and fractions that send selected images to ``spec.split`` and no other image there."""
    if spec.others == "reject":
        return [spec.split] * len(fixed), fractions
    fixed = [spec.split if s else (None if f == spec.split else f) for s, f in zip(selected, fixed)]
    if strategy == "fractions" and spec.split in SPLIT_ORDER:
        fr = list(fractions)
        fr[SPLIT_ORDER.index(spec.split)] = 0.0
        total = sum(fr)
        if total > 0:
            fr = [f / total for f in fr]
        else:
            fr[next(i for i, name in enumerate(SPLIT_ORDER) if name != spec.split)] = 1.0
        fractions = tuple(fr)
    return fixed, fractions


def _apply_curation(spec, kept: pd.DataFrame, info: dict) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Reject the images not selected that ended up in the curated split; record counts in ``info``."""
    selected = kept["selected"].to_numpy(dtype=bool)
    out_of_place = ~selected & (kept["split"] == spec.split).to_numpy(dtype=bool)
    reason = kept["curation_reason"].astype(object).to_numpy().copy()
    detail = np.empty(len(kept), dtype=object)
    if spec.others == "keep":
        sel_groups = set(kept.loc[selected, "near_dup_group"].tolist())
        near = out_of_place & kept["near_dup_group"].isin(sel_groups).to_numpy()
        for i in np.flatnonzero(out_of_place):
            detail[i] = (f"not selected ({reason[i]}), and split {spec.split!r} holds only selected images"
                         + (": a near-duplicate of a selected image, so it cannot go to another split" if near[i]
                            else ": the split protocol put it there"))
        reason[near] = "near_duplicate_of_selected"
    freq = kept["selection_frequency"].to_numpy(dtype=float, na_value=np.nan)
    votes = kept["votes"].astype("Float64").to_numpy(dtype=float, na_value=np.nan)
    for i in np.flatnonzero(out_of_place):
        how = ("no crowd vote matched this image" if np.isnan(freq[i])
               else f"selection frequency {freq[i]:.3f} from {int(votes[i]) if not np.isnan(votes[i]) else '?'} votes")
        detail[i] = f"{how}; strategy {spec.strategy!r}" + (f"; {detail[i]}" if detail[i] else "")
    dropped = kept[out_of_place]
    rej = pd.DataFrame({"id": dropped["id"].to_numpy(), "source": dropped["source"].to_numpy(),
                        "source_ref": dropped["source_ref"].to_numpy(), "stage": "curate",
                        "reason": reason[out_of_place], "detail": detail[out_of_place]})
    info["rejected"] = int(out_of_place.sum())
    info["rejected_by_reason"] = {str(k): int(n) for k, n in rej.groupby("reason").size().items()}
    info["kept_outside_split"] = int((~selected & ~out_of_place).sum())
    return kept[~out_of_place].reset_index(drop=True), rej


def _counts(manifest: pd.DataFrame, rejected: pd.DataFrame) -> dict:
    def nested(by: str) -> dict:
        t = split_counts(manifest, by)
        return {str(r[by]): {k: int(v) for k, v in r.items() if k != by} for _, r in t.iterrows()}

    return {
        "kept": int(len(manifest)),
        "rejected": int(len(rejected)),
        "by_split": {str(k): int(v) for k, v in manifest.groupby("split").size().items()},
        "by_class": nested("label") if len(manifest) else {},
        "by_source": nested("source") if len(manifest) else {},
        "rejected_by_reason": {str(k): int(v) for k, v in rejected.groupby("reason").size().items()},
        "rejected_by_source": {f"{s}": {str(r): int(n) for r, n in g.groupby("reason").size().items()}
                               for s, g in rejected.groupby("source")},
    }


def _summary_frame(plan: BuildPlan, info: dict) -> pd.DataFrame:
    rows = []
    by_source = info["counts"]["by_source"]
    rej = info["counts"]["rejected_by_source"]
    splits = list(info["counts"]["by_split"])
    splits = [s for s in SPLIT_ORDER if s in splits] + sorted(s for s in splits if s not in SPLIT_ORDER)
    for src in info["sources"]:
        name = src["name"]
        row = {"source": name, "status": src["status"], "items": src.get("items", 0),
               "kept": by_source.get(name, {}).get("total", 0),
               "rejected": sum(rej.get(name, {}).values())}
        for s in splits:
            row[s] = by_source.get(name, {}).get(s, 0)
        rows.append(row)
    total = {"source": "TOTAL", "status": "", "items": sum(r["items"] for r in rows),
             "kept": sum(r["kept"] for r in rows), "rejected": sum(r["rejected"] for r in rows)}
    for s in splits:
        total[s] = sum(r[s] for r in rows)
    rows.append(total)
    return pd.DataFrame(rows)


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _read_info(out: Path) -> dict | None:
    path = out / "datakit.json"
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def build_dataset(recipe: str | os.PathLike | Recipe, out: str | os.PathLike, *,
                  data_root: str | os.PathLike | None = None, workers: int | None = None,
                  scheduler: str | None = None, progress: Callable[[int], None] | None = None,
                  chunk_size: int = 4096, batch_size: int = 256,
                  on_total: Callable[[int], None] | None = None) -> BuildResult:
    """Build (or resume, or confirm) the dataset a recipe describes.

    Parameters
    ----------
    recipe : path or Recipe
        A TOML recipe file, or a :class:`~datakit.recipe.Recipe`.
    out : path
        The dataset directory (created).
    data_root : path, optional
        Where relative source paths are looked up; overrides the recipe's
        ``data_root``, which overrides ``$DATAKIT_DATA``.
    workers : int, optional
        Local worker processes (None: one per core; 0 or 1: this process).
    scheduler : str, optional
        A Dask scheduler address or ``"local-cluster"`` (see :func:`datakit.parallel.get_executor`).
    progress : callable, optional
        Called with the number of items just finished (for a progress bar).
    chunk_size : int
        Items per staged chunk: the unit of resumption.
    batch_size : int
        Items per executor batch.
    on_total : callable, optional
        Called once with the total number of items to go through, before any work.

    Returns
    -------
    BuildResult

    Raises
    ------
    RecipeError
        Before any work, for a malformed recipe or a missing non-optional source.

    Examples
    --------
    >>> from datakit.build import build_dataset                    # doctest: +SKIP
    >>> r = build_dataset("recipes/digits.toml", "demo/digits", workers=2)  # doctest: +SKIP
    >>> r.kept, r.rejected, r.skipped_sources                    # doctest: +SKIP
    """
    t0 = time.perf_counter()
    if not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive int, got {chunk_size!r}")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    plan = plan_build(recipe, data_root=data_root)
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise DatakitError(f"--out {out} exists and is not a directory.")
    previous = _read_info(out)
    if (previous is not None and previous.get("complete") and previous.get("build_key") == plan.key
            and (out / "manifest.parquet").exists()):
        if (out / STAGING_DIR).exists() and plan.curate is None and plan.relabel is None:
            shutil.rmtree(out / STAGING_DIR, ignore_errors=True)
        logger.info("%s is up to date with its recipe: nothing to do", out)
        return BuildResult(out=out, kept=previous["counts"]["kept"], rejected=previous["counts"]["rejected"],
                           skipped_sources=dict(plan.skipped), seconds=time.perf_counter() - t0,
                           up_to_date=True, summary=_summary_frame(plan, previous), info=previous)
    out.mkdir(parents=True, exist_ok=True)
    with _build_lock(out):
        return _run_build(plan, out, t0, workers=workers, scheduler=scheduler, progress=progress,
                          chunk_size=chunk_size, batch_size=batch_size, on_total=on_total)


@contextlib.contextmanager
def _build_lock(out: Path) -> Iterator[None]:
    """One build at a time per output directory (the lock dies with its process, even on SIGKILL)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield
        return
    with open(out / ".build.lock", "a+") as fh:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise DatakitError(f"Another build is writing to {out} right now; wait for it to finish.") from None
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def _run_build(plan: BuildPlan, out: Path, t0: float, *, workers, scheduler, progress, chunk_size, batch_size,
               on_total) -> BuildResult:
    staging = _Staging(out, plan.staging_key, chunk_size)
    lengths = {}
    for spec, source in plan.sources:
        done = staging.done(spec.name)
        try:
            lengths[spec.name] = done["items"] if done else len(source)
        except TypeError:
            lengths[spec.name] = None
    if on_total is not None and all(v is not None for v in lengths.values()):
        on_total(int(sum(lengths.values())))

    executor = None

    def executor_factory():
        nonlocal executor
        if executor is None:
            from datakit.parallel import get_executor

            executor = get_executor(workers, scheduler)
        return executor

    processed = reused = 0
    per_source = {}
    t_proc = time.perf_counter()
    try:
        for spec, source in plan.sources:
            p, r = _process_source(spec, source, plan, staging, out, executor_factory, batch_size, progress)
            processed += p
            reused += r
            per_source[spec.name] = p + r
    finally:
        if executor is not None:
            executor.close()
    t_final = time.perf_counter()
    process_seconds = t_final - t_proc

    writer = DatasetWriter(out)
    if plan.curate is None and plan.relabel is None:
        final = _finalize_streaming(plan, staging, out, writer)
        n_kept, rejected, stats, classes = final["kept"], final["rejected"], final["stats"], final["classes"]
        counts, data_sha256 = final["counts"], final["data_sha256"]
        writer.write_categories(pd.DataFrame({"label": classes,
                                              "name": [plan.recipe.categories.get(c, c) for c in classes]}))
        removed = _remove_orphans(out, final["keep_digests"])
        del final
    else:
        from datakit.store.dataset import Dataset

        manifest, rejected, stats = _finalize(plan, staging, out)
        step = 16384
        writer.write_manifest(manifest.iloc[i:i + step] for i in range(0, max(len(manifest), 1), step))
        writer.write_rejected(rejected)
        classes = _class_order([l for l in manifest["label"].dropna().astype(str).unique()],
                               plan.recipe.categories)
        writer.write_categories(pd.DataFrame({"label": classes,
                                              "name": [plan.recipe.categories.get(c, c) for c in classes]}))
        keep_ids = set(manifest["id"].astype(str))
        # images [curate] did not select ([relabel] dropped) stay stored: new votes re-run without re-reading sources
        keep_ids |= set(rejected.loc[rejected["stage"].isin(["curate", "relabel"]), "id"].dropna().astype(str))
        removed = _remove_orphans(out, np.sort(_id_digest(pd.Series(list(keep_ids), dtype=object))))
        n_kept, counts, data_sha256 = len(manifest), _counts(manifest, rejected), Dataset(out).checksum
        del manifest
    recipe = plan.recipe
    sources_info = []
    for spec in recipe.sources:
        entry = {"name": spec.name, "kind": spec.kind, "optional": spec.optional, "options": spec.options,
                 "label_map": spec.label_map}
        if spec.fallback_for is not None:
            entry["fallback_for"] = spec.fallback_for
        if spec.name in plan.skipped:
            entry.update(status="skipped", reason=plan.skipped[spec.name], items=0)
        elif spec.name in plan.unused:
            entry.update(status="unused", reason=plan.unused[spec.name], items=0)
        else:
            entry.update(status="used", items=int(per_source.get(spec.name, 0)))
        sources_info.append(entry)
    finalize_seconds = time.perf_counter() - t_final
    total_seconds = time.perf_counter() - t0
    info = {
        "name": recipe.name,
        "description": recipe.description,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "complete": True,
        "recipe": recipe.text,
        "recipe_path": None if recipe.path is None else str(recipe.path),
        "recipe_sha256": recipe.sha256,
        "build_key": plan.key,
        "data_root": None if plan.data_root is None else str(plan.data_root),
        "versions": versions(),
        "sources": sources_info,
        "skipped_sources": dict(plan.skipped),
        "normalize": {"style": recipe.normalize.style, "options": recipe.normalize.options},
        "splits": dataclasses.asdict(recipe.splits),
        "classes": classes,
        "categories": {c: recipe.categories.get(c, c) for c in classes},
        "counts": counts,
        "deduplication": {k: v for k, v in stats.items() if k not in ("curation", "relabel")},
        **({"curation": stats["curation"]} if "curation" in stats else {}),
        **({"relabel": stats["relabel"]} if "relabel" in stats else {}),
        "checksums": {"manifest_sha256": _file_sha256(out / "manifest.parquet"),
                      "rejected_sha256": _file_sha256(out / "rejected.parquet"),
                      "data_sha256": data_sha256},
        "timings": {"total_seconds": round(total_seconds, 3), "process_seconds": round(process_seconds, 3),
                    "finalize_seconds": round(finalize_seconds, 3), "processed_items": processed,
                    "reused_items": reused, "workers": workers, "scheduler": scheduler,
                    "images_per_second": round(processed / process_seconds, 1) if processed and process_seconds else None},
        "orphan_images_removed": removed,
    }
    from datakit.store.datasheet import render_datasheet

    writer.write_datasheet(render_datasheet(info))
    if hasattr(os, "sync"):
        os.sync()
    writer.write_info(info)  # last: marks the build complete
    if plan.curate is None and plan.relabel is None:
        staging.remove()
    else:
        logger.info("keeping %s: new votes re-run only the finalize pass", staging.dir)
    for cache in (out / ".cache",):
        shutil.rmtree(cache, ignore_errors=True)
    return BuildResult(out=out, kept=n_kept, rejected=len(rejected), skipped_sources=dict(plan.skipped),
                       seconds=time.perf_counter() - t0, resumed=reused > 0, up_to_date=False,
                       processed=processed, reused=reused, summary=_summary_frame(plan, info), info=info)
