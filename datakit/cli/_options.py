"""Options and output helpers shared by the commands."""
from __future__ import annotations

import json
import sys
from typing import Callable, Iterable

import click
import pandas as pd

__all__ = ["format_option", "quiet_option", "workers_option", "scheduler_option", "emit_table", "progress_bar"]

format_option = click.option(
    "--format", "fmt", type=click.Choice(["table", "json", "csv"]), default="table", show_default=True,
    help="Output format for results on stdout.",
)
quiet_option = click.option("-q", "--quiet", is_flag=True, help="No progress bar on stderr.")
workers_option = click.option(
    "--workers", type=click.IntRange(min=0), default=None,
    help="Local worker processes (default: one per core; 0 runs in this process).",
)
def _check_scheduler(ctx, param, value):
    from datakit.errors import DatakitError
    from datakit.parallel import check_scheduler

    try:
        check_scheduler(value)
    except DatakitError as exc:
        raise click.BadParameter(str(exc)) from None
    return value


scheduler_option = click.option(
    "--scheduler", default=None, metavar="ADDR", callback=_check_scheduler,
    help="Run the per-image work on a Dask cluster: tcp://HOST:PORT, or 'local-cluster' to start one "
         "here (127.0.0.1, --workers processes). Needs `pip install datakit[dask]`.",
)


def emit_table(df: pd.DataFrame, fmt: str = "table") -> None:
    """Write ``df`` to stdout as an aligned table, JSON records or CSV."""
    if fmt == "json":
        click.echo(json.dumps(json.loads(df.to_json(orient="records")), indent=2))
    elif fmt == "csv":
        click.echo(df.to_csv(index=False), nl=False)
    else:
        click.echo(df.to_string(index=False))


class progress_bar:
    """A tqdm bar on stderr (disabled by ``quiet``); call it with a count to advance."""

    def __init__(self, total: int | None, desc: str, quiet: bool = False, unit: str = "img") -> None:
        from tqdm import tqdm

        self._bar = tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, disable=quiet,
                         dynamic_ncols=True, leave=False)

    def __call__(self, n: int = 1) -> None:
        self._bar.update(n)

    def set_total(self, total: int) -> None:
        self._bar.total = total
        self._bar.refresh()

    def set_description(self, desc: str) -> None:
        """Change the bar's label (e.g. the step now running)."""
        self._bar.set_description(desc)

    def close(self) -> None:
        self._bar.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
