"""The safe downloader: every candidate URL becomes a stored image or a reasoned rejection.

Guards, in the order they apply:

* only ``http``/``https`` URLs; the host is resolved with ``getaddrinfo``
  and *every* address is checked with :mod:`ipaddress`: loopback, private,
  link-local, multicast, reserved, unspecified and other non-global
  addresses are refused (``private_address``) unless ``allow_private``; the
  connection then goes to the checked address itself, so a second DNS answer
  cannot redirect it (DNS rebinding);
* redirects are followed by hand (at most ``max_redirects``), and each new
  location is checked the same way;
* a per-read socket ``timeout`` and an overall ``deadline`` per file;
* at most ``max_bytes`` read (``Content-Length`` checked first, then the stream);
* the file type comes from the magic bytes (:func:`datakit.sources.decode.sniff_format`),
  never from the server's ``Content-Type`` or the URL;
* a full decode (:func:`datakit.sources.decode.load_image`), which also
  rejects decompression bombs from the header before allocating pixels;
* a minimum width and height;
* the bytes are stored under their sha256 (:class:`datakit.store.images.ImageStore`);
  server file names are never used.

Rejection reasons (``ImageRejected.reason``): ``bad_url``, ``dns_error``,
``private_address``, ``too_many_redirects``, ``http_<status>``, ``timeout``,
``connection_error``, ``too_large``, ``empty_file``, ``not_an_image``,
``unsupported_format``, ``truncated``, ``unreadable``, ``decompression_bomb``,
``too_small``. :data:`TRANSIENT_REASONS` are retried by a re-run.
"""
from __future__ import annotations

import http.client
import ipaddress
import logging
import os
import socket
import ssl
import time
import urllib.parse
from dataclasses import asdict, dataclass, field
from pathlib import Path

from datakit import __version__
from datakit.errors import ImageRejected
from datakit.store.images import ImageStore

__all__ = [
    "DownloadPolicy",
    "Fetched",
    "Downloader",
    "check_host",
    "is_forbidden_address",
    "is_transient",
    "TRANSIENT_REASONS",
    "ALLOWED_FORMATS",
]

logger = logging.getLogger(__name__)

#: Formats kept (as named by :func:`datakit.sources.decode.sniff_format`) -> file extension.
ALLOWED_FORMATS: dict[str, str] = {"png": "png", "jpeg": "jpg", "gif": "gif", "webp": "webp", "bmp": "bmp",
                                   "tiff": "tif"}
#: Reasons a later run retries (the others are final).
TRANSIENT_REASONS = frozenset({"timeout", "connection_error", "dns_error", "http_429", "http_500", "http_502",
                               "http_503", "http_504"})
_REDIRECTS = (301, 302, 303, 307, 308)


def is_transient(reason: str) -> bool:
    """Whether a rejection reason is worth retrying on a later run."""
    return reason in TRANSIENT_REASONS or (reason.startswith("http_5") and reason[5:].isdigit())


@dataclass
class DownloadPolicy:
    """The limits one download obeys.

    Attributes
    ----------
    allow_private : bool
        Allow loopback/private/link-local/multicast addresses (tests, intranets).
    timeout : float
        Seconds per socket operation (connect, each read).
    deadline : float
        Seconds for one whole file, redirects included.
    max_bytes : int
        Largest file accepted, bytes.
    min_width, min_height : int
        Smallest image accepted, pixels.
    max_pixels : int
        Width x height above which an image is a decompression bomb.
    max_redirects : int
    """

    allow_private: bool = False
    timeout: float = 20.0
    deadline: float = 120.0
    max_bytes: int = 20 * 1024 * 1024
    min_width: int = 16
    min_height: int = 16
    max_pixels: int = 50_000_000
    max_redirects: int = 5
    user_agent: str = f"datakit/{__version__} (image dataset construction)"

    def __post_init__(self) -> None:
        for name in ("timeout", "deadline"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        for name in ("max_bytes", "max_pixels"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("min_width", "min_height", "max_redirects"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")


@dataclass
class Fetched:
    """A stored image: content id, store path, format and pixels' summary."""

    id: str
    path: str
    ext: str
    width: int
    height: int
    phash: int
    nbytes: int
    final_url: str = ""
    meta: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return asdict(self)


def is_forbidden_address(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """True for addresses a public search result must not make us fetch from.

    Examples
    --------
    >>> import ipaddress
    >>> [is_forbidden_address(ipaddress.ip_address(a)) for a in ("127.0.0.1", "10.1.2.3", "169.254.169.254", "8.8.8.8")]
    [True, True, True, False]
    """
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return bool(ip.is_loopback or ip.is_private or ip.is_link_local or ip.is_multicast or ip.is_reserved
                or ip.is_unspecified or not ip.is_global)


def check_host(host: str, port: int, allow_private: bool = False) -> list[str]:
    """Resolve ``host`` and check every address; return the addresses to connect to.

    Raises
    ------
    ImageRejected
        ``dns_error`` when it does not resolve; ``private_address`` when any
        address is not public and ``allow_private`` is False.
    """
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError, OSError) as exc:
        raise ImageRejected("dns_error", f"cannot resolve {host!r}: {exc}") from None
    addrs = []
    for info in infos:
        text = str(info[4][0]).split("%", 1)[0]
        ip = ipaddress.ip_address(text)
        if not allow_private and is_forbidden_address(ip):
            raise ImageRejected("private_address", f"{host} resolves to {ip}, a non-public address "
                                "(refused; pass --allow-private to permit)")
        if text not in addrs:
            addrs.append(text)
    if not addrs:
        raise ImageRejected("dns_error", f"{host!r} has no addresses")
    return addrs


class _PinnedHTTPConnection(http.client.HTTPConnection):
    """Connects to a pre-checked address while sending the real Host header."""

    def __init__(self, host, port, address, timeout):
        super().__init__(host, port, timeout=timeout)
        self._address = address

    def connect(self):
        self.sock = socket.create_connection((self._address, self.port), self.timeout)


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    def __init__(self, host, port, address, timeout, context=None):
        super().__init__(host, port, timeout=timeout, context=context or ssl.create_default_context())
        self._address = address

    def connect(self):
        sock = socket.create_connection((self._address, self.port), self.timeout)
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)


class Downloader:
    """Fetch URLs or read pool files into a content-addressed store, with checks.

    Parameters
    ----------
    store : ImageStore or path
        Where accepted images go (``<root>/images/ab/<sha256>.<ext>``).
    policy : DownloadPolicy, optional
    ssl_context : ssl.SSLContext, optional
        For ``https`` (default: the system's trusted certificates, hostname checked).
    """

    def __init__(self, store: ImageStore | str | os.PathLike, policy: DownloadPolicy | None = None,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        self.store = store if isinstance(store, ImageStore) else ImageStore(store)
        self.policy = policy if policy is not None else DownloadPolicy()
        self.ssl_context = ssl_context

    # -- bytes -> stored image -------------------------------------------------
    def ingest(self, data: bytes, where: str = "<bytes>") -> Fetched:
        """Check ``data`` (type by magic bytes, full decode, size) and store it.

        Raises
        ------
        ImageRejected
        """
        from datakit.hashing import phash
        from datakit.sources.decode import load_image, sniff_format, to_array

        p = self.policy
        if not data:
            raise ImageRejected("empty_file", f"{where}: 0 bytes")
        if len(data) > p.max_bytes:
            raise ImageRejected("too_large", f"{where}: {len(data)} bytes > max_bytes={p.max_bytes}")
        fmt = sniff_format(data)
        if fmt is None:
            raise ImageRejected("not_an_image", f"{where}: content starts with {data[:8]!r}, no image signature")
        if fmt not in ALLOWED_FORMATS:
            raise ImageRejected("unsupported_format", f"{where}: {fmt} (allowed: {sorted(ALLOWED_FORMATS)})")
        image = load_image(data, max_pixels=p.max_pixels)
        width, height = image.size
        if width < p.min_width or height < p.min_height:
            raise ImageRejected("too_small", f"{where}: {width}x{height} < minimum {p.min_width}x{p.min_height}")
        hash_ = phash(to_array(image, "L"))
        image_id, rel = self.store.put(data, ALLOWED_FORMATS[fmt])
        return Fetched(id=image_id, path=rel, ext=ALLOWED_FORMATS[fmt], width=width, height=height, phash=hash_,
                       nbytes=len(data))

    def fetch_file(self, path: str | os.PathLike) -> Fetched:
        """Read a local file (a pool image) through the same checks."""
        path = Path(path)
        try:
            size = path.stat().st_size
            if size > self.policy.max_bytes:
                raise ImageRejected("too_large", f"{path}: {size} bytes > max_bytes={self.policy.max_bytes}")
            data = path.read_bytes()
        except FileNotFoundError:
            raise ImageRejected("unreadable", f"file not found: {path}") from None
        except OSError as exc:
            raise ImageRejected("unreadable", f"cannot read {path}: {exc}") from None
        return self.ingest(data, str(path))

    def fetch(self, ref: str) -> Fetched:
        """A URL (``http``/``https``) or a local path, by the look of ``ref``."""
        if ref.startswith(("http://", "https://")) or "://" in ref:
            return self.fetch_url(ref)
        return self.fetch_file(ref)

    # -- network -------------------------------------------------------------
    def fetch_url(self, url: str) -> Fetched:
        """Download ``url`` safely (see the module docstring) and store it."""
        data, final = self._get(url)
        fetched = self.ingest(data, url)
        fetched.final_url = final
        return fetched

    def _get(self, url: str) -> tuple[bytes, str]:
        p = self.policy
        start = time.monotonic()
        current = url
        for hop in range(p.max_redirects + 1):
            parts = urllib.parse.urlsplit(current)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ImageRejected("bad_url", f"{current!r}: only http(s) URLs with a host are fetched")
            try:
                port = parts.port or (443 if parts.scheme == "https" else 80)
            except ValueError:
                raise ImageRejected("bad_url", f"{current!r}: invalid port") from None
            addresses = check_host(parts.hostname, port, p.allow_private)
            target = urllib.parse.urlunsplit(("", "", parts.path or "/", parts.query, ""))
            resp, conn = self._open(parts, port, addresses, target, current)
            try:
                if resp.status in _REDIRECTS:
                    location = resp.getheader("Location")
                    if not location:
                        raise ImageRejected(f"http_{resp.status}", f"{current}: redirect without Location")
                    current = urllib.parse.urljoin(current, location)
                    logger.debug("redirect %d: %s", hop + 1, current)
                    continue
                if resp.status != 200:
                    raise ImageRejected(f"http_{resp.status}", f"{current}: HTTP {resp.status} {resp.reason}")
                length = resp.getheader("Content-Length")
                if length and length.isdigit() and int(length) > p.max_bytes:
                    raise ImageRejected("too_large", f"{current}: Content-Length {length} > max_bytes={p.max_bytes}")
                chunks, total = [], 0
                while True:
                    if time.monotonic() - start > p.deadline:
                        raise ImageRejected("timeout", f"{current}: took longer than {p.deadline}s")
                    chunk = resp.read(65536)
                    if not chunk:
                        break
                    total += len(chunk)
                    if total > p.max_bytes:
                        raise ImageRejected("too_large", f"{current}: more than max_bytes={p.max_bytes} bytes")
                    chunks.append(chunk)
                return b"".join(chunks), current
            except (socket.timeout, TimeoutError):
                raise ImageRejected("timeout", f"{current}: read timed out after {p.timeout}s") from None
            except (http.client.HTTPException, ConnectionError, OSError) as exc:
                raise ImageRejected("connection_error", f"{current}: {type(exc).__name__}: {exc}") from None
            finally:
                conn.close()
        raise ImageRejected("too_many_redirects", f"{url}: more than {p.max_redirects} redirects")

    def _open(self, parts, port, addresses, target, current):
        p = self.policy
        last: Exception | None = None
        for address in addresses:
            if parts.scheme == "https":
                conn = _PinnedHTTPSConnection(parts.hostname, port, address, p.timeout, self.ssl_context)
            else:
                conn = _PinnedHTTPConnection(parts.hostname, port, address, p.timeout)
            try:
                conn.request("GET", target, headers={"User-Agent": p.user_agent, "Accept": "image/*",
                                                     "Accept-Encoding": "identity"})
                return conn.getresponse(), conn
            except (socket.timeout, TimeoutError) as exc:
                conn.close()
                last = exc
                reason = "timeout"
            except (OSError, http.client.HTTPException) as exc:
                conn.close()
                last = exc
                reason = "connection_error"
        raise ImageRejected(reason, f"{current}: {type(last).__name__}: {last}")
