"""The safe downloader: address checks, redirects, limits, magic bytes, decode, content-addressed store."""
from __future__ import annotations

import hashlib
import io
import ipaddress
import struct
import zlib

import pytest
from PIL import Image

from datakit.errors import ImageRejected
from datakit.sources import download as dl
from datakit.sources.download import DownloadPolicy, Downloader, check_host, is_forbidden_address, is_transient


def _policy(**kw):
    return DownloadPolicy(allow_private=True, timeout=5, **kw)


def _png_header_only(width, height):
    """A PNG whose IHDR claims ``width`` x ``height`` (no pixel data needed to trip the bomb guard)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    idat = b"IDAT" + zlib.compress(b"\x00" * 64)
    return (b"\x89PNG\r\n\x1a\n" + struct.pack(">I", len(ihdr)) + chunk + struct.pack(">I", zlib.crc32(chunk))
            + struct.pack(">I", len(idat) - 4) + idat + struct.pack(">I", zlib.crc32(idat)))


@pytest.mark.parametrize("address, forbidden", [
    ("127.0.0.1", True), ("10.1.2.3", True), ("172.16.5.4", True), ("192.168.1.1", True),
    ("169.254.169.254", True), ("224.0.0.1", True), ("0.0.0.0", True), ("100.64.0.1", True),
    ("::1", True), ("fe80::1", True), ("fc00::1", True), ("ff02::1", True), ("::ffff:127.0.0.1", True),
    ("8.8.8.8", False), ("151.101.1.140", False), ("2606:4700:4700::1111", False),
])
def test_forbidden_addresses(address, forbidden):
    assert is_forbidden_address(ipaddress.ip_address(address)) is forbidden


def test_check_host_refuses_loopback_unless_allowed():
    with pytest.raises(ImageRejected, match="non-public address") as info:
        check_host("localhost", 80)
    assert info.value.reason == "private_address"
    assert check_host("127.0.0.1", 80, allow_private=True) == ["127.0.0.1"]


def test_private_server_is_refused_without_allow_private(web, tmp_path, png_bytes):
    web.static("/ok.png", png_bytes())
    with pytest.raises(ImageRejected) as info:
        Downloader(tmp_path, DownloadPolicy()).fetch_url(f"{web.base}/ok.png")
    assert info.value.reason == "private_address"
    assert web.hits.get("/ok.png", 0) == 0          # refused before any connection


def test_good_image_is_stored_by_content_with_type_from_magic_bytes(web, tmp_path, png_bytes):
    data = png_bytes(40, 30)
    # the URL says .jpg and the server says text/html: both are ignored
    web.static("/photos/evil%20name.jpg", data, content_type="text/html")
    got = Downloader(tmp_path, _policy()).fetch_url(f"{web.base}/photos/evil%20name.jpg")
    assert got.id == hashlib.sha256(data).hexdigest()
    assert got.ext == "png" and (got.width, got.height) == (40, 30)
    assert got.path == f"images/{got.id[:2]}/{got.id}.png"
    assert (tmp_path / got.path).read_bytes() == data
    assert "evil" not in got.path
    assert 0 <= got.phash < 2 ** 64


@pytest.mark.parametrize("route, body, policy_kw, reason", [
    ("/text.png", b"<html>not an image</html>" * 10, {}, "not_an_image"),
    ("/empty.png", b"", {}, "empty_file"),
    ("/small.png", None, {"min_width": 64, "min_height": 64}, "too_small"),
    ("/bomb.png", _png_header_only(30000, 30000), {"max_pixels": 10_000_000}, "decompression_bomb"),
    ("/big.png", None, {"max_bytes": 100}, "too_large"),
])
def test_rejections_have_reasons(web, tmp_path, png_bytes, route, body, policy_kw, reason):
    web.static(route, png_bytes(32, 32) if body is None else body)
    with pytest.raises(ImageRejected) as info:
        Downloader(tmp_path, _policy(**policy_kw)).fetch_url(web.base + route)
    assert info.value.reason == reason
    assert not (tmp_path / "images").exists() or not any((tmp_path / "images").rglob("*.*"))


def test_truncated_png_is_rejected(web, tmp_path, png_bytes):
    data = png_bytes(64, 64)
    web.static("/cut.png", data[: len(data) // 2])
    with pytest.raises(ImageRejected) as info:
        Downloader(tmp_path, _policy()).fetch_url(f"{web.base}/cut.png")
    assert info.value.reason in ("truncated", "unreadable")


def test_stream_longer_than_max_bytes_without_content_length(web, tmp_path):
    def handler(q, h):
        return 200, {"Content-Type": "image/png", "Content-Length": "10"}, b"\x89PNG\r\n\x1a\n" + b"0" * 5000

    web.route("/liar.png", handler)
    got = None
    with pytest.raises(ImageRejected) as info:
        got = Downloader(tmp_path, _policy(max_bytes=1000)).fetch_url(f"{web.base}/liar.png")
    # the server lied about its length: the body is cut at Content-Length, which is not an image
    assert got is None and info.value.reason in ("truncated", "not_an_image", "unreadable", "too_large")


def test_http_errors_and_transient_reasons(web, tmp_path):
    with pytest.raises(ImageRejected) as info:
        Downloader(tmp_path, _policy()).fetch_url(f"{web.base}/missing.png")
    assert info.value.reason == "http_404" and not is_transient("http_404")
    web.static("/busy.png", b"", status=503)
    with pytest.raises(ImageRejected) as info:
        Downloader(tmp_path, _policy()).fetch_url(f"{web.base}/busy.png")
    assert info.value.reason == "http_503" and is_transient("http_503")


def test_slow_server_times_out(web, tmp_path, png_bytes):
    web.static("/slow.png", png_bytes(), delay=1.5)
    with pytest.raises(ImageRejected) as info:
        Downloader(tmp_path, DownloadPolicy(allow_private=True, timeout=0.3)).fetch_url(f"{web.base}/slow.png")
    assert info.value.reason == "timeout" and is_transient("timeout")


def test_bad_urls(tmp_path):
    d = Downloader(tmp_path, _policy())
    for url in ("ftp://example.org/a.png", "file:///etc/passwd", "http:///nohost.png"):
        with pytest.raises(ImageRejected) as info:
            d.fetch_url(url)
        assert info.value.reason == "bad_url"


def test_redirects_are_followed_and_every_hop_rechecked(web, tmp_path, png_bytes, monkeypatch):
    data = png_bytes(33, 33, seed=5)
    web.static("/final.png", data)
    web.static("/hop", b"", status=302, headers={"Location": "/final.png"})
    web.static("/to-localhost", b"", status=301, headers={"Location": f"http://localhost:{web.port}/final.png"})
    web.static("/loop", b"", status=302, headers={"Location": "/loop"})
    checked = []
    real = dl.check_host

    def strict(host, port, allow_private=False):
        # allow the numeric test address, but treat the name "localhost" as the internal network it is
        checked.append(host)
        return real(host, port, allow_private=(host == "127.0.0.1"))

    monkeypatch.setattr(dl, "check_host", strict)
    d = Downloader(tmp_path, _policy(max_redirects=3))
    got = d.fetch_url(f"{web.base}/hop")
    assert got.id == hashlib.sha256(data).hexdigest() and got.final_url == f"{web.base}/final.png"
    assert checked == ["127.0.0.1", "127.0.0.1"]
    with pytest.raises(ImageRejected) as info:
        d.fetch_url(f"{web.base}/to-localhost")
    assert info.value.reason == "private_address" and checked[-1] == "localhost"
    assert web.hits.get("/final.png") == 1             # the redirect to localhost was never followed
    with pytest.raises(ImageRejected) as info:
        d.fetch_url(f"{web.base}/loop")
    assert info.value.reason == "too_many_redirects"


def test_local_files_go_through_the_same_checks(tmp_path, png_bytes):
    src = tmp_path / "pool"
    src.mkdir()
    (src / "a.png").write_bytes(png_bytes())
    (src / "b.png").write_bytes(b"GIF89a but not really")
    buf = io.BytesIO()
    Image.new("RGB", (20, 20), (200, 10, 10)).save(buf, format="JPEG")
    (src / "c.bin").write_bytes(buf.getvalue())
    d = Downloader(tmp_path / "out", DownloadPolicy())
    assert d.fetch(str(src / "a.png")).ext == "png"
    assert d.fetch(str(src / "c.bin")).ext == "jpg"        # type from magic bytes, not the name
    with pytest.raises(ImageRejected) as info:
        d.fetch(str(src / "b.png"))
    assert info.value.reason in ("unreadable", "truncated")
    with pytest.raises(ImageRejected, match="file not found"):
        d.fetch(str(src / "nope.png"))


def test_policy_validation():
    with pytest.raises(ValueError, match="timeout must be > 0"):
        DownloadPolicy(timeout=0)
    with pytest.raises(ValueError, match="max_bytes must be >= 1"):
        DownloadPolicy(max_bytes=0)


def test_https_connects_to_the_checked_address_with_the_hostname_verified(tmp_path, png_bytes):
    """A local HTTPS server with a self-signed certificate for 'localhost' (made with openssl)."""
    import shutil
    import ssl
    import subprocess
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    if shutil.which("openssl") is None:
        pytest.skip("openssl not installed (needed to make a test certificate)")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out",
                    str(cert), "-days", "1", "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost"],
                   check=True, capture_output=True)
    data = png_bytes(24, 24, seed=11)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(cert, key)
    server.socket = server_ctx.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        port = server.server_address[1]
        trusting = ssl.create_default_context(cafile=str(cert))
        got = Downloader(tmp_path / "a", _policy(), ssl_context=trusting).fetch_url(f"https://localhost:{port}/x")
        assert got.id == hashlib.sha256(data).hexdigest()
        with pytest.raises(ImageRejected) as info:   # the system store does not trust the test certificate
            Downloader(tmp_path / "b", _policy()).fetch_url(f"https://localhost:{port}/x")
        assert info.value.reason == "connection_error" and "CERTIFICATE_VERIFY_FAILED" in info.value.detail
    finally:
        server.shutdown()
        server.server_close()
