"""The search-backend interface and its registry."""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Iterator

from datakit.errors import DatakitError
from datakit.registry import Registry

__all__ = ["SearchResult", "SearchBackend", "BackendError", "BACKENDS", "register_backend", "get_backend"]


class BackendError(DatakitError):
    """A search backend failed (network, HTTP status, malformed response); the run can be resumed.

    Attributes
    ----------
    status : int or None
        The HTTP status that caused it, when there was one.
    """

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class SearchResult:
    """One search hit.

    Attributes
    ----------
    ref : str
        The image's URL (HTTP backends) or absolute file path (``local``).
    rank : int
        1-based position in the backend's ranking for the query.
    title, license, attribution, landing_url : str
        Provenance as the backend gives it (empty when unknown).
    local : bool
        ``ref`` is a local file path, not a URL.
    meta : dict
        Extra backend fields (``score``, ``width``, ``height``, ``mime``...).
    """

    ref: str
    rank: int
    title: str = ""
    license: str = ""
    attribution: str = ""
    landing_url: str = ""
    local: bool = False
    meta: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict:
        return asdict(self)


class SearchBackend:
    """Base class: :meth:`search` returns the ranked results of one query.

    Subclasses implement :meth:`iter_results` (page by page, lazily) and set
    ``kind`` via :func:`register_backend`.
    """

    kind: str = ""

    def iter_results(self, query: str, limit: int) -> Iterator[SearchResult]:
        raise NotImplementedError

    def search(self, query: str, limit: int) -> list[SearchResult]:
        """At most ``limit`` results for ``query``, best first (``rank`` 1, 2, ...)."""
        if limit < 1:
            raise ValueError(f"limit must be >= 1, got {limit}")
        out = []
        for r in self.iter_results(query, limit):
            out.append(r)
            if len(out) >= limit:
                break
        return out

    def describe(self) -> str:
        return self.kind

    def close(self) -> None:
        pass


#: kind -> factory(argument: str | None, **options) -> SearchBackend
BACKENDS: Registry[Callable[..., SearchBackend]] = Registry("search backend")


def register_backend(kind: str):
    def decorator(cls):
        cls.kind = kind
        return BACKENDS.register(kind)(cls)

    return decorator


def _load_builtins() -> None:
    import datakit.sources.search.json_http  # noqa: F401
    import datakit.sources.search.local  # noqa: F401
    import datakit.sources.search.openverse  # noqa: F401
    import datakit.sources.search.wikimedia  # noqa: F401


def get_backend(spec: str, **options: Any) -> SearchBackend:
    """A backend from a spec: ``local:POOL_DIR``, ``openverse``, ``wikimedia``, ``json-http:CONFIG``.

    ``options`` go to the backend (``cache_dir``, ``min_interval``, ``base_url``...).
    """
    _load_builtins()
    kind, _, arg = str(spec).partition(":")
    cls = BACKENDS.get(kind)
    return cls.from_spec(arg or None, **options)


def env_expand(value: str) -> str:
    """``$VAR`` / ``${VAR}`` expanded from the environment (for API keys in configs)."""
    return os.path.expandvars(value)
