"""Serving the app with uvicorn on a socket bound up front (so a busy port fails at once)."""
from __future__ import annotations

import logging
import os
import socket
import threading

import uvicorn

from datakit.crowd.app.api import create_app
from datakit.crowd.app.limits import MAX_BODY
from datakit.crowd.app.state import AnnotationApp

__all__ = ["AnnotateServer", "make_server", "serve"]

log = logging.getLogger(__name__)

BACKLOG = 1024


def _bind(host: str, port: int) -> socket.socket:
    family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(BACKLOG)
    except BaseException:
        sock.close()
        raise
    return sock


class AnnotateServer:
    """A bound (not yet serving) uvicorn server for an :class:`AnnotationApp`.

    Like ``http.server``'s servers: ``server_address`` has the bound port,
    :meth:`serve_forever` serves (in any thread), :meth:`shutdown` stops it
    from another thread, :meth:`server_close` releases the socket.
    """

    def __init__(self, app: AnnotationApp, host: str = "127.0.0.1", port: int = 8000, *,
                 max_body: int = MAX_BODY, rate: float | None = 10.0, burst: int = 40) -> None:
        self.app = app
        self.asgi = create_app(app, max_body=max_body, rate=rate, burst=burst)
        self.socket = _bind(host, port)
        self.server_address = self.socket.getsockname()[:2]
        config = uvicorn.Config(self.asgi, log_config=None, access_log=False, lifespan="off", server_header=False,
                                timeout_keep_alive=30, timeout_graceful_shutdown=5, backlog=BACKLOG)
        self._server = uvicorn.Server(config)
        self._done = threading.Event()
        self._started = False

    def serve_forever(self) -> None:
        """Serve until :meth:`shutdown` (or, in the main thread, SIGINT/SIGTERM)."""
        self._started = True
        try:
            self._server.run(sockets=[self.socket])
        finally:
            self._done.set()

    def shutdown(self) -> None:
        self._server.should_exit = True
        if self._started:
            self._done.wait(30)

    def server_close(self) -> None:
        self.socket.close()


def make_server(root: str | os.PathLike, host: str = "127.0.0.1", port: int = 8000,
                db_path: str | os.PathLike | None = None, *, pause_below: float | None = None, min_gold: int = 10,
                max_body: int = MAX_BODY, rate: float | None = 10.0, burst: int = 40) -> AnnotateServer:
    """A ready (bound, not yet serving) server for the dataset at ``root``; ``port=0`` picks a free port.

    Raises OSError when the address cannot be bound. Options: see
    :class:`AnnotationApp` and :func:`~datakit.crowd.app.api.create_app`.
    """
    app = AnnotationApp(root, db_path, pause_below=pause_below, min_gold=min_gold)
    return AnnotateServer(app, host, port, max_body=max_body, rate=rate, burst=burst)


def serve(root: str | os.PathLike, host: str = "127.0.0.1", port: int = 8000, **options) -> None:
    """Serve until interrupted."""
    server = make_server(root, host, port, **options)
    try:
        server.serve_forever()
    finally:
        server.server_close()
