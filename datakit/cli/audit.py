"""``datakit audit``: audit datasets for bias and write a report."""
from __future__ import annotations

import click

from datakit.cli._options import progress_bar, quiet_option, scheduler_option, workers_option

__all__ = ["audit"]


def _split_formats(ctx, param, value):
    formats = []
    for item in value or ("html,json",):
        for fmt in item.split(","):
            fmt = fmt.strip().lower()
            if fmt == "markdown":
                fmt = "md"
            if fmt not in ("html", "json", "md"):
                raise click.BadParameter(f"Unknown format {fmt!r}. Valid values are {{html, json, md}}.")
            if fmt not in formats:
                formats.append(fmt)
    return formats


def _list_audits() -> None:
    from audits import get_audit, list_audits

    for name in list_audits():
        doc = (get_audit(name).__doc__ or "").strip().splitlines()
        click.echo(f"{name:24s} {doc[0] if doc else ''}")


def _list_features() -> None:
    from datakit.features import list_features
    from datakit.features.base import FEATURES

    for name in list_features():
        doc = (FEATURES.get(name).__doc__ or "").strip().splitlines()
        click.echo(f"{name:12s} {doc[0] if doc else ''}")


@click.command("audit")
@click.argument("datasets", nargs=-1, type=click.Path(exists=True, file_okay=False))
@click.option("--audits", "audit_names", default=None, metavar="A,B",
              help="Audits to run, comma-separated (default: all; those that do not apply are skipped with the "
                   "reason). See --list.")
@click.option("--out", "out", type=click.Path(file_okay=False), default="audit-report", show_default=True,
              help="Folder for report.html / report.json / report.md.")
@click.option("--format", "formats", multiple=True, callback=_split_formats, metavar="html|json|md",
              help="Report files to write; repeatable or comma-separated  [default: html,json].")
@click.option("--fail-on", "fail_on", multiple=True, metavar="EXPR",
              help="Exit with status 1 when a condition holds, e.g. 'name_that_dataset.accuracy>0.9' "
                   "(operators > >= < <= == !=; repeatable).")
@click.option("--option", "-o", "option_specs", multiple=True, metavar="AUDIT.KEY=VALUE",
              help="An audit option, e.g. name_that_dataset.n_per_dataset=500 (repeatable).")
@click.option("--map", "map_specs", multiple=True, metavar="DATASET:LABEL=SHARED",
              help="Class correspondence between datasets, e.g. imagenette_subset:n02102040=dog,n03417042=truck "
                   "(repeatable).")
@click.option("--group-by", type=click.Choice(["auto", "dataset", "source"]), default=None,
              help="Compare datasets, or the sources (manifest `source` column) within them "
                   "(default: each audit's own; auto = sources when one dataset has several).")
@click.option("--features", "features", default=None, metavar="A,B",
              help="Feature spaces for the probes, map and semantic duplicates (default: each audit's own; "
                   "hog, gist, color_hist, tiny, learned, pretrained). See --list-features.")
@click.option("--weights", "weights", type=click.Path(exists=True, dir_okay=False), default=None,
              help="A torchvision weights file on disk for the `pretrained` feature space (loaded with "
                   "weights_only=True; nothing is downloaded).")
@click.option("--list-features", "list_features_only", is_flag=True, help="List the feature spaces and exit.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed for every sample and probe.")
@click.option("--list", "list_only", is_flag=True, help="List the registered audits and exit.")
@workers_option
@scheduler_option
@quiet_option
def audit(datasets, audit_names, out, formats, fail_on, option_specs, map_specs, group_by, features, weights,
          list_features_only, seed, list_only, workers, scheduler, quiet):
    """Audit one or more datasets for bias; write a report.

    Runs the audits (average images, Name That Dataset, cross-dataset
    generalization, duplicates, low-level statistics, orientation artifacts,
    class balance, ...) on DATASET directories, writes report.html (one
    self-contained file) and report.json (every number) into --out, and
    prints a summary table. With --fail-on, exits 1 when a condition holds,
    so a dataset can be gated in CI.

    \b
    Examples:
      datakit audit demo/digits
      datakit audit demo/cifar10_test demo/imagenette_subset --map imagenette_subset:n02102040=dog
      datakit audit demo/digits --audits name_that_dataset --fail-on 'name_that_dataset.accuracy>0.9'
      datakit audit demo/cifar10_test demo/imagenette_subset --features hog,gist --weights resnet18.pth
    """
    if list_only:
        _list_audits()
        return
    if list_features_only:
        _list_features()
        return
    if not datasets:
        raise click.UsageError("Give one or more DATASET directories (or --list).")
    from datakit.report import (evaluate_conditions, parse_class_map, parse_condition, parse_option,
                                resolve_audits, run_audits, summary_frame, write_report)
    from datakit.store.dataset import open_dataset

    conditions = [parse_condition(text) for text in fail_on]
    selected = resolve_audits(audit_names)
    for cond in conditions:
        if cond.audit not in selected:
            from audits import AUDITS

            if cond.audit not in AUDITS:
                raise click.ClickException(f"--fail-on {cond.text!r}: " + AUDITS.unknown_message(cond.audit))
            raise click.ClickException(f"--fail-on {cond.text!r}: audit {cond.audit!r} is not selected "
                                       f"(add it to --audits).")
    options: dict[str, dict] = {}
    for spec in option_specs:
        name, key, value = parse_option(spec)
        options.setdefault(name, {})[key] = value
    class_map = parse_class_map(map_specs)
    opened = [open_dataset(path) for path in datasets]

    bar = progress_bar(len(selected), "audit", quiet=quiet, unit="audit")

    def progress(name: str, done: bool) -> None:
        if done:
            bar()
        else:
            bar.set_description(name)

    try:
        run = run_audits(opened, selected, options, class_map=class_map, seed=seed, group_by=group_by,
                         progress=progress, workers=workers, scheduler=scheduler, features=features, weights=weights)
    finally:
        bar.close()
    paths = write_report(run, out, formats)
    click.echo(summary_frame(run).to_string(index=False))
    for path in paths:
        click.echo(f"wrote {path}", err=True)
    failed = [n for n, s in run.status.items() if s == "failed"]
    held = evaluate_conditions(run, conditions)
    for cond, value in held:
        click.echo(f"FAIL: {cond.text} (measured {cond.audit}.{cond.metric} = {value:.4g})", err=True)
    if failed:
        raise click.ClickException(f"audit(s) failed: {', '.join(failed)} (see the report for the error)")
    if held:
        raise SystemExit(1)
