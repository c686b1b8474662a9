"""A worker's socket session, decided here and called by consumers/worker.py (one ORM call each):
who the token is, what connecting and leaving do to its requests, what its reports change.

A session is the unit of running: a worker that connects starts with nothing running, so whatever
the database still says it runs (a previous connection whose server died, or that has not noticed
the drop yet) goes back to pending at once; a session that ends (the socket dropped, the worker went
silent, its token was disabled) returns what it ran, unless a newer session of the same worker has
begun since (``disconnect_and_release`` by its ``connected_at``), which took over already. Work is
assigned to a session, not to a worker (``Session``): a connection a newer one replaced, which has
not closed yet, is given nothing more. HTTP polling is a session too, and only one of the two ways
holds a worker at a time: a socket takes over from polling, polling waits for the socket to go.

The worker check reconciles what each connection believes with the database (``reconcile``): a
connection whose session ended elsewhere (another server took it for lost, a newer connection's
notice was dropped) is closed, and one running a request aborted meanwhile (a dropped ``aborted``
notice) is told.

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

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from app.work.deadlocks import retrying_deadlocks
from app.work.models import Session, Status, Via, Worker, WorkRequest
from app.work.queue import runnable
from app.work.transitions import Returned, return_all
from app.work.workers import (
    disconnect_and_release,
    lost_workers,
    mark_connected,
    rejection,
    worker_for_key,
)

# Reason codes of ``connection_rejected`` besides workers.TOKEN_DISABLED.
TOKEN_MISSING = "TOKEN_MISSING"  # the handshake carried no token
TOKEN_UNKNOWN = "TOKEN_UNKNOWN"  # no worker has this token (a user's token is none either)

# How often a worker should speak, and how often its connection writes ``last_seen_at``, as parts
# of WORKER_LOST_AFTER_S: several heartbeats fit in the silence that makes a worker lost.
# How much later than anything an earlier session wrote a new session begins (open_session).
SESSION_STEP = timedelta(microseconds=1)
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
    its token was disabled (or the worker deleted) since it was admitted.

    The session's ``connected_at`` is taken after the worker row is locked and is later than any
    time an earlier session wrote (its start, its last sign of life), whatever the clocks of the
    servers that wrote them: the newest session always has the largest ``connected_at``, which is what
    a ``work.connected`` notice compares (fleet.py)."""

    def body() -> Opened | None:
        with transaction.atomic():
            # Locked as ``assign`` locks it: an assignment to the earlier session commits first (and
            # is returned here) or waits and finds this session in place of the one it was for.
            worker = Worker.objects.select_for_update(no_key=True, of=("self",)).select_related("token").filter(
                pk=worker_id
            ).first()
            if worker is None or rejection(worker) is not None:
                return None
            earlier = [at + SESSION_STEP for at in (worker.connected_at, worker.last_seen_at) if at is not None]
            at = max([now or timezone.now(), *earlier])
            mark_connected(worker_id, at)
            released = return_all(worker_id, at)
        return Opened(at, worker.concurrency, released)

    return retrying_deadlocks(body)


def socket_session(connected_at: datetime) -> Session:
    return Session(Via.SOCKET, connected_at)


def close_session(worker_id: int, connected_at: datetime, now: datetime | None = None) -> dict[int, Returned] | None:
    """The socket session that began at ``connected_at`` ended: unless a newer one began, the worker
    is disconnected and what it ran goes back to pending (returned). None when it was ended already,
    or a newer session took over: one caller acts."""
    return disconnect_and_release(worker_id, connected_at, now=now)


@dataclass(frozen=True, slots=True)
class Ended:
    """A session the lost-worker sweep ended."""

    via: str
    released: dict[int, Returned]


def release_lost(now: datetime | None = None) -> dict[int, Ended]:
    """End the sessions of connected workers silent for WORKER_LOST_AFTER_S (plus the lag of
    ``last_seen_at``): their server is gone, the socket's server never noticed, or a polling worker
    stopped calling. By worker id, what this call ended. Every server may run it at once: each
    session ends once, and not if the worker was heard from since it was read here."""
    lag = timedelta(seconds=settings.WORKER_LOST_AFTER_S * SEEN_WRITE_FRACTION)
    ended: dict[int, Ended] = {}
    lost = lost_workers((now or timezone.now()) - lag)
    seen = lost.values_list("pk", "connected_at", "last_seen_at", "connected_via")
    for worker_id, connected_at, last_seen_at, via in seen:
        assert connected_at is not None  # lost workers are connected ones
        released = disconnect_and_release(worker_id, connected_at, last_seen_at=last_seen_at, now=now)
        if released is not None:
            ended[worker_id] = Ended(via, released)
    return ended


@dataclass(frozen=True, slots=True)
class Believed:
    """What one connection believes: its session, and the requests it was given and still runs."""

    worker_id: int
    connected_at: datetime
    running: frozenset[int]


@dataclass(frozen=True, slots=True)
class Verdict:
    """What the database says of a ``Believed``: whether its session still holds the worker, and
    which of its requests were aborted since (their notice never reached it)."""

    current: bool
    aborted: frozenset[int]


def reconcile(connections: list[Believed]) -> list[Verdict]:
    """The database's word on each connection of a server (two queries, whatever their number)."""
    holding = dict(
        Worker.objects.filter(pk__in={c.worker_id for c in connections}, connected_via=Via.SOCKET)
        .values_list("pk", "connected_at")
    )
    ids = set().union(*(c.running for c in connections)) if connections else set()
    aborted = set(
        WorkRequest.objects.filter(pk__in=ids, status=Status.ABORTED).values_list("pk", "worker_id")
    )
    return [
        Verdict(
            holding.get(c.worker_id) == c.connected_at,
            frozenset(pk for pk in c.running if (pk, c.worker_id) in aborted),
        )
        for c in connections
    ]


def work_waiting() -> bool:
    """Whether any request could run now (on some worker)."""
    return runnable().exists()
