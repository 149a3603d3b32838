"""The ``datakit`` command line: a click group, one module per command.

Commands are imported lazily, so ``datakit --help`` stays fast and a command
whose optional dependencies are missing does not break the others.
"""
from __future__ import annotations

import importlib
import logging

import click

from datakit import __version__
from datakit.errors import DatakitError

__all__ = ["main", "cli", "COMMANDS"]

#: command name -> (module under datakit.cli, attribute, one-line help)
COMMANDS: dict[str, tuple[str, str, str]] = {
    "build": ("build", "build", "Build a dataset directory from a TOML recipe."),
    "info": ("info", "info", "Counts of a dataset by split, class and source."),
    "export": ("export", "export", "Export a dataset to imagefolder, idx, webdataset, ..."),
    "audit": ("audit", "audit", "Audit one or more datasets for bias; write a report."),
    "train": ("train", "train", "Train a conv net on a dataset."),
    "evaluate": ("train", "evaluate", "Evaluate a checkpoint on a dataset."),
    "summary": ("summary", "summary", "Units, connections and weights of a model, per layer."),
    "wordnet": ("wordnet", "wordnet", "WordNet provisioning (status, path)."),
    "synsets": ("synsets", "synsets", "Choose categories from WordNet."),
    "queries": ("synsets", "queries", "Expand categories into search queries."),
    "index": ("index", "index", "Build and search a local image-pool index."),
    "candidates": ("candidates", "candidates", "Collect candidate images for categories."),
    "annotate": ("annotate", "annotate", "Serve annotation tasks to an in-house crowd."),
    "crowd": ("crowd", "crowd", "Crowd tasks, aggregation, agreement, consensus, simulation."),
}


class LazyGroup(click.Group):
    def list_commands(self, ctx):
        return sorted(COMMANDS)

    def get_command(self, ctx, name):
        if name not in COMMANDS:
            return None
        module, attr, _ = COMMANDS[name]
        try:
            mod = importlib.import_module(f"datakit.cli.{module}")
        except ModuleNotFoundError as exc:
            if exc.name and exc.name.startswith("datakit.cli"):
                return None
            raise
        return getattr(mod, attr)

    def format_commands(self, ctx, formatter):
        rows = [(name, COMMANDS[name][2]) for name in self.list_commands(ctx)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except DatakitError as exc:
            raise click.ClickException(str(exc)) from None


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="datakit")
@click.option("-v", "--verbose", count=True, help="More log output on stderr (-vv for debug).")
def cli(verbose: int) -> None:
    """datakit: build image-classification datasets the way the classic
    benchmarks were built, and audit them for dataset bias."""
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    from datakit._memory import use_system_allocator

    use_system_allocator()  # freed Arrow buffers go back to the OS (datakit._memory)


def main() -> None:
    cli(prog_name="datakit")
