"""``datakit index``: build and search the local image-pool index (SQLite FTS5)."""
from __future__ import annotations

import click
import pandas as pd

from datakit.cli._options import emit_table, format_option, progress_bar, quiet_option

__all__ = ["index"]


@click.group(help="""Build and search a local image-pool index (the `local` search backend).

The index (SQLite FTS5) covers file names, sidecar .txt/.json captions and
tags, and EXIF ImageDescription / XP keywords of every image under POOL_DIR.
""")
def index() -> None:
    pass


@index.command("build", help="""Index the images under POOL_DIR (incremental: unchanged files are skipped).

\b
Example:
  datakit index build demo/fashion_pool
""")
@click.argument("pool_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--index", "index_path", type=click.Path(dir_okay=False), default=None,
              help="Index file (default: POOL_DIR/.datakit-index.sqlite).")
@quiet_option
def build(pool_dir: str, index_path: str | None, quiet: bool) -> None:
    from datakit.sources.search.local import PoolIndex

    idx = PoolIndex(pool_dir, index_path)
    with progress_bar(None, "indexing", quiet, unit="file") as bar:
        counts = idx.build(progress=bar)
    click.echo(f"indexed {counts['indexed']}, unchanged {counts['unchanged']}, removed {counts['removed']}; "
               f"{counts['total']} images in {idx.index_path}")


@index.command("search", help="""Ranked keyword search (bm25) in POOL_DIR's index.

\b
Example:
  datakit index search demo/fashion_pool "ankle boot" --limit 5
""")
@click.argument("pool_dir", type=click.Path(exists=True, file_okay=False))
@click.argument("query")
@click.option("--limit", type=click.IntRange(min=1), default=20, show_default=True, help="Results to show.")
@click.option("--mode", type=click.Choice(["all", "any"]), default="all", show_default=True,
              help="Whether a result must contain every query word.")
@click.option("--index", "index_path", type=click.Path(dir_okay=False), default=None,
              help="Index file (default: POOL_DIR/.datakit-index.sqlite).")
@format_option
def search(pool_dir: str, query: str, limit: int, mode: str, index_path: str | None, fmt: str) -> None:
    from pathlib import Path

    from datakit.sources.search.local import PoolIndex

    idx = PoolIndex(pool_dir, index_path)
    results = idx.search(query, limit=limit, mode=mode)
    frame = pd.DataFrame([{"rank": r.rank, "score": round(r.meta["score"], 3),
                           "path": str(Path(r.ref).relative_to(idx.pool)), "license": r.license}
                          for r in results], columns=["rank", "score", "path", "license"])
    if frame.empty and fmt == "table":
        click.echo(f"no results for {query!r}", err=True)
        return
    emit_table(frame, fmt)
