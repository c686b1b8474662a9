"""What a worker reports about the requests it was given, over its socket or over HTTP: started,
progress, completed. A worker speaks only of its own running requests; these say which of two
refusals applies otherwise:

- ``NotAssigned``: no request of that id was given to this worker (missing, another worker's, or
  returned to pending after this worker was taken for lost): nothing of it is this worker's business.
- ``NotRunning``: it was this worker's, and ended meanwhile (aborted by a client or an admin, or
  completed already): the worker should stop working on it.

Completion goes through ``transitions.complete`` naming the worker, so the guarded UPDATE itself
refuses a worker that no longer runs the request; the refusal's reason is read afterwards.

A poll is a sign of life too: ``mark_polled`` makes a worker without a socket count as connected
(``Via.HTTP``) while it calls within WORKER_LOST_AFTER_S, so the lost-worker rules treat both kinds
alike. A worker holding a socket session is not polled meanwhile (``SocketHeld``): work given over
HTTP would run where its socket session does not know of it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.db.models import DateTimeField, F, Value
from django.db.models.functions import Coalesce
from django.utils import timezone

from app.work import transitions
from app.work.models import Result, Session, Status, Via, Worker, WorkRequest


class NotAssigned(LookupError):
    """The request is not (and was not) given to this worker."""


class NotRunning(ValueError):
    """The request was this worker's and is no longer running (``status``: what it is now)."""

    def __init__(self, message: str, status: str) -> None:
        super().__init__(message)
        self.status = status


HTTP_SESSION = Session(Via.HTTP)


def mark_polled(worker_id: int, now: datetime | None = None) -> bool:
    """The worker called over HTTP: seen now, and connected since now unless it was already. False
    (and nothing written) while a socket session holds it."""
    now = now or timezone.now()
    return bool(
        Worker.objects.filter(pk=worker_id).exclude(Session(Via.SOCKET).holds()).update(
            last_seen_at=now, connected_via=Via.HTTP,
            connected_at=Coalesce(F("connected_at"), Value(now, output_field=DateTimeField())),
        )
    )


def own_running(worker_id: int, request_id: int) -> WorkRequest:
    """The request ``request_id`` that ``worker_id`` runs; NotAssigned or NotRunning otherwise."""
    request = WorkRequest.objects.filter(pk=request_id, worker_id=worker_id).first()
    if request is None:
        raise NotAssigned(f"work request {request_id} is not assigned to this worker")
    if request.status != Status.RUNNING:
        raise NotRunning(f"work request {request_id} is {state_of(request)}: stop working on it", request.status)
    return request


def acknowledge(worker_id: int, request_id: int, now: datetime | None = None) -> WorkRequest:
    """The worker says it has ``request_id`` (``started``, ``progress``); NotAssigned or NotRunning
    otherwise. Acknowledged, it is no longer answered again by ``unacknowledged``."""
    request = own_running(worker_id, request_id)
    if request.acknowledged_at is None:
        request.acknowledged_at = now or timezone.now()
        WorkRequest.objects.filter(pk=request_id, worker_id=worker_id, status=Status.RUNNING,
                                   acknowledged_at=None).update(acknowledged_at=request.acknowledged_at)
    return request


def unacknowledged(worker_id: int) -> WorkRequest | None:
    """The oldest request given to ``worker_id`` that it never said it has: the answer that gave it
    may have been lost on the way (a client timeout, a dropped connection), and a polling worker
    that keeps calling would otherwise never learn of it, nor be taken for lost, so the request
    would stay running with nobody at it. ``next`` answers it again when it has nothing new."""
    running = WorkRequest.objects.filter(worker_id=worker_id, status=Status.RUNNING, acknowledged_at__isnull=True)
    return running.order_by("started_at", "pk").first()


def complete_own(
    worker_id: int, request_id: int, result: Result | str, output_data: Any = None, *, attempt: int | None = None
) -> WorkRequest:
    """Complete the request ``worker_id`` runs (its run ``attempt``, when the worker says which).
    Raises NotAssigned, NotRunning, or InvalidTaskData (app/work/tasks.py) for output data that
    cannot be stored."""
    if transitions.complete(request_id, result, output_data, worker_id=worker_id, attempt=attempt):
        return WorkRequest.objects.get(pk=request_id)
    own_running(worker_id, request_id)
    # Running on this worker again a moment after the UPDATE missed it: given back to pending and to
    # this worker again in between, a run this report was not about.
    raise NotRunning(
        f"work request {request_id} was given to this worker again meanwhile: report on its new run", Status.RUNNING
    )


def state_of(request: WorkRequest) -> str:
    return f"{request.status} ({request.result})" if request.result else str(request.status)
