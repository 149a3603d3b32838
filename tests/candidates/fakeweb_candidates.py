"""A tiny programmable HTTP server on 127.0.0.1 for the backend and downloader tests."""
from __future__ import annotations

import json
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable


class FakeWeb:
    """Routes ``path -> handler(query dict, headers) -> (status, headers dict, body bytes)``.

    ``hits`` counts requests per path; ``log`` keeps (path, query, headers).
    """

    def __init__(self) -> None:
        self.routes: dict[str, Callable] = {}
        self.hits: dict[str, int] = {}
        self.log: list[tuple[str, dict, dict]] = []
        web = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                parts = urllib.parse.urlsplit(self.path)
                query = dict(urllib.parse.parse_qsl(parts.query))
                web.hits[parts.path] = web.hits.get(parts.path, 0) + 1
                web.log.append((parts.path, query, dict(self.headers)))
                handler = web.routes.get(parts.path)
                if handler is None:
                    status, headers, body = 404, {"Content-Type": "text/plain"}, b"not found"
                else:
                    status, headers, body = handler(query, dict(self.headers))
                try:
                    self.send_response(status)
                    for k, v in headers.items():
                        self.send_header(k, v)
                    if "Content-Length" not in headers:
                        self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.base = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def route(self, path: str, handler: Callable) -> None:
        self.routes[path] = handler

    def json(self, path: str, fn: Callable[[dict], object]) -> None:
        self.route(path, lambda q, h: (200, {"Content-Type": "application/json"}, json.dumps(fn(q)).encode()))

    def static(self, path: str, body: bytes, content_type: str = "image/png", status: int = 200,
               headers: dict | None = None, delay: float = 0.0) -> None:
        def handler(q, h):
            if delay:
                time.sleep(delay)
            return status, {"Content-Type": content_type, **(headers or {})}, body

        self.route(path, handler)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
