"""``datakit candidates``: collect candidate images for categories from a search backend."""
from __future__ import annotations

from pathlib import Path

import click

from datakit.cli._options import emit_table, format_option, progress_bar, quiet_option, scheduler_option

__all__ = ["candidates"]


@click.command(help="""Collect candidate images for CATEGORIES from a search backend.

CATEGORIES is a categories.csv (from `datakit synsets`) or a list of wnids.
Each category is expanded into queries (lemmas, lemma + parent word,
translations), searched, and the results are downloaded safely into DIR's
content-addressed store. Writes DIR/candidates.parquet (synset, query,
expansion, backend, rank, source_ref, license, attribution, id, phash, ...),
DIR/rejected.parquet (every result not kept, with its reason) and
DIR/synsets.csv (per category; categories without candidates are listed).
Re-running the same command resumes an interrupted or failed run.

\b
SOURCE is one of:
  local:POOL_DIR        a local image pool (indexed on first use)
  openverse             api.openverse.org (no key)
  wikimedia             Wikimedia Commons (no key)
  json-http:CONFIG      any JSON API described by a TOML config

\b
Example:
  datakit candidates categories.csv --source local:demo/fashion_pool --per-synset 500 --out demo/fashion_candidates
""")
@click.argument("categories", type=click.Path(exists=True, dir_okay=False))
@click.option("--source", "source", required=True, metavar="SPEC",
              help="Backend: local:POOL_DIR, openverse, wikimedia or json-http:CONFIG.")
@click.option("--out", type=click.Path(file_okay=False), required=True, help="Output directory (re-use to resume).")
@click.option("--per-synset", type=click.IntRange(min=1), default=100, show_default=True,
              help="Distinct results to fetch per category.")
@click.option("--per-query", type=click.IntRange(min=1), default=None,
              help="Results asked of each query (default: --per-synset).")
@click.option("--queries", "queries_file", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Use this queries.csv (from `datakit queries`, possibly edited) instead of expanding.")
@click.option("--no-parent", is_flag=True, help="Do not add 'lemma + parent word' queries.")
@click.option("--lang", "langs", multiple=True,
              help="OMW language for translated queries (repeatable; default cmn, spa, nld, ita; skipped with a "
                   "note when no Open Multilingual Wordnet is installed).")
@click.option("--no-translations", is_flag=True, help="Do not add translated queries.")
@click.option("--match", "match", type=click.Choice(["all", "any"]), default="all", show_default=True,
              help="local backend: results must contain all query words, or any.")
@click.option("--allow-private", is_flag=True,
              help="Allow downloads from loopback/private/link-local addresses (refused by default).")
@click.option("--max-bytes", type=click.IntRange(min=1), default=20 * 1024 * 1024, show_default=True,
              help="Largest file accepted.")
@click.option("--min-size", type=click.IntRange(min=0), default=16, show_default=True,
              help="Smallest width and height accepted, pixels.")
@click.option("--timeout", type=click.FloatRange(min=0.1), default=20.0, show_default=True,
              help="Seconds per network operation.")
@click.option("--workers", type=click.IntRange(min=0), default=8, show_default=True,
              help="Concurrent downloads (threads).")
@click.option("--min-interval", type=click.FloatRange(min=0), default=1.0, show_default=True,
              help="HTTP backends: seconds between API requests (rate limit).")
@click.option("--retries", type=click.IntRange(min=0), default=4, show_default=True,
              help="HTTP backends: retries on 429/5xx/connection errors (exponential backoff, Retry-After honoured).")
@click.option("--cache-dir", type=click.Path(file_okay=False), default=None,
              help="HTTP backends: response cache (default DIR/.http-cache).")
@scheduler_option
@quiet_option
@format_option
def candidates(categories, source, out, per_synset, per_query, queries_file, no_parent, langs, no_translations,
               match, allow_private,
               max_bytes, min_size, timeout, workers, min_interval, retries, cache_dir, scheduler, quiet, fmt):
    import pandas as pd

    from datakit.errors import DatakitError
    from datakit.sources.candidates import collect_candidates
    from datakit.sources.download import DownloadPolicy
    from datakit.sources.search import get_backend
    from datakit.taxonomy.expand import DEFAULT_LANGS
    from datakit.taxonomy.select import read_categories

    kind = source.partition(":")[0]
    options = {"mode": match} if kind == "local" else {
        "cache_dir": cache_dir or str(Path(out) / ".http-cache"), "min_interval": min_interval, "timeout": timeout,
        "max_retries": retries}
    backend = get_backend(source, **options)
    frame = read_categories(categories)
    queries = pd.read_csv(queries_file, dtype=str) if queries_file else None
    policy = DownloadPolicy(allow_private=allow_private, timeout=timeout, max_bytes=max_bytes, min_width=min_size,
                            min_height=min_size)
    with progress_bar(None, "fetching", quiet) as bar:
        run = collect_candidates(frame, backend, out, per_synset=per_synset, per_query=per_query, queries=queries,
                                 parent=not no_parent,
                                 langs=None if no_translations else (list(langs) or DEFAULT_LANGS),
                                 policy=policy, workers=workers, scheduler=scheduler,
                                 progress=bar, on_total=bar.set_total)
    for note in run.notes:
        click.echo(f"note: {note}", err=True)
    emit_table(run.summary, fmt)
    c = run.candidates
    click.echo(f"{len(c)} candidates ({c['id'].nunique()} unique images, {int(c['ambiguous'].sum())} rows ambiguous), "
               f"{len(run.rejected)} rejected; written to {out}", err=True)
    if run.failure:
        raise DatakitError(f"{run.failure}\nEverything fetched so far is in {out}; run the same command again "
                           "to resume.")
