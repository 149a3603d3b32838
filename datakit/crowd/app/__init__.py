"""The annotation app: Starlette served by uvicorn, for an in-house crowd.

Workers are invited (``datakit annotate invite``): each gets a link with a
random secret, of which only a hash is kept; the worker's name comes from the
credential, never from the request. Without any invitation the app serves
loopback clients only, who name themselves (one person on their own machine).

=======  ==============================  =================================================
GET      ``/join?token=SECRET``          sets the credential cookie, redirects to the page
GET      ``/``                           the annotation page (``/static/*`` its files)
GET      ``/operator``                   the operator's page
GET      ``/api/next``                   the worker's next task (the one in progress first), or ``{"done": true}``
GET      ``/api/me``                     the worker's progress, gold score, pause
GET      ``/api/task/<task>``            one task
GET      ``/image/<item>``               an item's image (only items of some task)
GET      ``/api/stats``                  vote counts
POST     ``/api/submit``                 ``{"task", "answers": {item: label}}``: one transaction
POST     ``/api/vote``                   ``{"task", "item", "label"}``: one vote
GET      ``/api/operator``               the operator's view as JSON
POST     ``/api/operator/unpause``       ``{"worker"}``: lift a pause
=======  ==============================  =================================================

In open mode requests name the worker (``?worker=NAME``, ``"worker"`` in the
body) as the app always did. Refusals are JSON ``{"error": reason}``: 400
(malformed JSON, unknown task or item, invalid label), 401 (no, unknown or
revoked credential), 403 (cross-site, paused worker, voting as someone
else), 413 (body over the limit), 415 (not JSON), 429 (over the worker's
rate); nothing is stored on a refusal. A submission's reply lists the gold
items with the expected answer, so the page can show feedback. Workers whose
gold accuracy falls below ``pause_below`` are paused (votes kept, flagged).
Tasks are reloaded when ``tasks.parquet`` changes. Duplicates and durability:
see :mod:`datakit.crowd.db`.
"""
from __future__ import annotations

from datakit.crowd.app.api import create_app
from datakit.crowd.app.server import AnnotateServer, make_server, serve
from datakit.crowd.app.state import AnnotationApp, RequestError

__all__ = ["AnnotateServer", "AnnotationApp", "RequestError", "create_app", "make_server", "serve"]
