"""The ``openverse`` backend: Openverse's image search API (no key needed).

``GET {base_url}/v1/images/?q=...&page=N&page_size=M`` answers
``{"result_count", "page_count", "page", "results": [{"id", "title", "url",
"creator", "license", "license_version", "foreign_landing_url",
"attribution", "width", "height", ...}]}``. Anonymous clients get at most 20
results a page and a limited number of pages.
"""
from __future__ import annotations

import logging
import os
from typing import Iterator

from datakit.sources.search.base import BackendError, SearchBackend, SearchResult, register_backend
from datakit.sources.search.http import HttpClient

__all__ = ["OpenverseBackend", "OPENVERSE_URL", "openverse_license"]

OPENVERSE_URL = "https://api.openverse.org"

logger = logging.getLogger(__name__)


def openverse_license(code: str | None, version: str | None) -> str:
    """A readable license name from Openverse's ``license`` and ``license_version``.

    Examples
    --------
    >>> openverse_license("by-sa", "2.0")
    'CC BY-SA 2.0'
    >>> openverse_license("pdm", "1.0")
    'PDM 1.0'
    """
    code = (code or "").strip()
    if not code:
        return ""
    name = code.upper() if code.lower() in ("cc0", "pdm") else f"CC {code.upper()}"
    return f"{name} {version}".strip() if version else name


@register_backend("openverse")
class OpenverseBackend(SearchBackend):
    """Search Openverse.

    Parameters
    ----------
    base_url : str
        API root (a fake server's address in tests).
    page_size : int
        Results per request (Openverse allows 20 without a key).
    license_type : str, optional
        Openverse's ``license_type`` filter (``commercial``, ``modification``...).
    client : HttpClient, optional
        Shared client; else one is made from ``cache_dir``, ``min_interval``, ...
    """

    def __init__(self, base_url: str = OPENVERSE_URL, page_size: int = 20, license_type: str | None = None,
                 client: HttpClient | None = None, **client_options) -> None:
        if page_size < 1:
            raise ValueError(f"page_size must be >= 1, got {page_size}")
        self.base_url = base_url.rstrip("/")
        self.page_size = page_size
        self.license_type = license_type
        self.client = client if client is not None else HttpClient(**client_options)

    @classmethod
    def from_spec(cls, arg: str | None, **options) -> "OpenverseBackend":
        if arg:
            options.setdefault("base_url", arg)
        options.setdefault("base_url", os.environ.get("DATAKIT_OPENVERSE_URL", OPENVERSE_URL))
        return cls(**options)

    def iter_results(self, query: str, limit: int) -> Iterator[SearchResult]:
        rank, page = 0, 1
        while rank < limit:
            try:
                data = self.client.get_json(f"{self.base_url}/v1/images/",
                                            {"q": query, "page": page, "page_size": self.page_size,
                                             "license_type": self.license_type})
            except BackendError as exc:
                # anonymous clients may only page so deep: a refusal after page 1 ends the results
                if page > 1 and exc.status in (400, 401, 403):
                    logger.warning("Openverse refused page %d for %r (HTTP %s); keeping %d results",
                                   page, query, exc.status, rank)
                    return
                raise
            if not isinstance(data, dict) or not isinstance(data.get("results"), list):
                raise BackendError(f"Openverse answered without a 'results' list for {query!r} (page {page}).")
            for item in data["results"]:
                if not isinstance(item, dict) or not item.get("url"):
                    continue
                rank += 1
                title = item.get("title") or ""
                creator = item.get("creator") or ""
                attribution = item.get("attribution") or (f'"{title}" by {creator}' if creator else title)
                yield SearchResult(
                    ref=item["url"], rank=rank, title=title,
                    license=openverse_license(item.get("license"), item.get("license_version")),
                    attribution=attribution, landing_url=item.get("foreign_landing_url") or "",
                    meta={"id": item.get("id"), "creator": creator, "license_url": item.get("license_url"),
                          "width": item.get("width"), "height": item.get("height"), "provider": item.get("provider")})
                if rank >= limit:
                    return
            page_count = data.get("page_count")
            if not data["results"] or (isinstance(page_count, int) and page >= page_count):
                return
            page += 1

    def describe(self) -> str:
        return f"openverse:{self.base_url}"
