"""Who is calling the worker endpoints (app/api/worker_polling.py): a worker, by its own token.

A worker's token belongs to an inactive user made for it (app/work/workers.py), so the API-wide
``Caller`` (app/api/auth.py) refuses it, and a worker's key does nothing anywhere else in the API.
These endpoints take nothing else: ``Authorization: Token|Bearer <key>`` naming a worker's token,
looked up with ``worker_for_key`` (enabled or not, so a disabled worker is told so). A user's
token, a session or nothing at all is a 401. No session, so no CSRF check: no browser sends that
header on its own. A bulk request's operations (app/api/bulk.py) carry no ``Authorization`` of
their own, so they cannot reach these endpoints.

Every accepted call is a sign of life: the worker counts as connected while it calls within
WORKER_LOST_AFTER_S (app/work/reports.py ``mark_polled``). A worker connected over its socket is
refused here (409) until that socket session ends, but for ``GET`` (reading itself): one worker takes
work one way at a time.
"""

from __future__ import annotations

from typing import Any

from asgiref.sync import sync_to_async
from django.http import HttpRequest
from ninja.errors import HttpError

from app.auth.services import key_from_authorization
from app.server.access_log import note_caller
from app.work.models import Worker
from app.work.reports import mark_polled
from app.work.workers import TOKEN_DISABLED, USERNAME_PREFIX, rejection, worker_for_key

WORKER_TOKEN_REQUIRED = "a worker's token is required (Authorization: Token <the worker's key>)"
WORKER_TOKEN_DISABLED = f"{TOKEN_DISABLED}: this worker's token is disabled"
SOCKET_HELD = (
    "this worker is connected over its socket (/ws/workers/): it takes and reports work there; these calls "
    "are answered once that socket session ends (closed, or taken for lost by the worker check)"
)


class WorkerKey:
    """ninja auth of the worker endpoints: ``request.auth`` is the ``Worker``."""

    # Shown in the OpenAPI document as these operations' security, so clients (and the docs page) know
    # they take a worker's key rather than a user's.
    openapi_security_schema = {
        "type": "apiKey", "in": "header", "name": "Authorization",
        "description": "Token <key> (or Bearer <key>) of a worker's token, as POST /api/v1/workers answered it",
    }

    async def __call__(self, request: HttpRequest) -> Any:
        key = key_from_authorization(request.headers.get("Authorization", ""))
        worker, polled = await sync_to_async(_present)(key) if key else (None, False)
        if worker is None:
            raise HttpError(401, WORKER_TOKEN_REQUIRED)
        note_caller(getattr(request, "scope", {}), f"{USERNAME_PREFIX}{worker.name}")
        if rejection(worker) is not None:
            raise HttpError(401, WORKER_TOKEN_DISABLED)
        # Reading itself is safe while its socket holds it (it shows connected_via "socket"); taking
        # or reporting work is not.
        if not polled and request.method != "GET":
            raise HttpError(409, SOCKET_HELD)
        return worker


def _present(key: str) -> tuple[Worker | None, bool]:
    """The worker of ``key``, and whether it was marked present (it may call, and no socket holds it)."""
    worker = worker_for_key(key)
    if worker is None or rejection(worker) is not None:
        return worker, False
    return worker, mark_polled(worker.pk)


def request_worker(request: HttpRequest) -> Worker:
    """The worker ``WorkerKey`` resolved for this request."""
    worker: Worker = request.auth  # type: ignore[attr-defined]
    return worker
