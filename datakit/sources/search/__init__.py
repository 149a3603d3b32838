"""Image search backends: where candidate images are found (a registry).

``local``
    A SQLite FTS5 index over a local pool of images (:mod:`.local`).
``openverse``, ``wikimedia``
    Public image-search HTTP APIs that need no key.
``json-http``
    Any JSON API, configured by a URL template and JSON paths (:mod:`.json_http`).

A backend is chosen with a spec string, ``KIND`` or ``KIND:ARGUMENT``
(``local:POOL_DIR``, ``json-http:CONFIG.toml``), via :func:`get_backend`.
"""
from datakit.sources.search.base import (
    BACKENDS,
    BackendError,
    SearchBackend,
    SearchResult,
    get_backend,
    register_backend,
)

__all__ = ["BACKENDS", "BackendError", "SearchBackend", "SearchResult", "get_backend", "register_backend"]
