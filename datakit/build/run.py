"""``build_dataset``: plan, lock, process, finalize, write ``datakit.json`` last."""
from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import pandas as pd

from datakit.store.manifest import file_sha256 as _file_sha256
from datakit.build.finalize import _finalize
from datakit.build.labels import _class_order
from datakit.build.orphans import _id_digest, _remove_orphans
from datakit.build.plan import BuildPlan, plan_build
from datakit.build.process import _process_source
from datakit.build.staging import STAGING_DIR, _Staging
from datakit.build.streaming import _finalize_streaming
from datakit.build.summary import _counts, _summary_frame
from datakit.errors import DatakitError
from datakit.recipe import Recipe
from datakit.store.writer import DatasetWriter, versions

__all__ = ["BuildResult", "_read_info", "build_dataset", "_build_lock", "_run_build"]

logger = logging.getLogger(__name__)


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
    # the near-duplicate search runs on as many threads as the build had local workers (they are idle now)
    search_jobs = -1 if workers is None and scheduler is None else max(1, int(workers or 1))
    if plan.curate is None and plan.relabel is None:
        final = _finalize_streaming(plan, staging, out, writer, n_jobs=search_jobs)
        n_kept, rejected, stats, classes = final["kept"], final["rejected"], final["stats"], final["classes"]
        counts, data_sha256 = final["counts"], final["data_sha256"]
        writer.write_categories(pd.DataFrame({"label": classes,
                                              "name": [plan.recipe.categories.get(c, c) for c in classes]}))
        removed = _remove_orphans(out, final["keep_digests"])
        del final
    else:
        from datakit.store.dataset import Dataset

        manifest, rejected, stats = _finalize(plan, staging, out, n_jobs=search_jobs)
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
