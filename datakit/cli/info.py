"""``datakit info DATASET``: counts by split, class and source."""
from __future__ import annotations

import json
import os

import click
import pandas as pd

from datakit.cli._options import emit_table, format_option

__all__ = ["info"]


def dataset_summary(path: str | os.PathLike) -> dict:
    """Counts of a dataset directory: by split, by class and by source (plain data)."""
    from datakit import open_dataset
    from datakit.store.splits import split_counts

    ds = open_dataset(path)
    m = ds.manifest
    by_class = split_counts(m.assign(label=m["label"].fillna("(unlabeled)")), "label")
    names = dict(zip(ds.categories["label"].astype(str), ds.categories["name"].astype(str)))
    by_class.insert(1, "name", by_class["label"].map(lambda v: names.get(v, v)))
    order = {c: i for i, c in enumerate(ds.classes)}
    by_class = by_class.sort_values("label", key=lambda s: s.map(lambda v: order.get(v, len(order)))) \
        .reset_index(drop=True)
    rejected = ds.rejected
    return {
        "name": ds.name,
        "path": str(ds.root),
        "images": int(len(m)),
        "classes": len(ds.classes),
        "rejected": int(len(rejected)),
        "checksum": ds.checksum,
        "by_split": split_counts(m.assign(_all="images"), "_all").drop(columns="_all"),
        "by_class": by_class,
        "by_source": split_counts(m, "source"),
        "rejected_by_reason": rejected.groupby("reason").size().rename("count").reset_index()
        if len(rejected) else pd.DataFrame(columns=["reason", "count"]),
        "skipped_sources": ds.info.get("skipped_sources", {}),
    }


@click.command(help="""Counts of a dataset by split, class and source.

\b
Example:
  datakit info demo/digits
  datakit info demo/digits --format json
""")
@click.argument("dataset", type=click.Path(file_okay=False))
@format_option
def info(dataset, fmt):
    s = dataset_summary(dataset)
    frames = {k: s[k] for k in ("by_split", "by_class", "by_source", "rejected_by_reason")}
    if fmt == "json":
        out = {k: v for k, v in s.items() if k not in frames}
        for k, df in frames.items():
            out[k] = json.loads(df.to_json(orient="records"))
        click.echo(json.dumps(out, indent=2))
        return
    if fmt == "csv":
        parts = []
        for group, df, col in (("split", frames["by_split"], None), ("class", frames["by_class"], "label"),
                               ("source", frames["by_source"], "source")):
            df = df.copy()
            value = df.pop(col) if col else pd.Series(["all"] * len(df))
            if "name" in df:
                df = df.drop(columns="name")
            df.insert(0, "value", value.to_numpy())
            df.insert(0, "group", group)
            parts.append(df)
        emit_table(pd.concat(parts, ignore_index=True).fillna(0), "csv")
        return
    click.echo(f"{s['name']}: {s['path']}")
    click.echo(f"{s['images']} images, {s['classes']} classes, {s['rejected']} rejected; checksum {s['checksum'][:16]}")
    for title, key in (("By split", "by_split"), ("By class", "by_class"), ("By source", "by_source"),
                       ("Rejected by reason", "rejected_by_reason")):
        df = frames[key]
        if df.empty:
            continue
        click.echo(f"\n{title}:")
        emit_table(df)
    for name, reason in s["skipped_sources"].items():
        click.echo(f"\nnote: source {name!r} was skipped: {reason}")
