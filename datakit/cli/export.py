"""``datakit export DATASET --format FMT --out DIR``: conventional layouts."""
from __future__ import annotations

import re

import click

from datakit.cli._options import progress_bar, quiet_option
from datakit.errors import DatakitError

__all__ = ["export"]


def _parse_size(value):
    if value is None:
        return None
    m = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", value)
    if not m:
        raise click.BadParameter(f"expected HEIGHTxWIDTH like 28x28, got {value!r}")
    return int(m.group(1)), int(m.group(2))


@click.command(help="""Export a dataset to a conventional layout.

\b
Formats:
  imagefolder  <out>/<split>/<class>/<id>.png (torchvision ImageFolder)
  idx          <out>/<split>-images-idx3-ubyte.gz + labels (MNIST files)
  webdataset   tar shards (when available; see --shard-size)
  huggingface  <out>/data/<split>-*.parquet + README.md: datasets.load_dataset(out)
               opens it (images embedded, ClassLabel names, provenance columns)
  croissant    Croissant 1.0 JSON-LD describing the dataset in place; --out is a
               .json file or a folder (croissant.json), e.g. the dataset itself

\b
Examples:
  datakit export demo/digits --format imagefolder --out exports/digits
  datakit export demo/digits --format huggingface --out exports/digits-hf
  datakit export demo/digits --format croissant --out demo/digits
""")
@click.argument("dataset", type=click.Path(file_okay=False))
@click.option("--format", "fmt", required=True, metavar="FORMAT",
              help="imagefolder, idx, webdataset, ... (an unknown name lists the valid ones).")
@click.option("--out", "out", required=True, type=click.Path(),
              help="Output directory (croissant: a .json file or a folder).")
@click.option("--split", default=None, help="Export only this split (default: all).")
@click.option("--size", default=None, metavar="HxW", help="idx: resize images to HEIGHTxWIDTH first.")
@click.option("--link", is_flag=True, help="imagefolder: hard-link images instead of copying.")
@click.option("--shard-size", default=None, help="webdataset, huggingface: largest shard, e.g. 500MB.")
@quiet_option
def export(dataset, fmt, out, split, size, link, shard_size, quiet):
    from datakit import open_dataset
    from datakit.store.export import EXPORTERS, export_dataset, export_formats

    formats = export_formats()
    if fmt not in formats:
        raise DatakitError(EXPORTERS.unknown_message(fmt))
    options = {}
    if size is not None:
        options["size"] = _parse_size(size)
    if link:
        options["link"] = True
    if shard_size is not None:
        options["shard_size"] = shard_size
    ds = open_dataset(dataset)
    n = len(ds.manifest) if split is None else int((ds.manifest["split"] == split).sum())
    with progress_bar(n, desc=f"export {fmt}", quiet=quiet) as bar:
        try:
            summary = export_dataset(ds, fmt, out, split=split, progress=bar, **options)
        except TypeError as exc:
            raise DatakitError(f"format {fmt!r} does not take these options ({exc}).") from None
    splits = summary.get("splits") or {}
    detail = ", ".join(f"{k}: {v}" for k, v in splits.items())
    click.echo(f"Exported {summary.get('images', n)} images of {ds.name} as {fmt} to {summary.get('out', out)}"
               + (f" ({detail})" if detail else "") + ".")
