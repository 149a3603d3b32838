"""The ``json-http`` backend: any JSON search API, described by a small config.

A TOML (or JSON) file such as::

    url = "https://api.example.com/search?q={query}&page={page}&per_page={per_page}"
    results = "data.items"            # dotted path to the list of results
    url_field = "links.image"         # dotted path inside one result
    license_field = "license"         # optional
    attribution_field = "author.name" # optional
    title_field = "title"             # optional
    landing_field = "links.html"      # optional
    page_count = "meta.pages"         # optional: stop after this many pages
    next_url = "links.next"           # optional: follow this URL instead of counting pages
    per_page = 20
    first_page = 1
    max_pages = 10
    min_interval = 1.0
    [headers]
    Authorization = "Bearer ${MY_API_KEY}"   # ${VAR} is read from the environment

Dotted paths take integer parts as list indices (``imageinfo.0.url``).
"""
from __future__ import annotations

import json
import os
import urllib.parse
from pathlib import Path
from typing import Any, Iterator

from datakit.errors import DatakitError
from datakit.sources.search.base import BackendError, SearchBackend, SearchResult, env_expand, register_backend
from datakit.sources.search.http import HttpClient

__all__ = ["JsonHttpBackend", "json_path", "load_config", "CONFIG_KEYS"]

#: key -> (required, type)
CONFIG_KEYS: dict[str, tuple[bool, type | tuple]] = {
    "url": (True, str), "results": (True, str), "url_field": (True, str),
    "license_field": (False, str), "attribution_field": (False, str), "title_field": (False, str),
    "landing_field": (False, str), "page_count": (False, str), "next_url": (False, str),
    "per_page": (False, int), "first_page": (False, int), "max_pages": (False, int),
    "min_interval": (False, (int, float)), "headers": (False, dict), "license": (False, str),
}


def json_path(obj: Any, path: str | None, default: Any = None) -> Any:
    """Follow a dotted path (``a.b.0.c``) into nested dicts/lists; ``default`` when any step is missing.

    Examples
    --------
    >>> json_path({"a": [{"b": 3}]}, "a.0.b")
    3
    >>> json_path({"a": {}}, "a.x", "none")
    'none'
    """
    if not path:
        return obj
    for part in path.split("."):
        if isinstance(obj, dict) and part in obj:
            obj = obj[part]
        elif isinstance(obj, list) and part.lstrip("-").isdigit() and -len(obj) <= int(part) < len(obj):
            obj = obj[int(part)]
        else:
            return default
    return obj


def load_config(path: str | os.PathLike) -> dict:
    """Read and check a json-http config (TOML or JSON); errors name the key and the valid keys."""
    path = Path(path)
    if not path.exists():
        raise DatakitError(f"json-http config {path} does not exist.")
    text = path.read_text()
    try:
        if path.suffix.lower() == ".json":
            config = json.loads(text)
        else:
            import tomllib

            config = tomllib.loads(text)
    except (ValueError, json.JSONDecodeError) as exc:
        raise DatakitError(f"Cannot parse json-http config {path}: {exc}") from None
    unknown = set(config) - set(CONFIG_KEYS)
    if unknown:
        raise DatakitError(f"Unknown key(s) {sorted(unknown)} in {path}. Valid keys are {sorted(CONFIG_KEYS)}.")
    for key, (required, kind) in CONFIG_KEYS.items():
        if required and key not in config:
            raise DatakitError(f"{path} is missing the required key {key!r}.")
        if key in config and not isinstance(config[key], kind):
            raise DatakitError(f"{path}: {key!r} must be {getattr(kind, '__name__', kind)}, got {config[key]!r}.")
    if "{query}" not in config["url"]:
        raise DatakitError(f"{path}: url must contain {{query}} (got {config['url']!r}).")
    return config


@register_backend("json-http")
class JsonHttpBackend(SearchBackend):
    """A configurable JSON API backend (see the module docstring for the config).

    Parameters
    ----------
    config : dict
        As returned by :func:`load_config`.
    client : HttpClient, optional
    """

    def __init__(self, config: dict, client: HttpClient | None = None, **client_options) -> None:
        self.config = config
        headers = {k: env_expand(str(v)) for k, v in (config.get("headers") or {}).items()}
        client_options.setdefault("min_interval", config.get("min_interval", 1.0))
        self.client = client if client is not None else HttpClient(headers=headers, **client_options)

    @classmethod
    def from_spec(cls, arg: str | None, **options) -> "JsonHttpBackend":
        if not arg:
            raise DatakitError("The json-http backend needs a config file: --source json-http:CONFIG.toml")
        options.pop("base_url", None)
        return cls(load_config(arg), **options)

    def _url(self, query: str, page: int) -> str:
        c = self.config
        return env_expand(c["url"]).format(query=urllib.parse.quote(query), page=page,
                                           per_page=c.get("per_page", 20))

    def iter_results(self, query: str, limit: int) -> Iterator[SearchResult]:
        c = self.config
        page = c.get("first_page", 1)
        max_pages = c.get("max_pages", 10)
        url = self._url(query, page)
        rank = 0
        for n in range(max_pages):
            data = self.client.get_json(url)
            items = json_path(data, c["results"])
            if not isinstance(items, list):
                raise BackendError(f"{c['results']!r} is not a list in the answer for {query!r} (page {page}).")
            for item in items:
                ref = json_path(item, c["url_field"])
                if not isinstance(ref, str) or not ref:
                    continue
                rank += 1
                yield SearchResult(
                    ref=ref, rank=rank, title=str(json_path(item, c.get("title_field"), "") or ""),
                    license=str(json_path(item, c.get("license_field"), "") or c.get("license", "")),
                    attribution=str(json_path(item, c.get("attribution_field"), "") or ""),
                    landing_url=str(json_path(item, c.get("landing_field"), "") or ""))
                if rank >= limit:
                    return
            if not items:
                return
            if c.get("next_url"):
                nxt = json_path(data, c["next_url"])
                if not nxt:
                    return
                url = urllib.parse.urljoin(url, str(nxt))
            else:
                total = json_path(data, c.get("page_count")) if c.get("page_count") else None
                if isinstance(total, int) and page >= total:
                    return
                page += 1
                url = self._url(query, page)

    def describe(self) -> str:
        return f"json-http:{urllib.parse.urlsplit(self.config['url']).netloc}"
