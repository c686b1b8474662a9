"""A work request's state change as an outbox event, emitted in the transaction that made it.

Type ``switchyard.work_request.<status>`` (pending, running, completed, aborted), source
``/work-requests``, subject the request's id, key ``work_request:<id>``: one request's events are
published in the order they committed. The data is the request's state after the change and why
it changed; task and output data are left out (they may be large: read them from the request).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel

from app.outbox.cloudevents import EventIn
from app.outbox.emit import emit_many
from app.outbox.models import OutboxEvent
from app.work.models import Result, Status, WorkRequest

TYPE_PREFIX = "switchyard.work_request."
SOURCE = "/work-requests"


class Reason(StrEnum):
    """Why the state changed."""

    CREATED = "created"
    RETRIED = "retried"  # created by a retry of ``supersedes``
    ASSIGNED = "assigned"
    COMPLETED = "completed"  # reported by its worker
    ABORTED = "aborted"  # by an admin or a client
    WORKER_LOST = "worker_lost"  # back to pending, or completed as error after the last attempt
    DEPENDENCY_FAILED = "dependency_failed"  # see ``cascaded_from``
    DEPENDENCY_ABORTED = "dependency_aborted"


class WorkRequestState(BaseModel):
    """A work request's state as events and the ``/ws/work-requests/`` feed show it (no task or output data)."""

    id: int
    task_name: str
    status: Status
    result: Result
    priority_base: int
    priority_adjustment: int
    attempts: int
    worker: str | None
    created_by: int | None
    created_at: datetime
    started_at: datetime | None
    completed_at: datetime | None
    supersedes: int | None
    cascaded_from: int | None
    # With reason worker_lost: the worker that was lost (``worker`` is already None when the request
    # went back to pending).
    lost_worker: str | None = None


class WorkRequestEvent(WorkRequestState):
    """The data of a ``switchyard.work_request.<status>`` event: the state after the change, and why."""

    reason: Reason


def event_type(status: str) -> str:
    return f"{TYPE_PREFIX}{status}"


def key_of(request_id: int) -> str:
    return f"work_request:{request_id}"


def state_fields(request: WorkRequest) -> dict[str, Any]:
    """``WorkRequestState``'s fields of ``request`` (its worker loaded with it: select_related)."""
    return {
        "id": request.pk, "task_name": request.task_name, "status": Status(request.status),
        "result": Result(request.result), "priority_base": request.priority_base,
        "priority_adjustment": request.priority_adjustment, "attempts": request.attempts,
        "worker": request.worker.name if request.worker is not None else None,
        "created_by": request.created_by_id, "created_at": request.created_at, "started_at": request.started_at,
        "completed_at": request.completed_at, "supersedes": request.supersedes_id,
        "cascaded_from": request.cascaded_from_id,
    }


def event_of(request: WorkRequest, reason: Reason, lost_worker: str | None = None) -> WorkRequestEvent:
    if reason == Reason.WORKER_LOST and lost_worker is None and request.worker is not None:
        lost_worker = request.worker.name
    return WorkRequestEvent(reason=reason, lost_worker=lost_worker, **state_fields(request))


def state_event(request: WorkRequest, reason: Reason, lost_worker: str | None = None) -> EventIn:
    event = event_of(request, reason, lost_worker)
    return EventIn(
        type=event_type(event.status.value), source=SOURCE, data=event.model_dump(mode="json"),
        subject=str(request.pk), key=key_of(request.pk),
    )


def emit_state(request: WorkRequest, reason: Reason, lost_worker: str | None = None) -> OutboxEvent:
    """Emit ``request``'s current state in the current transaction (call inside the change's)."""
    return emit_many([state_event(request, reason, lost_worker)])[0]


def emit_states(changes: Iterable[tuple[WorkRequest, Reason]]) -> list[OutboxEvent]:
    """Emit the states of one transition (a cascade, a retried subtree) at once, at its end: one
    ``emit_many`` takes the outbox's key locks in sorted order, so two concurrent cascades cannot
    deadlock on them, and takes them only just before commit."""
    return emit_many([state_event(request, reason) for request, reason in changes])
