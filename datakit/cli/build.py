"""``datakit build RECIPE``: build a dataset directory from a TOML recipe."""
from __future__ import annotations

import click

from datakit.cli._options import emit_table, progress_bar, quiet_option, scheduler_option, workers_option

__all__ = ["build"]


class _LazyBar:
    """A progress bar that appears only once there is work (not for an up-to-date dataset)."""

    def __init__(self, desc: str, quiet: bool) -> None:
        self.desc, self.quiet, self.bar = desc, quiet, None

    def set_total(self, total: int) -> None:
        if self.bar is None:
            self.bar = progress_bar(total, desc=self.desc, quiet=self.quiet)
        else:
            self.bar.set_total(total)

    def __call__(self, n: int = 1) -> None:
        if self.bar is None:
            self.bar = progress_bar(None, desc=self.desc, quiet=self.quiet)
        self.bar(n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


@click.command(help="""Build a dataset directory from a TOML recipe.

Reads the recipe's sources, normalizes every image, drops exact duplicates,
keeps near-duplicates in one split, assigns splits and writes the dataset
directory (manifest.parquet, rejected.parquet, images/, DATASHEET.md,
datakit.json). A progress bar goes to stderr (--quiet turns it off); a summary
table goes to stdout. Re-running a finished build does no work; an interrupted
build resumes from its last complete chunk.

\b
Example:
  datakit build recipes/digits.toml --out demo/digits --data-root ../shared/data
""")
@click.argument("recipe", type=click.Path(dir_okay=False))
@click.option("--out", "out", type=click.Path(file_okay=False), default=None,
              help="Dataset directory to write (default: ./<recipe name>).")
@click.option("--data-root", type=click.Path(file_okay=False), default=None,
              help="Folder relative source paths are read from (overrides the recipe's data_root "
                   "and $DATAKIT_DATA).")
@workers_option
@scheduler_option
@click.option("--chunk-size", type=click.IntRange(min=1), default=4096, show_default=True,
              help="Items per staged chunk (the unit an interrupted build resumes from).")
@quiet_option
def build(recipe, out, data_root, workers, scheduler, chunk_size, quiet):
    from datakit.build import build_dataset
    from datakit.recipe import load_recipe

    plan_recipe = load_recipe(recipe, data_root=data_root)
    if out is None:
        out = plan_recipe.name
    bar = _LazyBar(f"build {plan_recipe.name}", quiet)
    try:
        result = build_dataset(plan_recipe, out, workers=workers, scheduler=scheduler, progress=bar,
                               chunk_size=chunk_size, on_total=bar.set_total)
    finally:
        bar.close()
    if result.up_to_date:
        click.echo(f"{result.out} is up to date with {recipe} (nothing to do).")
    else:
        how = f"resumed: {result.reused} items from staged chunks, {result.processed} processed" if result.resumed \
            else f"{result.processed} items processed"
        click.echo(f"Built {result.out} in {result.seconds:.1f} s ({how}).")
    summary = result.summary
    if "status" in summary:  # fallback sources that were not needed are listed in datakit.json only
        summary = summary[summary["status"] != "unused"]
    emit_table(summary)
    for name, reason in result.skipped_sources.items():
        click.echo(f"note: source {name!r} skipped: {reason}")
    click.echo(f"{result.kept} images kept, {result.rejected} rejected (see {result.out}/rejected.parquet); "
               f"datasheet: {result.out}/DATASHEET.md")
    rel = (result.info or {}).get("relabel")
    if rel:
        click.echo(f"relabel: {rel['flagged_in_build']} re-annotated images: {rel['relabelled']} relabelled, "
                   f"{rel['confirmed']} confirmed, {rel['dropped']} dropped, {rel['unresolved']} unresolved "
                   f"({rel['unresolved_policy']})")
