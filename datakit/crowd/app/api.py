"""The annotation app's HTTP surface: a Starlette application over :class:`AnnotationApp`.

Every ``/api/`` call and image needs a credential (see :mod:`.auth`); refusals
are JSON ``{"error": reason}`` with a 4xx status and store nothing.
"""
from __future__ import annotations

import logging
import time as _time
from pathlib import Path

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from datakit.crowd.app.auth import COOKIE, COOKIE_MAX_AGE, Identity, identify
from datakit.crowd.app.limits import MAX_BODY, RateLimiter, check_same_origin, read_json
from datakit.crowd.app.operator import operator_report
from datakit.crowd.app.state import AnnotationApp, RequestError
from datakit.crowd.credentials import OPERATOR

__all__ = ["create_app", "STATIC"]

log = logging.getLogger("datakit.crowd.app")

STATIC = Path(__file__).resolve().parent.parent / "static"
_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
          ".css": "text/css; charset=utf-8", ".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg",
          ".svg": "image/svg+xml"}
_SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"content-security-policy",
     b"default-src 'self'; img-src 'self'; style-src 'self' 'unsafe-inline'; frame-ancestors 'none'"),
]


def _static_files() -> dict[str, Path]:
    """The only static names served: the regular, visible files of ``static/`` (no subfolders)."""
    return {p.name: p for p in STATIC.iterdir() if p.is_file() and not p.name.startswith(".")}


def _error(exc: RequestError) -> JSONResponse:
    headers = {"Cache-Control": "no-store"}
    if "retry_after" in exc.extra:
        headers["Retry-After"] = str(max(1, int(exc.extra["retry_after"] + 0.999)))
    return JSONResponse({"error": exc.reason} | exc.extra, status_code=exc.status, headers=headers)


def _ok(obj) -> JSONResponse:
    return JSONResponse(obj, headers={"Cache-Control": "no-store"})


class _Headers:
    """Pure ASGI middleware: security headers on every response, one log line per request (no query string)."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start = _time.perf_counter()
        status = [0]

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
                message["headers"] = list(message.get("headers", [])) + _SECURITY_HEADERS
            await send(message)

        try:
            await self.app(scope, receive, send_with_headers)
        finally:
            client = scope.get("client") or ("-", 0)
            log.info("%s %s %s %d %.1fms", client[0], scope["method"], scope["path"], status[0],
                     (_time.perf_counter() - start) * 1e3)


def create_app(state: AnnotationApp, *, max_body: int = MAX_BODY, rate: float | None = 10.0,
               burst: int = 40) -> Starlette:
    """The ASGI application serving ``state``.

    Parameters
    ----------
    max_body : int
        Largest request body in bytes (413 beyond).
    rate, burst : float, int
        Per-worker token bucket over ``/api/`` calls (429 beyond); ``rate=0`` turns it off.
    """
    limiter = RateLimiter(rate, burst)
    files = _static_files()
    creds = state.credentials

    def who(request: Request, operator: bool | None = False, payload=None) -> Identity:
        ident = identify(request, creds, operator=operator)
        if ident.role == "open":  # one bucket per typed name (all share the loopback address)
            name = payload.get("worker") if isinstance(payload, dict) else request.query_params.get("worker")
            limiter.check(f"open:{name if isinstance(name, str) else ''}")
        else:
            limiter.check(ident.key)
        return ident

    async def guarded(request: Request, fn, *, operator: bool | None = False, body: bool = False):
        try:
            if body:
                check_same_origin(request)
                identify(request, creds, operator=operator)  # 401/403 before reading the body
                payload = await read_json(request, max_body)
            else:
                payload = None
            ident = who(request, operator, payload)
            return _ok(await run_in_threadpool(fn, ident, payload))
        except RequestError as exc:
            return _error(exc)

    def _file(path: Path, cache: str = "no-store") -> Response:
        return Response(path.read_bytes(), media_type=_TYPES.get(path.suffix.lower(), "application/octet-stream"),
                        headers={"Cache-Control": cache})

    async def index(request: Request) -> Response:
        return _file(files["index.html"])

    async def operator_page(request: Request) -> Response:
        return _file(files["operator.html"])

    async def static(request: Request) -> Response:
        name = request.path_params["name"]
        if name not in files:
            return _error(RequestError(404, f"no static file {name!r}"))
        return _file(files[name])

    async def join(request: Request) -> Response:
        token = request.query_params.get("token", "")
        cred = await run_in_threadpool(creds.verify, token)
        if cred is None or cred.revoked:
            what = "was revoked" if cred is not None else "is not valid (mistyped, or replaced by a newer one)"
            return HTMLResponse(f"<!doctype html><title>datakit annotate</title><h1>datakit annotate</h1>"
                                f"<p id='error'>This invitation link {what}. Ask the operator for a new one.</p>",
                                status_code=401, headers={"Cache-Control": "no-store"})
        target = "/operator" if cred.role == OPERATOR else "/"
        resp = RedirectResponse(target, status_code=303, headers={"Cache-Control": "no-store"})
        resp.set_cookie(COOKIE, token, max_age=COOKIE_MAX_AGE, httponly=True, samesite="lax",
                        secure=request.url.scheme == "https")
        return resp

    async def image(request: Request) -> Response:
        item = request.path_params["item"]
        try:  # credentials, but no rate limit: a page loads a whole grid of images at once
            await run_in_threadpool(identify, request, creds)
        except RequestError as exc:
            return _error(exc)
        path = state.image_paths.get(item)
        if path is None or not path.is_file():
            return _error(RequestError(404, f"unknown item {item!r}"))
        return FileResponse(path, media_type=_TYPES.get(path.suffix.lower(), "application/octet-stream"),
                            headers={"Cache-Control": "private, max-age=86400"})

    def _name(ident: Identity, request: Request) -> str:
        return ident.worker if ident.role == "worker" else state.check_worker(request.query_params.get("worker"))

    async def api_next(request: Request) -> Response:
        return await guarded(request, lambda ident, _: state.next_task(_name(ident, request)))

    async def api_me(request: Request) -> Response:
        def me(ident, _):
            if ident.role == "open" and not request.query_params.get("worker"):
                return {"mode": "open", "worker": None}
            return state.me(_name(ident, request)) | {"mode": "open" if ident.role == "open" else "invitations"}
        return await guarded(request, me)

    async def api_task(request: Request) -> Response:
        return await guarded(request, lambda ident, _: state.public_task(request.path_params["task"]))

    async def api_stats(request: Request) -> Response:
        return await guarded(request, lambda ident, _: state.stats(), operator=None)  # workers and operator

    def _as(ident: Identity):
        return ident.worker if ident.role == "worker" else None

    async def api_submit(request: Request) -> Response:
        return await guarded(request, lambda ident, p: state.submit(p, _as(ident)), body=True)

    async def api_vote(request: Request) -> Response:
        return await guarded(request, lambda ident, p: state.vote(p, _as(ident)), body=True)

    async def api_operator(request: Request) -> Response:
        return await guarded(request, lambda ident, _: operator_report(state), operator=True)

    async def api_unpause(request: Request) -> Response:
        def unpause(ident, payload):
            worker = state.check_worker(payload.get("worker") if isinstance(payload, dict) else None)
            if not state.db.unpause(worker):
                raise RequestError(400, f"{worker!r} is not paused")
            log.warning("operator unpaused worker %s", worker)
            return {"unpaused": worker}
        return await guarded(request, unpause, operator=True, body=True)

    async def not_found(request: Request, exc: HTTPException) -> Response:
        if exc.status_code == 404:
            what = "endpoint" if request.method != "GET" else "page"
            return _error(RequestError(404, f"no such {what} {request.url.path!r}"))
        return _error(RequestError(exc.status_code, str(exc.detail)))

    async def server_error(request: Request, exc: Exception) -> Response:
        log.exception("internal error on %s %s", request.method, request.url.path)
        return JSONResponse({"error": "internal server error (see the server log)"}, status_code=500)

    routes = [
        Route("/", index), Route("/index.html", index), Route("/operator", operator_page),
        Route("/join", join), Route("/static/{name:path}", static), Route("/image/{item:path}", image),
        Route("/api/next", api_next), Route("/api/me", api_me), Route("/api/task/{task:path}", api_task),
        Route("/api/stats", api_stats), Route("/api/submit", api_submit, methods=["POST"]),
        Route("/api/vote", api_vote, methods=["POST"]), Route("/api/operator", api_operator),
        Route("/api/operator/unpause", api_unpause, methods=["POST"]),
    ]
    app = Starlette(routes=routes, exception_handlers={HTTPException: not_found, Exception: server_error})
    app.state.annotation = state
    app.add_middleware(_Headers)
    return app

