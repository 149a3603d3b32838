"""A directory of image files: class = sub-folder name (torchvision ImageFolder), or unlabeled.

Listing is cheap and deterministic (sorted); decoding happens later, in the
build's workers, with :func:`datakit.sources.decode.load_image`, so a broken
file becomes a rejection with a reason rather than an error here.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Iterator, Sequence

from datakit.errors import DatakitError
from datakit.sources._paths import check_options, resolve_path
from datakit.sources.base import Source, SourceItem, register_source

__all__ = ["FolderSource", "IMG_EXTENSIONS", "list_image_files"]

logger = logging.getLogger(__name__)

#: torchvision's ImageFolder extensions, plus .gif.
IMG_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp", ".gif")


def _norm_extensions(extensions: Sequence[str] | str | None) -> tuple[str, ...] | None:
    """Lower-case, dotted; None or "*" means every file."""
    if extensions is None:
        return IMG_EXTENSIONS
    if isinstance(extensions, str):
        extensions = [extensions]
    exts = []
    for e in extensions:
        if not isinstance(e, str):
            raise DatakitError(f"folder source: extensions must be strings, got {e!r}")
        if e == "*":
            return None
        exts.append(e.lower() if e.startswith(".") else "." + e.lower())
    return tuple(exts)


def list_image_files(root: Path, extensions: tuple[str, ...] | None) -> list[Path]:
    """Files under ``root`` (recursive, following symlinks, hidden names skipped), sorted by path.

    ``extensions`` None takes every file.
    """
    out: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for fn in filenames:
            if fn.startswith("."):
                continue
            if extensions is None or fn.lower().endswith(extensions):
                out.append(Path(dirpath) / fn)
    out.sort(key=lambda p: p.relative_to(root).as_posix())
    return out


@register_source("folder")
class FolderSource(Source):
    """Image files in a directory.

    Options
    -------
    path : path
        The directory.
    labeled : bool, default True
        True: each immediate sub-folder is a class (files below it, recursively;
        files directly in ``path`` are ignored, as ImageFolder does). False:
        every file under ``path`` is one unlabeled item.
    extensions : list of str, default torchvision's image extensions + .gif
        File name endings to take (case-insensitive); ``["*"]`` takes every
        file and lets decoding decide (a text file becomes a
        ``not_an_image`` rejection).

    Items carry ``path`` (absolute), ``source_ref`` = the path relative to
    ``path`` (POSIX), and ``label`` = the class folder name (or None).
    """

    OPTIONS = ("path", "labeled", "extensions")

    def __init__(self, name: str | None = None, data_root: str | os.PathLike | None = None, **options: Any) -> None:
        super().__init__(name=name, **options)
        check_options(self.kind, name, options, self.OPTIONS)
        if "path" not in options:
            raise DatakitError(f"source {self.name!r} (kind 'folder'): option 'path' (a directory of images) is required")
        self.data_root = data_root
        labeled = options.get("labeled", True)
        if not isinstance(labeled, bool):
            raise DatakitError(f"source {self.name!r} (kind 'folder'): labeled must be true or false, got {labeled!r}")
        self.labeled = labeled
        self.extensions = _norm_extensions(options.get("extensions"))
        self._root: Path | None = None
        self._files: list[tuple[Path, str | None]] | None = None

    @property
    def root(self) -> Path:
        if self._root is None:
            self._root = resolve_path(self.options["path"], option="path", kind=self.kind, name=self.name,
                                      data_root=self.data_root, want="dir")
        return self._root

    def classes(self) -> list[str]:
        """Sorted class folder names (labeled mode)."""
        return sorted(e.name for e in os.scandir(self.root) if e.is_dir() and not e.name.startswith("."))

    def files(self) -> list[tuple[Path, str | None]]:
        """``[(file, label), ...]`` in the order :meth:`iter_items` yields them."""
        if self._files is None:
            root = self.root
            files: list[tuple[Path, str | None]] = []
            if self.labeled:
                classes = self.classes()
                if not classes:
                    raise DatakitError(f"source {self.name!r} (kind 'folder'): {root} has no class sub-folders; put each "
                                       "class's images in a sub-folder named after it, or set labeled = false")
                for c in classes:
                    found = list_image_files(root / c, self.extensions)
                    if not found:
                        logger.warning("source %r: class folder %s holds no image files", self.name, root / c)
                    files.extend((f, c) for f in found)
            else:
                files = [(f, None) for f in list_image_files(root, self.extensions)]
            if not files:
                exts = "any extension" if self.extensions is None else ", ".join(self.extensions)
                raise DatakitError(f"source {self.name!r} (kind 'folder'): no image files ({exts}) under {root}")
            self._files = files
        return self._files

    def validate(self) -> None:
        """Check the directory exists and lists at least one image file (nothing is decoded)."""
        self.files()

    def __len__(self) -> int:
        return len(self.files())

    def labels(self) -> list[str]:
        return sorted({lab for _, lab in self.files() if lab is not None})

    def iter_items(self) -> Iterator[SourceItem]:
        root = self.root
        for path, label in self.files():
            yield SourceItem(source_ref=path.relative_to(root).as_posix(), label=label, path=str(path.absolute()))
