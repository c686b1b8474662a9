"""Workers: registration, their token, their presence (connected, seen, lost).

A worker's token is an ordinary ``Token`` (app/auth: random key shown once, sha256 hash stored,
disabled by ``disabletoken``, the admin or the API, revocations announced to every server), owned
by a user made for that worker alone: ``worker:<name>``, inactive, with no usable password. An
inactive owner keeps the token out of everything else: the broker, the HTTP API and the admin
authenticate only active users (``token_for_key``), so a worker's key acts as nobody there; the
worker socket and HTTP endpoints look tokens up through ``worker_for_key`` instead. This leaves
app/auth unchanged (``Token.user`` stays required, every use of it stays valid).

Presence is written column by column (``update``), never by saving the row, so a heartbeat never
overwrites an admin's metadata or concurrency and the other way round.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import IntegrityError, transaction
from django.db.models import Q, QuerySet
from django.db.models.signals import pre_delete
from django.utils import timezone

from app.auth.models import Token
from app.auth.services import create_token, hash_key
from app.work.deadlocks import retrying_deadlocks
from app.work.models import WORKER_NAME_MAX_CHARS, Via, Worker
from app.work.tasks import size_problem
from app.work.transitions import Returned, return_all

USERNAME_PREFIX = "worker:"
TOKEN_DISABLED = "TOKEN_DISABLED"


class WorkerNameTaken(ValueError):
    """A worker (or a user named like its owner) of that name exists."""


class InvalidMetadata(ValueError):
    """Worker metadata that is not a JSON object, or larger than WORKER_METADATA_MAX_BYTES."""


def check_metadata(what: str, metadata: Any) -> None:
    """Refuse metadata the scheduler could not match against (not an object) or that is too large."""
    if not isinstance(metadata, dict):
        raise InvalidMetadata(f"{what} must be a JSON object")
    if (problem := size_problem(what, metadata, "WORKER_METADATA_MAX_BYTES")) is not None:
        raise InvalidMetadata(problem)


def register_worker(
    name: str, *, concurrency: int = 1, static_metadata: dict[str, Any] | None = None
) -> tuple[Worker, str]:
    """Create a worker, its owner and its token; returns the worker and the clear key (shown once)."""
    if not name or len(name) > WORKER_NAME_MAX_CHARS or name != name.strip():
        raise ValueError("a worker name is 1-100 characters without surrounding spaces")
    if concurrency < 1:
        raise ValueError("concurrency must be at least 1")
    check_metadata("static_metadata", static_metadata or {})
    try:
        with transaction.atomic():
            owner = get_user_model()(username=f"{USERNAME_PREFIX}{name}", is_active=False)
            owner.set_unusable_password()
            owner.save()
            token, key = create_token(owner, comment=f"worker {name}")
            worker = Worker.objects.create(
                name=name, token=token, concurrency=concurrency, static_metadata=static_metadata or {}
            )
    except IntegrityError:
        raise WorkerNameTaken(f"a worker (or a user {USERNAME_PREFIX}{name}) exists already") from None
    return worker, key


def worker_for_key(key: str) -> Worker | None:
    """The worker whose token has this key, enabled or not (``rejection`` tells), or None."""
    return Worker.objects.select_related("token").filter(token__key_hash=hash_key(key)).first()


def rejection(worker: Worker) -> str | None:
    """Why ``worker`` may not connect (a ``reason_code``), or None."""
    return None if worker.token.enabled else TOKEN_DISABLED


def set_enabled(worker: Worker, enabled: bool) -> None:
    """Enable or disable the worker's token. Saved through the ORM (``enabled`` alone), so disabling
    is announced like any token revocation and closes what the token holds open on every server."""
    token: Token = worker.token
    token.enabled = enabled
    token.save(update_fields=["enabled"])
    if not enabled:
        # A socket session ends when the revocation closes its socket; polling has no socket to
        # close, so its session ends here and what it ran goes back to pending at once.
        polling = Worker.objects.filter(pk=worker.pk, connected_via=Via.HTTP, connected_at__isnull=False)
        connected_at = polling.values_list("connected_at", flat=True).first()
        if connected_at is not None:
            disconnect_and_release(worker.pk, connected_at)


def mark_connected(worker_id: int, now: datetime | None = None) -> None:
    """A socket session opened: it takes over from any earlier one, socket or HTTP."""
    now = now or timezone.now()
    Worker.objects.filter(pk=worker_id).update(connected_at=now, last_seen_at=now, connected_via=Via.SOCKET)


def mark_seen(worker_id: int, now: datetime | None = None) -> None:
    """A heartbeat, a frame or a poll: the worker is still there."""
    Worker.objects.filter(pk=worker_id).update(last_seen_at=now or timezone.now())


def report_metadata(worker_id: int, metadata: dict[str, Any]) -> None:
    """What the worker says about itself (its ``dynamic_metadata``, replaced as a whole). Raises
    InvalidMetadata for one that is not a JSON object or too large."""
    check_metadata("metadata", metadata)
    Worker.objects.filter(pk=worker_id).update(dynamic_metadata=metadata)


def is_lost(connected_at: datetime | None, last_seen_at: datetime | None, now: datetime, lost_after_s: float) -> bool:
    """A connected worker silent for ``lost_after_s`` (WORKER_LOST_AFTER_S) is lost; a disconnected
    one is not lost but gone (its requests were returned when it left)."""
    if connected_at is None:
        return False
    heard = max(connected_at, last_seen_at) if last_seen_at is not None else connected_at
    return now - heard >= timedelta(seconds=lost_after_s)


def lost_workers(now: datetime | None = None) -> QuerySet[Worker]:
    """``is_lost`` in SQL."""
    since = (now or timezone.now()) - timedelta(seconds=settings.WORKER_LOST_AFTER_S)
    return Worker.objects.filter(connected_at__isnull=False, connected_at__lte=since).filter(
        Q(last_seen_at__isnull=True) | Q(last_seen_at__lte=since)
    )


def release_requests(worker_id: int, now: datetime | None = None) -> dict[int, Returned]:
    """The worker is gone (deleted): each request it runs goes back to pending (or, at its last
    attempt, completes as error). Returns what happened to each. For a lost or disconnected worker
    use ``disconnect_and_release``, which makes sure it did not come back meanwhile."""

    def body() -> dict[int, Returned]:
        with transaction.atomic():
            _lock(worker_id)
            return return_all(worker_id, now)

    return retrying_deadlocks(body)


def disconnect_and_release(
    worker_id: int, connected_at: datetime, *, last_seen_at: datetime | None = None, now: datetime | None = None
) -> dict[int, Returned] | None:
    """The worker was seen lost (``lost_workers``) or its connection ended, with these times: mark
    it disconnected and release its requests (``release_requests``), in one transaction and only if
    it is still as seen: connected since ``connected_at`` and, with ``last_seen_at`` (the sweep of
    lost workers), not heard from since. Its row is locked first (FOR NO KEY UPDATE, as ``assign``
    does), so a reconnection or a heartbeat either commits first (and nothing is released: the
    requests are the reconnected worker's) or waits for this. None when nothing was released."""

    def body() -> dict[int, Returned] | None:
        with transaction.atomic():
            seen = _lock(worker_id)
            if seen is None or seen[0] != connected_at or (last_seen_at is not None and seen[1] != last_seen_at):
                return None
            Worker.objects.filter(pk=worker_id).update(connected_at=None, connected_via="")
            return return_all(worker_id, now)

    return retrying_deadlocks(body)


def _lock(worker_id: int) -> tuple[datetime | None, datetime | None] | None:
    """Lock the worker's row; its connected_at and last_seen_at, or None when it is gone."""
    rows = Worker.objects.select_for_update(no_key=True).filter(pk=worker_id).order_by()
    return rows.values_list("connected_at", "last_seen_at").first()


def _worker_deleted(sender: Any, instance: Worker, **kwargs: Any) -> None:
    # A worker goes with its token (deleted through the API, or with its owner): what it ran would
    # otherwise stay running with no worker, and nothing would ever return it.
    release_requests(instance.pk)


def connect() -> None:
    pre_delete.connect(_worker_deleted, sender=Worker, dispatch_uid="work-worker-deleted")
