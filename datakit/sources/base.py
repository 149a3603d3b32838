"""The source interface: where images come from, with provenance."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterator

import numpy as np

from datakit.registry import Registry

__all__ = ["SourceItem", "Source", "SOURCES", "register_source", "get_source"]


@dataclass
class SourceItem:
    """One image a source yields (picklable: it crosses process and Dask workers).

    Exactly one of ``array``, ``path`` or ``data`` carries the pixels.

    Attributes
    ----------
    source_ref : str
        Where the image came from, stable across runs: ``file#index`` for
        array files, the file path for folders, the URL for downloads.
    label : str or None
        The label as the source gives it (``"3"``, ``"sandal"``), None if unlabeled.
    split : str or None
        The source's own split (``"train"``/``"test"``), when it has one.
    array : ndarray, optional
        Decoded pixels, shape (H, W) or (H, W, C); uint8, or float in a range
        stated in ``meta["value_range"]``.
    path : str, optional
        An image file to decode (with :func:`datakit.sources.decode.load_image`).
    data : bytes, optional
        Encoded image bytes to decode.
    meta : dict
        Extra provenance (``query``, ``rank``, ``license``, ...).
    """

    source_ref: str
    label: str | None = None
    split: str | None = None
    array: np.ndarray | None = None
    path: str | None = None
    data: bytes | None = None
    meta: dict[str, Any] = field(default_factory=dict)


class Source:
    """Base class. Subclasses take keyword options and implement :meth:`iter_items`.

    ``name`` is the instance name used in the manifest's ``source`` column
    (the recipe's source name, e.g. ``"mnist"``), not the registry kind.
    """

    kind: str = ""

    def __init__(self, name: str | None = None, **options: Any) -> None:
        self.name = name or self.kind
        self.options = options

    def iter_items(self) -> Iterator[SourceItem]:
        raise NotImplementedError

    def __len__(self) -> int:
        """Number of items, when cheap to know (used for progress bars)."""
        return sum(1 for _ in self.iter_items())

    def labels(self) -> list[str]:
        """The source's label names, when known without a full pass."""
        return sorted({i.label for i in self.iter_items() if i.label is not None})


#: kind -> Source subclass
SOURCES: Registry[type[Source]] = Registry("source")


def register_source(kind: str):
    def decorator(cls: type[Source]) -> type[Source]:
        cls.kind = kind
        return SOURCES.register(kind)(cls)

    return decorator


def get_source(kind: str) -> type[Source]:
    """The Source class registered as ``kind`` (imports the built-in sources first)."""
    import datakit.sources  # noqa: F401  (registers built-ins)

    return SOURCES.get(kind)
