"""The ``wikimedia`` backend: Wikimedia Commons' MediaWiki API (no key needed).

One request per page: ``action=query&generator=search&gsrsearch=...&gsrnamespace=6
&prop=imageinfo&iiprop=url|extmetadata|mime|size``. The answer holds
``query.pages{pageid: {"index", "title", "imageinfo": [{"url", "descriptionurl",
"mime", "width", "height", "extmetadata": {"LicenseShortName": {"value"},
"Artist": {"value"}}}]}}`` and a ``continue`` object whose keys are sent back
for the next page.
"""
from __future__ import annotations

import html
import os
import re
from typing import Iterator

from datakit.sources.search.base import BackendError, SearchBackend, SearchResult, register_backend
from datakit.sources.search.http import HttpClient

__all__ = ["WikimediaBackend", "COMMONS_API", "strip_html"]

COMMONS_API = "https://commons.wikimedia.org/w/api.php"
_IMAGE_MIMES = ("image/jpeg", "image/png", "image/gif", "image/webp", "image/bmp", "image/tiff")


def strip_html(text: str | None) -> str:
    """Plain text from the HTML Commons puts in ``Artist`` and similar fields.

    Examples
    --------
    >>> strip_html('<a href="//commons.wikimedia.org/wiki/User:X">X &amp; Y</a>')
    'X & Y'
    """
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", text or "")).split())


@register_backend("wikimedia")
class WikimediaBackend(SearchBackend):
    """Search Wikimedia Commons files.

    Parameters
    ----------
    api_url : str
        The ``api.php`` endpoint (a fake server's address in tests).
    page_size : int
        ``gsrlimit`` (at most 50 for anonymous clients with imageinfo).
    client : HttpClient, optional
    """

    def __init__(self, api_url: str = COMMONS_API, page_size: int = 50, client: HttpClient | None = None,
                 **client_options) -> None:
        if page_size < 1:
            raise ValueError(f"page_size must be >= 1, got {page_size}")
        self.api_url = api_url
        self.page_size = page_size
        self.client = client if client is not None else HttpClient(**client_options)

    @classmethod
    def from_spec(cls, arg: str | None, **options) -> "WikimediaBackend":
        if "base_url" in options:
            options["api_url"] = options.pop("base_url")
        if arg:
            options.setdefault("api_url", arg)
        options.setdefault("api_url", os.environ.get("DATAKIT_WIKIMEDIA_URL", COMMONS_API))
        return cls(**options)

    def iter_results(self, query: str, limit: int) -> Iterator[SearchResult]:
        rank = 0
        cont: dict = {}
        while rank < limit:
            params = {"action": "query", "format": "json", "generator": "search", "gsrsearch": query,
                      "gsrnamespace": 6, "gsrlimit": min(self.page_size, max(limit - rank, 1)),
                      "prop": "imageinfo", "iiprop": "url|extmetadata|mime|size",
                      "iiextmetadatafilter": "LicenseShortName|Artist|Credit|LicenseUrl", **cont}
            data = self.client.get_json(self.api_url, params)
            if not isinstance(data, dict):
                raise BackendError(f"Wikimedia answered with {type(data).__name__}, not an object, for {query!r}.")
            if "error" in data:
                err = data["error"]
                raise BackendError(f"Wikimedia API error for {query!r}: {err.get('code')}: {err.get('info')}")
            pages = (data.get("query") or {}).get("pages") or {}
            items = pages.values() if isinstance(pages, dict) else pages
            for page in sorted(items, key=lambda p: p.get("index", 0)):
                info = (page.get("imageinfo") or [{}])[0]
                if not info.get("url") or (info.get("mime") and info["mime"] not in _IMAGE_MIMES):
                    continue
                meta = info.get("extmetadata") or {}
                rank += 1
                title = page.get("title", "")
                artist = strip_html((meta.get("Artist") or {}).get("value"))
                lic = strip_html((meta.get("LicenseShortName") or {}).get("value"))
                yield SearchResult(
                    ref=info["url"], rank=rank, title=title, license=lic,
                    attribution=f"{title.removeprefix('File:')} by {artist}" if artist else title,
                    landing_url=info.get("descriptionurl", ""),
                    meta={"pageid": page.get("pageid"), "mime": info.get("mime"), "width": info.get("width"),
                          "height": info.get("height"), "artist": artist})
                if rank >= limit:
                    return
            if "continue" not in data:
                return
            cont = {k: v for k, v in data["continue"].items()}

    def describe(self) -> str:
        return f"wikimedia:{self.api_url}"
