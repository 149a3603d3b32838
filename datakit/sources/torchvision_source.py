"""Any dataset in :mod:`torchvision.datasets`, by class name, with its arguments.

``download = true`` lets torchvision fetch the files on a machine that is
online. Offline with the files missing, the error says which files to put
where (torchvision's own says only "Dataset not found").
"""
from __future__ import annotations

import difflib
import inspect
import logging
import os
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from datakit.errors import DatakitError
from datakit.sources._paths import candidate_paths, check_choice, check_options
from datakit.sources.base import Source, SourceItem, register_source

__all__ = ["TorchvisionSource", "missing_files_hint"]

logger = logging.getLogger(__name__)


def _dataset_class(name: str, source: str) -> type:
    import torchvision.datasets as tvd

    names = sorted(n for n, obj in vars(tvd).items()
                   if inspect.isclass(obj) and hasattr(obj, "__getitem__") and not n.startswith("_"))
    cls = getattr(tvd, name, None) if isinstance(name, str) else None
    if cls is None or not inspect.isclass(cls) or name not in names:
        close = difflib.get_close_matches(str(name), names, n=3)
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise DatakitError(f"source {source!r} (kind 'torchvision'): unknown dataset {name!r}.{hint} "
                           f"Valid values are the classes of torchvision.datasets, e.g. MNIST, FashionMNIST, "
                           f"KMNIST, EMNIST, USPS, CIFAR10, SVHN.")
    return cls


def missing_files_hint(cls: type, root: Path, args: dict[str, Any]) -> str:
    """Where torchvision looks for ``cls``'s files under ``root``, as a sentence."""
    resources = getattr(cls, "resources", None)
    if isinstance(resources, list) and resources and "raw_folder" in dir(cls):
        # MNIST family: checks for the *uncompressed* files in <root>/<Class>/raw
        names = [os.path.splitext(os.path.basename(r[0]))[0] for r in resources]
        raw = root / cls.__name__ / "raw"
        return (f"put {', '.join(names)} (the gunzipped IDX files) under {raw}, "
                "or set download = true on a machine that is online")
    split_list = getattr(cls, "split_list", None)
    if isinstance(split_list, dict) and split_list:
        split = args.get("split") or ("train" if args.get("train", True) else "test")
        entry = split_list.get(split) or next(iter(split_list.values()))
        fname = entry[1] if len(entry) > 1 else os.path.basename(entry[0])
        url = entry[0]
        return f"put {fname} (from {url}) in {root}, or set download = true on a machine that is online"
    base_folder = getattr(cls, "base_folder", None)
    filename = getattr(cls, "filename", None)
    if isinstance(base_folder, str) and isinstance(filename, str):
        return (f"extract {filename} so that {root / base_folder} exists, or set download = true on a machine "
                "that is online")
    return f"put the files torchvision expects for {cls.__name__} under {root}, or set download = true on a " \
           "machine that is online"


@register_source("torchvision")
class TorchvisionSource(Source):
    """A torchvision dataset by class name.

    Options
    -------
    dataset : str
        Class name in :mod:`torchvision.datasets` (``"MNIST"``, ``"FashionMNIST"``,
        ``"USPS"``, ``"CIFAR10"``, ...).
    root : path
        torchvision's ``root`` (relative paths resolve against ``data_root``,
        then ``$DATAKIT_DATA``, then the working directory). Default: the data root.
    download : bool, default False
        Let torchvision download missing files (needs a network).
    args : dict
        Extra constructor arguments (``train = false``, ``split = "test"``, ...).
    label_names : {"index", "classes"}, default "index"
        Labels as the target number (``"3"``), or the dataset's ``classes`` entry.

    Items carry ``array`` (uint8 (H, W) or (H, W, 3)), ``split`` from
    ``args.train``/``args.split`` and ``source_ref = "<Class>/<split>#<index>"``.
    """

    OPTIONS = ("dataset", "root", "download", "args", "label_names")

    def __init__(self, name: str | None = None, data_root: str | os.PathLike | None = None, **options: Any) -> None:
        super().__init__(name=name, **options)
        check_options(self.kind, name, options, self.OPTIONS)
        if "dataset" not in options:
            raise DatakitError(f"source {self.name!r} (kind 'torchvision'): option 'dataset' (a torchvision.datasets "
                               "class name such as 'MNIST') is required")
        self.data_root = data_root
        self.dataset_name = options["dataset"]
        self.download = options.get("download", False)
        if not isinstance(self.download, bool):
            raise DatakitError(f"source {self.name!r} (kind 'torchvision'): download must be true or false, "
                               f"got {self.download!r}")
        self.args = dict(options.get("args") or {})
        for reserved in ("root", "download", "transform", "target_transform"):
            if reserved in self.args:
                raise DatakitError(f"source {self.name!r} (kind 'torchvision'): {reserved!r} cannot go in 'args'"
                                   + ("; use the option of the same name" if reserved in ("root", "download") else ""))
        self.label_mode = check_choice(self.kind, name, "label_names", options.get("label_names", "index"),
                                       ["index", "classes"])
        self._ds = None

    @property
    def dataset_class(self) -> type:
        return _dataset_class(self.dataset_name, self.name)

    @property
    def root(self) -> Path:
        value = self.options.get("root")
        if value is None:
            base = self.data_root or os.environ.get("DATAKIT_DATA")
            if not base:
                raise DatakitError(f"source {self.name!r} (kind 'torchvision'): option 'root' is not set and there is no "
                                   "data root (recipe data_root, --data-root or DATAKIT_DATA)")
            return Path(base).expanduser()
        tried = candidate_paths(value, self.data_root)
        for c in tried:
            if c.is_dir():
                return c
        return tried[0]

    @property
    def split(self) -> str | None:
        if "split" in self.args:
            return str(self.args["split"])
        if "train" in self.args:
            return "train" if self.args["train"] else "test"
        if "train" in inspect.signature(self.dataset_class.__init__).parameters:
            return "train"
        return None

    def dataset(self):
        """The torchvision dataset object (constructed once)."""
        if self._ds is None:
            cls = self.dataset_class
            root = self.root
            try:
                self._ds = cls(root=str(root), download=self.download, **self.args)
            except TypeError as exc:
                raise DatakitError(f"source {self.name!r} (kind 'torchvision'): bad arguments for "
                                   f"torchvision.datasets.{cls.__name__}: {exc}") from None
            except (RuntimeError, FileNotFoundError, OSError) as exc:
                if self.download:
                    raise DatakitError(f"source {self.name!r} (kind 'torchvision'): {cls.__name__} could not be "
                                       f"downloaded to {root}: {exc}") from None
                raise DatakitError(f"source {self.name!r} (kind 'torchvision'): {cls.__name__} files not found under "
                                   f"{root} ({exc}). To fix: {missing_files_hint(cls, root, self.args)}.") from None
        return self._ds

    def validate(self) -> None:
        """Check the dataset name, and (unless downloading) that torchvision finds its files."""
        _ = self.dataset_class  # raises for an unknown name
        if not self.download:
            self.dataset()

    def __len__(self) -> int:
        return len(self.dataset())

    def _label(self, ds, target: Any) -> str:
        t = int(target) if np.ndim(target) == 0 else target
        if self.label_mode == "classes" and getattr(ds, "classes", None) is not None and isinstance(t, int):
            return str(ds.classes[t])
        return str(t)

    def labels(self) -> list[str]:
        ds = self.dataset()
        targets = getattr(ds, "targets", None)
        if targets is None:
            targets = getattr(ds, "labels", None)
        if targets is not None:
            return sorted({self._label(ds, t) for t in np.unique(np.asarray(targets))})
        return super().labels()

    def iter_items(self) -> Iterator[SourceItem]:
        from datakit.sources.decode import to_array

        ds = self.dataset()
        cls_name = type(ds).__name__
        split = self.split
        ref = f"{cls_name}/{split}" if split else cls_name
        data = getattr(ds, "data", None)
        targets = getattr(ds, "targets", None)
        if data is not None and hasattr(data, "numpy") and hasattr(data, "dim"):  # a torch tensor
            data = data.numpy()
        if targets is not None and hasattr(targets, "numpy") and hasattr(targets, "dim"):
            targets = targets.numpy()
        fast = False
        if data is not None and targets is not None and len(data) == len(ds) == len(targets):
            arr0 = np.asarray(data[0]) if len(ds) else None
            fast = arr0 is not None and arr0.dtype == np.uint8 and (
                arr0.ndim == 2 or (arr0.ndim == 3 and arr0.shape[2] == 3))
        for i in range(len(ds)):
            if fast:
                arr = np.array(data[i], dtype=np.uint8)
                target = targets[i]
            else:
                img, target = ds[i]
                if hasattr(img, "mode"):
                    arr = np.asarray(img) if img.mode in ("L", "RGB") else to_array(img, "RGB")
                else:
                    arr = to_array(np.asarray(img), "RGB")
            yield SourceItem(source_ref=f"{ref}#{i}", label=self._label(ds, target), split=split,
                             array=np.ascontiguousarray(arr), meta={"index": i})
