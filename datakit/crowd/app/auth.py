"""Who is asking: a worker's or the operator's credential, or the one person of open mode.

A credential is the secret of an invitation link, sent as the ``datakit_annotate``
cookie (set when the link is opened) or as ``Authorization: Bearer <secret>``.
Open mode -- no worker was ever invited -- serves loopback clients only, who
name themselves in each request as before.
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from starlette.requests import Request

from datakit.crowd.app.state import RequestError
from datakit.crowd.credentials import OPERATOR, CredentialStore

__all__ = ["COOKIE", "Identity", "identify", "is_loopback", "token_of"]

COOKIE = "datakit_annotate"
COOKIE_MAX_AGE = 30 * 24 * 3600


@dataclass(frozen=True)
class Identity:
    """``role``: ``"worker"``, ``"operator"`` or ``"open"`` (no invitations; ``worker`` None)."""

    role: str
    worker: str | None = None

    @property
    def key(self) -> str:
        """The rate limiter's key."""
        return f"{self.role}:{self.worker or ''}"


def is_loopback(host: str | None) -> bool:
    if host in ("localhost",):
        return True
    try:
        return ipaddress.ip_address(host or "").is_loopback
    except ValueError:
        return False


def token_of(request: Request) -> str | None:
    """The secret a request carries (the bearer header wins over the cookie), or None."""
    header = request.headers.get("authorization", "")
    if header[:7].lower() == "bearer ":
        return header[7:].strip()
    return request.cookies.get(COOKIE) or None


def identify(request: Request, credentials: CredentialStore, *, operator: bool | None = False) -> Identity:
    """The identity behind ``request``, or RequestError 401/403 saying what to do.

    Parameters
    ----------
    operator : bool or None
        The operator's pages (True), a worker's (False) or either (None).
    """
    token = token_of(request)
    if token is not None:
        cred = credentials.verify(token)
        if cred is None:
            raise RequestError(401, "this credential is not valid (mistyped, or replaced by a newer invitation); "
                                    "open the latest invitation link the operator sent you")
        if cred.revoked:
            raise RequestError(401, f"the invitation of {cred.worker!r} was revoked; ask the operator for a new one")
        if operator is True and cred.role != OPERATOR:
            raise RequestError(403, "the operator's pages need the operator's link "
                                    "(`datakit annotate invite DATASET --operator`)")
        if operator is False and cred.role == OPERATOR:
            raise RequestError(403, "this is the operator's credential; open a worker's invitation link to annotate")
        return Identity(role=cred.role, worker=cred.worker)
    client = request.client.host if request.client else None
    if credentials.has_workers():
        raise RequestError(401, "no credential: open the invitation link the operator sent you "
                                "(or send Authorization: Bearer <secret>)")
    if not is_loopback(client):
        raise RequestError(403, "this app has no invitations, so it serves only this machine; the operator "
                                "must invite workers (`datakit annotate invite DATASET --workers ...`)")
    if operator is True and credentials.has_operator():
        raise RequestError(401, "the operator's pages need the operator's link")
    return Identity(role="open")
