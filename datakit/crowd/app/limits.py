"""What the app refuses before any work: cross-site posts, oversized or malformed bodies, floods.

Every check raises :class:`~datakit.crowd.app.state.RequestError` before
anything is stored, so a refusal changes nothing.
"""
from __future__ import annotations

import json
import threading
import time as _time
from urllib.parse import urlsplit

from starlette.requests import ClientDisconnect, Request

from datakit.crowd.app.state import RequestError

__all__ = ["MAX_BODY", "RateLimiter", "check_same_origin", "read_json"]

MAX_BODY = 1 << 20


class RateLimiter:
    """One token bucket per key (a worker): ``rate`` requests a second on average, bursts up to ``burst``.

    Parameters
    ----------
    rate : float
        Tokens added per second; ``0`` or None turns limiting off.
    burst : int
        Bucket size: requests allowed back to back after a pause.
    """

    def __init__(self, rate: float | None = 10.0, burst: int = 40, *, clock=_time.monotonic) -> None:
        if rate is not None and rate < 0:
            raise ValueError(f"rate must be >= 0, got {rate!r}")
        if burst < 1:
            raise ValueError(f"burst must be >= 1, got {burst!r}")
        self.rate = rate or 0.0
        self.burst = int(burst)
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, last time)
        self._lock = threading.Lock()

    def check(self, key: str) -> None:
        """Take one token for ``key`` or raise RequestError 429 (with ``retry_after`` seconds)."""
        if not self.rate:
            return
        now = self._clock()
        with self._lock:
            tokens, last = self._buckets.get(key, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + (now - last) * self.rate)
            if tokens < 1.0:
                self._buckets[key] = (tokens, now)
                wait = (1.0 - tokens) / self.rate
                raise RequestError(429, f"too many requests: at most {self.rate:g} a second "
                                        f"(bursts of {self.burst}); try again in {wait:.1f} s",
                                   retry_after=round(wait, 2))
            self._buckets[key] = (tokens - 1.0, now)
            if len(self._buckets) > 100_000:  # forget idle buckets (full again anyway)
                full = [k for k, (t, at) in self._buckets.items() if t + (now - at) * self.rate >= self.burst]
                for k in full:
                    del self._buckets[k]


def check_same_origin(request: Request) -> None:
    """Refuse a state-changing request that a browser sent from another site.

    A browser marks where a request comes from (``Sec-Fetch-Site``, ``Origin``);
    a cross-site HTML form cannot send ``Content-Type: application/json``,
    so requiring JSON also stops forms from browsers that send neither header.
    """
    site = request.headers.get("sec-fetch-site")
    if site is not None and site not in ("same-origin", "none"):
        raise RequestError(403, f"cross-site request refused (Sec-Fetch-Site: {site})")
    origin = request.headers.get("origin")
    if origin is not None:
        host = request.headers.get("host", "")
        parts = urlsplit(origin)
        if origin == "null" or parts.netloc.lower() != host.lower():
            raise RequestError(403, f"cross-site request refused (Origin {origin!r} is not this app, {host!r})")
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype != "application/json":
        raise RequestError(415, f"send the body as JSON with Content-Type: application/json "
                                f"(got {ctype or 'no content type'!r})")


async def read_json(request: Request, max_body: int = MAX_BODY):
    """The request's JSON body; RequestError 413 past ``max_body`` bytes, 400 if it is not JSON."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            size = int(declared)
        except ValueError:
            raise RequestError(400, f"invalid Content-Length {declared!r}") from None
        if size > max_body:
            raise RequestError(413, f"body of {size} bytes is over the {max_body}-byte limit")
    chunks, size = [], 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > max_body:
                raise RequestError(413, f"body is over the {max_body}-byte limit")
            chunks.append(chunk)
    except ClientDisconnect:
        raise RequestError(400, "the client went away before sending the whole body") from None
    raw = b"".join(chunks)
    try:
        return json.loads(raw.decode("utf-8") or "null")
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RequestError(400, f"the body is not valid JSON: {exc}") from None
    except RecursionError:
        raise RequestError(400, "the body is not valid JSON: nested too deeply") from None
