"""The HTTP client every API backend shares: disk cache, rate limit, retries.

* Responses (JSON) are cached on disk, keyed by the full URL, so a re-run
  after an interruption asks the API only for pages it has not seen.
* At most one request per ``min_interval`` seconds per host.
* 429 and 5xx answers and connection errors are retried with exponential
  backoff; a ``Retry-After`` header (seconds or an HTTP date) is honoured.
"""
from __future__ import annotations

import email.utils
import hashlib
import http.client
import json
import logging
import os
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any, Callable, Mapping

from datakit import __version__
from datakit.sources.search.base import BackendError

__all__ = ["HttpClient", "USER_AGENT", "retry_after_seconds"]

logger = logging.getLogger(__name__)

USER_AGENT = f"datakit/{__version__} (dataset construction toolkit; python-urllib)"


def retry_after_seconds(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta seconds or an HTTP date); None if absent/invalid.

    Examples
    --------
    >>> retry_after_seconds("3")
    3.0
    >>> retry_after_seconds(None) is None
    True
    """
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    now = time.time() if now is None else now
    return max(0.0, when.timestamp() - now)


class HttpClient:
    """GET JSON with caching, per-host rate limiting and retries.

    Parameters
    ----------
    cache_dir : path, optional
        Where responses are cached (None: no cache).
    min_interval : float
        Seconds between two requests to one host.
    max_retries : int
        Retries after the first attempt, for 429/5xx/connection errors.
    backoff : float
        First backoff in seconds; doubles each retry (capped by ``max_backoff``).
    timeout : float
        Socket timeout per request, seconds.
    headers : mapping, optional
        Extra request headers (e.g. an API key).
    sleep : callable
        ``time.sleep`` (replaceable in tests).
    """

    def __init__(self, cache_dir: str | os.PathLike | None = None, min_interval: float = 1.0, max_retries: int = 4,
                 backoff: float = 1.0, max_backoff: float = 60.0, timeout: float = 30.0,
                 headers: Mapping[str, str] | None = None, sleep: Callable[[float], None] = time.sleep) -> None:
        if min_interval < 0 or max_retries < 0 or backoff < 0 or timeout <= 0:
            raise ValueError("min_interval, max_retries and backoff must be >= 0 and timeout > 0")
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.min_interval = min_interval
        self.max_retries = max_retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.timeout = timeout
        self.headers = {"User-Agent": USER_AGENT, "Accept": "application/json", **dict(headers or {})}
        self.sleep = sleep
        self._lock = threading.Lock()
        self._last: dict[str, float] = {}
        self.requests = 0  # network requests made (not cache hits)
        self.cache_hits = 0

    @staticmethod
    def build_url(url: str, params: Mapping[str, Any] | None = None) -> str:
        if not params:
            return url
        query = urllib.parse.urlencode([(k, v) for k, v in params.items() if v is not None])
        return f"{url}{'&' if '?' in url else '?'}{query}"

    def _cache_path(self, url: str) -> Path | None:
        if self.cache_dir is None:
            return None
        key = hashlib.sha256(url.encode()).hexdigest()
        return self.cache_dir / key[:2] / f"{key}.json"

    def _wait_turn(self, host: str) -> None:
        with self._lock:
            now = time.monotonic()
            last = self._last.get(host)
            wait = 0.0 if last is None else self.min_interval - (now - last)
            self._last[host] = now + max(wait, 0.0)
        if wait > 0:
            self.sleep(wait)

    def get_json(self, url: str, params: Mapping[str, Any] | None = None) -> Any:
        """The decoded JSON at ``url`` (+ ``params``), from the cache when present.

        Raises
        ------
        BackendError
            A non-retryable status, retries exhausted, or a body that is not JSON.
        """
        full = self.build_url(url, params)
        cache = self._cache_path(full)
        if cache is not None and cache.exists():
            try:
                self.cache_hits += 1
                return json.loads(cache.read_text())["body"]
            except (json.JSONDecodeError, KeyError):
                logger.warning("ignoring corrupt cache entry %s", cache)
        body = self._fetch(full)
        try:
            data = json.loads(body)
        except json.JSONDecodeError as exc:
            raise BackendError(f"{_redact(full)} did not return JSON ({exc}).") from None
        if cache is not None:
            from datakit.store.atomic import atomic_write_text

            atomic_write_text(cache, json.dumps({"url": _redact(full), "fetched": time.time(), "body": data}))
        return data

    def _fetch(self, url: str) -> bytes:
        host = urllib.parse.urlsplit(url).netloc
        attempt = 0
        while True:
            self._wait_turn(host)
            request = urllib.request.Request(url, headers=self.headers)
            retry_wait: float | None = None
            try:
                self.requests += 1
                with urllib.request.urlopen(request, timeout=self.timeout) as resp:
                    return resp.read()
            except urllib.error.HTTPError as exc:
                status = exc.code
                if status != 429 and status < 500:
                    raise BackendError(f"{_redact(url)} answered HTTP {status} {exc.reason}.", status=status) from None
                retry_wait = retry_after_seconds(exc.headers.get("Retry-After") if exc.headers else None)
                problem = f"HTTP {status}"
            except (urllib.error.URLError, TimeoutError, ConnectionError, OSError, http.client.HTTPException) as exc:
                status = None
                problem = f"{type(exc).__name__}: {getattr(exc, 'reason', exc)}"
            except ValueError as exc:  # a malformed URL (e.g. from a json-http config)
                raise BackendError(f"cannot request {_redact(url)}: {exc}") from None
            if attempt >= self.max_retries:
                raise BackendError(f"{_redact(url)} failed after {attempt + 1} attempts ({problem}). "
                                   "Results fetched so far are kept; re-run to resume.", status=status)
            wait = retry_wait if retry_wait is not None else self.backoff * (2 ** attempt)
            wait = min(wait, self.max_backoff)
            logger.warning("%s: %s; retry %d/%d in %.1fs", _redact(url), problem, attempt + 1, self.max_retries, wait)
            self.sleep(wait)
            attempt += 1


def _redact(url: str) -> str:
    """``url`` with likely secrets (key/token/secret query parameters) masked."""
    parts = urllib.parse.urlsplit(url)
    query = [(k, "***" if any(s in k.lower() for s in ("key", "token", "secret", "password")) else v)
             for k, v in urllib.parse.parse_qsl(parts.query, keep_blank_values=True)]
    return urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query)))
