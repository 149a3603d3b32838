"""A small name -> object registry (models, audits, sources, normalizers, ...).

Modelled on torchvision's ``register_model`` / ``get_model`` / ``list_models``.
"""
from __future__ import annotations

import difflib
from typing import Callable, Generic, Iterator, TypeVar

from datakit.errors import DatakitError

__all__ = ["Registry", "UnknownNameError"]

T = TypeVar("T")


class UnknownNameError(DatakitError, ValueError):
    """A name that is not registered; the message lists the valid names."""


class Registry(Generic[T]):
    """Names mapped to objects, with errors that list the valid names.

    Examples
    --------
    >>> NORMALIZERS = Registry("normalizer")
    >>> @NORMALIZERS.register("none")
    ... def identity(x):
    ...     return x
    >>> NORMALIZERS.get("none")(3)
    3
    >>> NORMALIZERS.names()
    ['none']
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def decorator(obj: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._items[name] = obj
            return obj

        return decorator

    def get(self, name: str) -> T:
        try:
            return self._items[name]
        except KeyError:
            raise UnknownNameError(self.unknown_message(name)) from None

    def unknown_message(self, name: str) -> str:
        valid = ", ".join(sorted(self._items))
        close = difflib.get_close_matches(str(name), list(self._items), n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        return f"Unknown {self.kind} {name!r}.{hint} Valid values are {{{valid}}}."

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._items)
