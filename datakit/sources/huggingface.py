"""A dataset saved locally by Hugging Face ``datasets``: a ``save_to_disk`` folder or Parquet files.

Read with pyarrow alone (``datasets`` need not be installed), and never from
the network: a Hub name such as ``"mnist"`` is refused with the two lines that
save it locally. Class names come from the ``ClassLabel`` feature that
``datasets`` stores next to the data (``dataset_info.json`` for
``save_to_disk``; the ``huggingface`` schema metadata of Parquet files written
by ``to_parquet``, ``push_to_hub`` or ``datakit export --format huggingface``).

Recipe::

    [[sources]]
    name = "fashion"
    kind = "huggingface"
    path = "hf/fashion_mnist"          # save_to_disk folder, a .parquet file, or a folder of them
    split = ["train", "test"]          # default: every split
    split_names = { validation = "val" }   # the default maps validation/valid/dev -> val
"""
from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path
from typing import Any, Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from datakit.errors import DatakitError
from datakit.sources._paths import candidate_paths, check_options
from datakit.sources.base import Source, SourceItem, register_source
from datakit.store.huggingface import class_label_names, image_columns

__all__ = ["HuggingFaceSource", "DEFAULT_SPLIT_NAMES"]

logger = logging.getLogger(__name__)

#: ``datasets`` split names -> datakit's (train / val / test)
DEFAULT_SPLIT_NAMES: dict[str, str] = {"validation": "val", "valid": "val", "dev": "val"}
_KNOWN_SPLITS = ("train", "validation", "valid", "val", "dev", "test")
_SPLIT_IN_NAME = re.compile(r"^(?P<split>[A-Za-z0-9]+?)(?:[-_.]\d{5}-of-\d{5}|[-_.]|$)")
_BATCH = 256


class _Part:
    """One file of a split: where it is, how to read it, its features."""

    def __init__(self, split: str | None, path: Path, kind: str, features: dict[str, Any]) -> None:
        self.split, self.path, self.kind, self.features = split, path, kind, features

    def batches(self, columns: list[str]) -> Iterator[pa.RecordBatch]:
        if self.kind == "parquet":
            yield from pq.ParquetFile(self.path).iter_batches(batch_size=_BATCH, columns=columns)
        else:
            with pa.memory_map(str(self.path)) as source:
                for batch in _open_arrow(source):
                    yield batch.select(columns)

    def num_rows(self) -> int:
        if self.kind == "parquet":
            return pq.ParquetFile(self.path).metadata.num_rows
        with pa.memory_map(str(self.path)) as source:
            return sum(b.num_rows for b in _open_arrow(source))

    def schema(self) -> pa.Schema:
        if self.kind == "parquet":
            return pq.read_schema(self.path)
        with pa.memory_map(str(self.path)) as source:
            return _open_arrow(source).schema


def _open_arrow(source):
    """``datasets`` writes the Arrow IPC stream format; accept the file format too."""
    try:
        return pa.ipc.open_stream(source)
    except pa.ArrowInvalid:
        source.seek(0)
        return pa.ipc.open_file(source)


def _parquet_features(path: Path) -> dict[str, Any]:
    meta = pq.read_schema(path).metadata or {}
    raw = meta.get(b"huggingface")
    if not raw:
        return {}
    try:
        return json.loads(raw).get("info", {}).get("features", {}) or {}
    except (ValueError, AttributeError):
        return {}


def _split_of_file(path: Path, root: Path) -> str | None:
    """A Parquet file's split, by the Hub's conventions: ``<split>-00000-of-00001.parquet``,
    ``<split>.parquet`` or a ``<split>/`` folder."""
    rel = path.relative_to(root) if path != root else Path(path.name)
    for part in rel.parts[:-1]:
        if part in _KNOWN_SPLITS:
            return part
    m = _SPLIT_IN_NAME.match(path.stem)
    if m and m.group("split") in _KNOWN_SPLITS:
        return m.group("split")
    return None


@register_source("huggingface")
class HuggingFaceSource(Source):
    """Images (and labels) from a dataset saved by ``datasets``.

    Options
    -------
    path : path
        A ``save_to_disk`` folder (of a ``DatasetDict`` or of one
        ``Dataset``), a ``.parquet`` file, or a folder of ``.parquet`` files
        (searched recursively; the split comes from the file or folder name,
        as on the Hub). Relative paths resolve like every source's (data root,
        ``$DATAKIT_DATA``, working directory). Never a Hub name: nothing is
        downloaded.
    split : str or list of str, default every split
        Which splits to read, by their ``datasets`` names (``"train"``,
        ``"validation"``, ...). ``"all"`` is every split.
    split_names : table, default ``{validation = "val", valid = "val", dev = "val"}``
        ``datasets`` split name -> the split the items carry (the build keeps
        a source's own split with ``strategy = "source"``). Given, it replaces
        the default.
    image_column : str, default the one ``Image`` feature (else ``"image"`` or ``"img"``)
    label_column : str, default the one ``ClassLabel`` feature (else ``"label"`` if there is one)
        ``""`` reads the images unlabeled.
    label_names : list of str, optional
        Names for integer labels 0..K-1 when the data has no ``ClassLabel``
        (a ``ClassLabel``'s own names win otherwise).

    Items carry ``data`` (the encoded image bytes as stored), ``label`` (the
    ``ClassLabel`` name; None for -1), ``split`` and ``source_ref =
    "<file relative to path>#<row>"``.
    """

    OPTIONS = ("path", "split", "split_names", "image_column", "label_column", "label_names")

    def __init__(self, name: str | None = None, data_root: str | os.PathLike | None = None, **options: Any) -> None:
        super().__init__(name=name, **options)
        check_options(self.kind, name, options, self.OPTIONS)
        self.data_root = data_root
        where = f"source {self.name!r} (kind 'huggingface')"
        self._where = where
        if "path" not in options:
            raise DatakitError(f"{where}: option 'path' (a folder written by save_to_disk, or Parquet files) is "
                               "required")
        split = options.get("split", "all")
        if isinstance(split, str):
            split = None if split == "all" else [split]
        elif not (isinstance(split, list) and split and all(isinstance(s, str) for s in split)):
            raise DatakitError(f"{where}: split must be a split name, a list of them, or 'all'; got {split!r}")
        self.splits_wanted: list[str] | None = split
        names = options.get("split_names", DEFAULT_SPLIT_NAMES)
        if not isinstance(names, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in names.items()):
            raise DatakitError(f"{where}: split_names must be a table of split name -> split name, like "
                               f"{{validation = \"val\"}}; got {names!r}")
        self.split_names = dict(names)
        for opt in ("image_column", "label_column"):
            if opt in options and not isinstance(options[opt], str):
                raise DatakitError(f"{where}: {opt} must be a column name (a string), got {options[opt]!r}")
        ln = options.get("label_names")
        if ln is not None and (isinstance(ln, str) or not all(isinstance(n, str) for n in ln)):
            raise DatakitError(f"{where}: label_names must be a list of strings, got {ln!r}")
        self.label_names_option = list(ln) if ln is not None else None
        self._parts: list[_Part] | None = None
        self._root: Path | None = None

    # -- finding the files -----------------------------------------------------------------------------------
    def _resolve_root(self) -> Path:
        value = self.options["path"]
        if not isinstance(value, (str, os.PathLike)) or not os.fspath(value):
            raise DatakitError(f"{self._where}: option 'path' must be a path, got {value!r}")
        text = os.fspath(value)
        if re.match(r"^(hf|https?)://", text):
            raise DatakitError(self._not_local(text, "is a URL"))
        tried = candidate_paths(text, self.data_root)
        for c in tried:
            if c.exists():
                return c
        raise DatakitError(self._not_local(text, "does not exist (tried " + ", ".join(map(str, tried)) + ")"))

    def _not_local(self, text: str, why: str) -> str:
        hub = re.fullmatch(r"[\w.-]+(/[\w.-]+)?", text) is not None
        hint = (f" If {text!r} is a dataset on the Hugging Face Hub: datakit does not download at build time. "
                f"Save it once on a machine that is online, `datasets.load_dataset({text!r}).save_to_disk("
                f"\"data/{text.split('/')[-1]}\")`, and set path to that folder." if hub else
                " Point path at a folder written by `Dataset.save_to_disk` / `DatasetDict.save_to_disk`, or at "
                "Parquet files (`Dataset.to_parquet`), on this machine.")
        return f"{self._where}: path {text!r} {why}.{hint}"

    def parts(self) -> list[_Part]:
        """The files to read, split by split, checked to exist (nothing is decoded)."""
        if self._parts is not None:
            return self._parts
        root = self._resolve_root()
        self._root = root if root.is_dir() else root.parent
        if root.is_file():
            if root.suffix != ".parquet":
                raise DatakitError(f"{self._where}: {root} is not a .parquet file; give a save_to_disk folder, a "
                                   ".parquet file or a folder of them.")
            parts = [_Part(_split_of_file(root, root.parent), root, "parquet", _parquet_features(root))]
        elif (root / "dataset_dict.json").exists():
            try:
                names = json.loads((root / "dataset_dict.json").read_text())["splits"]
            except (ValueError, KeyError) as exc:
                raise DatakitError(f"{self._where}: {root / 'dataset_dict.json'} is unreadable ({exc})") from None
            parts = [p for s in names for p in self._saved_dataset(root / s, s)]
        elif (root / "state.json").exists():
            parts = self._saved_dataset(root, None)
        else:
            files = sorted(p for p in root.rglob("*.parquet") if not any(x.startswith(".") for x in p.parts))
            if not files:
                raise DatakitError(f"{self._where}: {root} holds neither a save_to_disk dataset (dataset_dict.json or "
                                   "state.json) nor .parquet files.")
            parts = [_Part(_split_of_file(f, root), f, "parquet", _parquet_features(f)) for f in files]
        available = sorted({p.split for p in parts if p.split is not None})
        if self.splits_wanted is not None:
            unknown = [s for s in self.splits_wanted if s not in available]
            if unknown:
                raise DatakitError(f"{self._where}: unknown split {unknown[0]!r} in {root}. Valid values are "
                                   f"{{{', '.join(available) or '(no named splits)'}}}.")
            parts = [p for p in parts if p.split in self.splits_wanted]
        self._parts = parts
        return parts

    def _saved_dataset(self, folder: Path, split: str | None) -> list[_Part]:
        try:
            state = json.loads((folder / "state.json").read_text())
            files = [folder / f["filename"] for f in state["_data_files"]]
        except (OSError, ValueError, KeyError) as exc:
            raise DatakitError(f"{self._where}: {folder} is not a complete save_to_disk dataset "
                               f"(state.json: {exc}).") from None
        features: dict[str, Any] = {}
        info = folder / "dataset_info.json"
        if info.exists():
            features = json.loads(info.read_text()).get("features") or {}
        split = split if split is not None else (state.get("_split") or None)
        missing = [f for f in files if not f.exists()]
        if missing:
            raise DatakitError(f"{self._where}: {missing[0]} is missing; the save_to_disk folder is incomplete.")
        return [_Part(split, f, "arrow", features) for f in files]

    # -- columns ---------------------------------------------------------------------------------------------
    def _columns(self, part: _Part) -> tuple[str, str | None, list[str] | None]:
        names = part.schema().names
        if "image_column" in self.options:
            image = self.options["image_column"]
        else:
            found = image_columns(part.features)
            image = found[0] if len(found) == 1 else next((c for c in ("image", "img") if c in names), None)
        if image is None or image not in names:
            raise DatakitError(f"{self._where}: no image column in {part.path} (columns {names}); set image_column.")
        labels = class_label_names(part.features)
        if "label_column" in self.options:
            label = self.options["label_column"] or None
        else:
            label = next(iter(labels)) if len(labels) == 1 else ("label" if "label" in names else None)
        if label is not None and label not in names:
            raise DatakitError(f"{self._where}: no column {label!r} in {part.path} (columns {names}); set "
                               "label_column, or label_column = \"\" for unlabeled images.")
        return image, label, labels.get(label) if label is not None else None

    def validate(self) -> None:
        """Check the files exist and hold the image (and label) columns; nothing is decoded."""
        for part in self.parts():
            self._columns(part)

    def __len__(self) -> int:
        return sum(p.num_rows() for p in self.parts())

    def class_names(self) -> list[str] | None:
        """The ``ClassLabel`` names of the label column (or ``label_names``), in label-index order."""
        for part in self.parts():
            names = self._columns(part)[2]
            if names:
                return names
        return self.label_names_option

    def labels(self) -> list[str]:
        names = self.class_names()
        if names:
            return sorted(names)
        return super().labels()

    def _label(self, value: Any, names: list[str] | None) -> str | None:
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            return str(value)
        if value < 0:  # datasets' ClassLabel: -1 is "no label"
            return None
        names = names or self.label_names_option
        if names is None:
            return str(value)
        if value >= len(names):
            raise DatakitError(f"{self._where}: label value {value} has no class name ({len(names)} names)")
        return names[value]

    def iter_items(self) -> Iterator[SourceItem]:
        """Items file by file, in stored order, streamed in batches."""
        for part in self.parts():
            image, label, names = self._columns(part)
            split = self.split_names.get(part.split, part.split) if part.split is not None else None
            rel = part.path.relative_to(self._root).as_posix() if self._root in part.path.parents else part.path.name
            base = part.path.parent
            row = 0
            for batch in part.batches([image] + ([label] if label else [])):
                images = batch.column(0).to_pylist()
                values = batch.column(1).to_pylist() if label else [None] * len(images)
                for img, value in zip(images, values):
                    item = SourceItem(source_ref=f"{rel}#{row}", label=self._label(value, names), split=split,
                                      meta={"index": row})
                    if isinstance(img, dict):
                        if img.get("bytes") is not None:
                            item.data = img["bytes"]
                        elif img.get("path"):
                            p = Path(img["path"])
                            item.path = str(p if p.is_absolute() else base / p)
                    elif isinstance(img, (bytes, bytearray)):
                        item.data = bytes(img)
                    elif isinstance(img, str):
                        item.path = img if os.path.isabs(img) else str(base / img)
                    if item.data is None and item.path is None:
                        item.data = b""  # decoding rejects it with its reason (nothing is dropped silently)
                    yield item
                    row += 1
