"""A worker's socket session, decided here and called by consumers/worker.py (one ORM call each):
who the token is, what connecting and leaving do to its requests, what its reports change.

A session is the unit of running: a worker that connects starts with nothing running, so whatever
the database still says it runs (a previous connection whose server died, or that has not noticed
the drop yet) goes back to pending at once; a session that ends (the socket dropped, the worker went
silent, its token was disabled) returns what it ran, unless a newer session of the same worker has
begun since (``mark_disconnected`` by its ``connected_at``), which took over already.

Silence: a worker tells it is alive by any frame (``heartbeat`` when it has nothing else to say),
at least every ``heartbeat_interval_s``; its connection notes the time of each, and writes
``last_seen_at`` at most every SEEN_WRITE_FRACTION of WORKER_LOST_AFTER_S (a worker reporting
progress ten times a second costs no ten UPDATEs a second). The database's ``last_seen_at`` so lags
by up to that much, and ``release_lost``, for workers whose server is gone with its socket, waits
that much longer than the socket's own check.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from app.work.models import Result, Status, Worker, WorkRequest
from app.work.queue import runnable
from app.work.tasks import check_size
from app.work.transitions import Returned, complete
from app.work.workers import (
    lost_workers,
    mark_connected,
    mark_disconnected,
    rejection,
    release_requests,
    report_metadata,
    worker_for_key,
)

# Reason codes of ``connection_rejected`` besides workers.TOKEN_DISABLED.
TOKEN_MISSING = "TOKEN_MISSING"  # the handshake carried no token
TOKEN_UNKNOWN = "TOKEN_UNKNOWN"  # no worker has this token (a user's token is none either)

# How often a worker should speak, and how often its connection writes ``last_seen_at``, as parts
# of WORKER_LOST_AFTER_S: several heartbeats fit in the silence that makes a worker lost.
HEARTBEAT_FRACTION = 0.25
SEEN_WRITE_FRACTION = 0.25


@dataclass(frozen=True, slots=True)
class Admitted:
    """A worker that presented its token: who it is, and why it may not connect (None: it may)."""

    worker_id: int
    name: str
    token_id: int
    rejection: str | None


@dataclass(frozen=True, slots=True)
class Opened:
    connected_at: datetime
    concurrency: int
    # What its earlier sessions left running, returned now.
    released: dict[int, Returned]


class Completion(StrEnum):
    """What a worker's ``completed`` did."""

    DONE = "done"
    ABORTED = "aborted"  # it was aborted meanwhile: nothing to complete
    NOT_ITS_OWN = "not_its_own"  # not running on this worker (another's, returned, finished, unknown)


class Ownership(StrEnum):
    """Whether a request a worker reports on is its own."""

    RUNNING = "running"
    ABORTED = "aborted"
    NOT_ITS_OWN = "not_its_own"


def heartbeat_interval_s(lost_after_s: float) -> float:
    return lost_after_s * HEARTBEAT_FRACTION


def seen_write_due(last_write: float | None, now: float, lost_after_s: float) -> bool:
    """Whether a frame heard at ``now`` (seconds, any clock) should be written as ``last_seen_at``."""
    return last_write is None or now - last_write >= lost_after_s * SEEN_WRITE_FRACTION


def admit(key: str) -> Admitted | None:
    """The worker whose token ``key`` is, or None."""
    worker = worker_for_key(key)
    if worker is None:
        return None
    return Admitted(worker.pk, worker.name, worker.token_id, rejection(worker))


def open_session(worker_id: int, now: datetime | None = None) -> Opened | None:
    """The worker connected: mark it and return what its earlier sessions left running. None when
    its token was disabled (or the worker deleted) since it was admitted."""
    now = now or timezone.now()
    with transaction.atomic():
        worker = Worker.objects.select_related("token").filter(pk=worker_id).first()
        if worker is None or rejection(worker) is not None:
            return None
        mark_connected(worker_id, now)
        released = release_requests(worker_id, now)
    return Opened(now, worker.concurrency, released)


def close_session(worker_id: int, connected_at: datetime, now: datetime | None = None) -> dict[int, Returned] | None:
    """The session that began at ``connected_at`` ended: unless a newer one began, the worker is
    disconnected and what it ran goes back to pending (returned). None when it was ended already,
    or a newer session took over: one caller acts."""
    with transaction.atomic():
        if not mark_disconnected(worker_id, connected_at):
            return None
        return release_requests(worker_id, now)


def release_lost(now: datetime | None = None) -> dict[int, dict[int, Returned]]:
    """End the sessions of connected workers silent for WORKER_LOST_AFTER_S (plus the lag of
    ``last_seen_at``): their server is gone, or never noticed. By worker id, what this call
    released. Every server may run it at once: ``close_session`` lets one of them act."""
    lag = timedelta(seconds=settings.WORKER_LOST_AFTER_S * SEEN_WRITE_FRACTION)
    ended: dict[int, dict[int, Returned]] = {}
    for worker_id, connected_at in lost_workers((now or timezone.now()) - lag).values_list("pk", "connected_at"):
        assert connected_at is not None  # lost workers are connected ones
        released = close_session(worker_id, connected_at, now)
        if released is not None:
            ended[worker_id] = released
    return ended


def work_waiting() -> bool:
    """Whether any request could run now (on some worker)."""
    return runnable().exists()


def report_dynamic_metadata(worker_id: int, metadata: dict[str, Any]) -> None:
    """Raises InvalidTaskData when it is larger than WORK_REQUEST_DATA_MAX_BYTES encoded."""
    check_size("metadata", metadata)
    report_metadata(worker_id, metadata)


def ownership(worker_id: int, request_id: int) -> Ownership:
    status = WorkRequest.objects.filter(pk=request_id, worker_id=worker_id).values_list("status", flat=True).first()
    if status == Status.RUNNING:
        return Ownership.RUNNING
    return Ownership.ABORTED if status == Status.ABORTED else Ownership.NOT_ITS_OWN


def report_completed(worker_id: int, request_id: int, result: Result | str, output_data: Any) -> Completion:
    """The worker finished ``request_id``. Raises InvalidTaskData when ``output_data`` is larger than
    WORK_REQUEST_DATA_MAX_BYTES (the request stays running: the worker may report again)."""
    if complete(request_id, result, output_data, worker_id=worker_id):
        return Completion.DONE
    return Completion.ABORTED if ownership(worker_id, request_id) is Ownership.ABORTED else Completion.NOT_ITS_OWN
