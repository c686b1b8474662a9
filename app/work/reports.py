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

from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db.models import DateTimeField, F, Q, Value
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
# How long a polling worker may take to report a request it was given, as a part of
# WORKER_LOST_AFTER_S (its heartbeat interval, app/work/sessions.py).
REPORT_FRACTION = 0.25


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


def acknowledge(
    worker_id: int, request_id: int, attempt: int | None = None, now: datetime | None = None
) -> WorkRequest:
    """The worker says it has ``request_id`` and is at it (``started``, ``progress``), its run
    ``attempt`` when it says which; NotAssigned or NotRunning otherwise. Noted in ``acknowledged_at``
    (the last such report), which keeps ``unanswered`` from answering the request again."""
    request = own_running(worker_id, request_id)
    if attempt is not None and attempt != request.attempts:
        raise NotRunning(other_run(request_id, attempt, request.attempts), Status.RUNNING)
    request.acknowledged_at = now or timezone.now()
    WorkRequest.objects.filter(
        pk=request_id, worker_id=worker_id, status=Status.RUNNING, attempts=request.attempts
    ).update(acknowledged_at=request.acknowledged_at)
    return request


def unanswered(worker_id: int, now: datetime | None = None) -> WorkRequest | None:
    """A request ``worker_id`` runs and seems to have lost track of, when it asks for work with no
    free slot left (a worker that knows what it runs asks only with a slot to fill): the oldest of
    those it never reported on for a quarter of WORKER_LOST_AFTER_S since it was given (the answer
    that gave it was lost on the way: a client timeout, a dropped connection), or not for a whole
    WORKER_LOST_AFTER_S since its last ``started`` / ``progress`` (the worker restarted, or gave up on
    it). A polling worker that keeps calling is never taken for lost, so such a request would stay
    running with nobody at it. None when there is none."""
    worker = Worker.objects.filter(pk=worker_id).values_list("concurrency", flat=True).first()
    running = WorkRequest.objects.filter(worker_id=worker_id, status=Status.RUNNING)
    if worker is None or running.count() < worker:
        return None
    now = now or timezone.now()
    lost_after = timedelta(seconds=settings.WORKER_LOST_AFTER_S)
    forgotten = running.filter(
        Q(acknowledged_at__isnull=True, started_at__lte=now - lost_after * REPORT_FRACTION)
        | Q(acknowledged_at__lte=now - lost_after)
    )
    return forgotten.order_by(Coalesce("acknowledged_at", "started_at"), "pk").first()


def other_run(request_id: int, attempt: int | None, current: int) -> str:
    named = f"run {attempt}" if attempt is not None else "an earlier run"
    return (f"work request {request_id}: this report is about {named}, but it runs on this worker as run {current} "
            "now (given back and to this worker again meanwhile, or a wrong attempt): nothing recorded")


def complete_own(
    worker_id: int, request_id: int, result: Result | str, output_data: Any = None, *, attempt: int | None = None
) -> WorkRequest | None:
    """Complete the request ``worker_id`` runs (its run ``attempt``, when the worker says which): the
    request as completed, or None when it was deleted right after its completion was recorded. Raises
    NotAssigned, NotRunning, or InvalidTaskData (app/work/tasks.py) for output data that cannot be stored."""
    if transitions.complete(request_id, result, output_data, worker_id=worker_id, attempt=attempt):
        return WorkRequest.objects.filter(pk=request_id).first()
    request = own_running(worker_id, request_id)
    # Running on this worker, but not as the run this report names: given back to pending and to this
    # worker again in between, or a wrong attempt.
    raise NotRunning(other_run(request_id, attempt, request.attempts), Status.RUNNING)


def state_of(request: WorkRequest) -> str:
    return f"{request.status} ({request.result})" if request.result else str(request.status)
