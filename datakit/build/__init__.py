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

Modules, one stage a file: :mod:`~datakit.build.plan` (recipe -> :class:`BuildPlan`),
:mod:`~datakit.build.process` (the per-image pass), :mod:`~datakit.build.staging`
(the ``.build`` chunks), :mod:`~datakit.build.streaming` and
:mod:`~datakit.build.finalize` (the finalize pass without / with ``[curate]`` or
``[relabel]``), :mod:`~datakit.build.curate`, :mod:`~datakit.build.labels`,
:mod:`~datakit.build.summary`,
:mod:`~datakit.build.orphans`, and :mod:`~datakit.build.run` (``build_dataset``).
See ``docs/architecture.md``.
"""
from datakit.build.plan import BuildPlan, plan_build
from datakit.build.process import process_item
from datakit.build.run import BuildResult, build_dataset
from datakit.build.staging import STAGING_DIR

__all__ = ["BuildResult", "BuildPlan", "build_dataset", "plan_build", "process_item", "STAGING_DIR"]
