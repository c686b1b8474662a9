"""What a replica does with one received message (django-cqrs's consumer controller and the
decisions of its RabbitMQ consumer), as plain functions: no event loop, no broker.

``receive`` turns a body into a ``Verdict``: ``ack`` (applied, or a no-op such as a stale revision),
``retry`` (after ``delay_s``, with ``retries`` + 1) or ``dead_letter`` (malformed, unknown
``cqrs_id``, expired, out of retries, values the database refuses, or an unexpected error deciding
on it). The payload is applied in one transaction that has committed when ``receive`` returns, so
the caller acks after the commit.
A database that is unavailable is no fault of the payload: ``receive`` raises
``DatabaseUnavailable`` and the caller tries the same message again once the database is back.
"""

from __future__ import annotations

import contextlib
import copy
import enum
import logging
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import pydantic
from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import InterfaceError, OperationalError, models, transaction
from django.utils import timezone
from pydantic_core import PydanticSerializationError

from app.cqrs.payload import SignalType, TransportPayload, read_body
from app.cqrs.replica import ReplicaRegistry, values_refused

logger = logging.getLogger(__name__)

REQUIRED_KEYS = ("instance_pk", "signal_type", "cqrs_id", "instance_data")


class Outcome(enum.Enum):
    APPLIED = "applied"  # including no-ops the model decided on (stale or duplicate revisions)
    IGNORED = "ignored"  # a SYNC for another queue to a CQRS_ONLY_DIRECT_SYNCS model
    FAILED = "failed"  # the model returned nothing (django-cqrs's failure signal)


def apply(payload: TransportPayload, direct: bool = False) -> Outcome:
    """Apply ``payload`` to its replica model in one transaction (none for CQRS_NO_DB_OPERATIONS
    models); exceptions propagate (the transaction is rolled back). ``direct``: it came to this
    replica's queue alone (routing key ``cqrs.<queue>.<cqrs_id>``), not broadcast."""
    model = ReplicaRegistry.get_model_by_cqrs_id(payload.cqrs_id)
    if model is None:
        raise LookupError(f"no replica model with CQRS_ID {payload.cqrs_id!r}")
    signal = payload.signal_type
    if signal is SignalType.SYNC and model.CQRS_ONLY_DIRECT_SYNCS and not direct:
        return Outcome.IGNORED
    # The model may keep what it is given: a copy, as django-cqrs does.
    data = copy.deepcopy(payload.instance_data)
    kwargs: dict[str, Any] = {}
    if model.CQRS_META:
        kwargs["meta"] = copy.deepcopy(payload.meta)
    atomic = contextlib.nullcontext() if model.CQRS_NO_DB_OPERATIONS else transaction.atomic()
    with atomic:
        if signal is SignalType.DELETE:
            result = model.cqrs_delete(data, **kwargs)
        else:
            kwargs["previous_data"] = copy.deepcopy(payload.previous_data)
            if signal is SignalType.SYNC:
                kwargs["sync"] = True
            result = model.cqrs_save(data, **kwargs)
    return Outcome.APPLIED if result else Outcome.FAILED


@dataclass(frozen=True)
class Verdict:
    action: str  # "ack", "retry" or "dead_letter"
    payload: TransportPayload | None = None  # None only for bodies that are no payload at all
    delay_s: float = 0.0
    reason: str = ""


def parse(body: bytes, now: datetime | None = None) -> TransportPayload | str:
    """The payload in ``body``, or why it is not one this replica takes. Any registered replica
    model's payload is taken, as django-cqrs does: a ``--cqrs-id`` filter only chooses the queue's
    bindings, and a queue bound earlier (or shared) may still carry other models' messages. Refused
    too: what ``read_body`` refuses, a ``cqrs_revision`` or ``cqrs_updated`` that cannot be one
    (``sync_fields_problem``) and a payload that cannot be written back. A body
    without an ``expires`` key (from a master older than the key) expires ``CQRS_MESSAGE_TTL_S`` after
    ``now``, as django-cqrs's ``TransportPayload.from_message`` reads it; ``"expires": null`` never does."""
    raw = read_body(body)
    if isinstance(raw, str):
        return raw
    missing = [key for key in REQUIRED_KEYS if key not in raw]
    if missing:
        return f"missing {', '.join(missing)}"
    try:
        payload = TransportPayload.model_validate(raw)
    except pydantic.ValidationError as exc:
        return f"invalid payload: {exc.errors(include_url=False)}"
    if ReplicaRegistry.get_model_by_cqrs_id(payload.cqrs_id) is None:
        return f"no replica model here for CQRS_ID {payload.cqrs_id!r}"
    problem = sync_fields_problem(payload.instance_data)
    if problem:
        return problem
    try:
        # A retry and a dead letter write the payload again: one that cannot be written (a lone
        # surrogate such as "\ud800", nesting deeper than pydantic writes) is refused now, as received.
        wire(payload)
    except PydanticSerializationError as exc:
        return f"payload cannot be written back as JSON: {exc}"
    if "expires" not in raw:
        payload = payload.model_copy(update={"expires": default_expiry(now or timezone.now())})
    return payload


def sync_fields_problem(instance_data: dict[str, Any]) -> str | None:
    """Why the revision or update time a payload carries cannot be right, or None. Not a failure to
    retry: a revision that is no integer (a string, a float, null) would fail every time, or be
    compared with a stored one wrongly. Missing ones are the model's affair (django-cqrs retries)."""
    if "cqrs_revision" in instance_data:
        revision = instance_data["cqrs_revision"]
        if not isinstance(revision, int) or isinstance(revision, bool):
            return f"cqrs_revision {revision!r:.50} is not an integer"
    if "cqrs_updated" in instance_data and not _reads_as_datetime(instance_data["cqrs_updated"]):
        return f"cqrs_updated {instance_data['cqrs_updated']!r:.50} is not a date and time"
    return None


def _reads_as_datetime(value: Any) -> bool:
    """Whether the replica's ``cqrs_updated`` column (a DateTimeField) reads ``value``, as JSON has it."""
    if not isinstance(value, str):
        return False
    try:
        models.DateTimeField().to_python(value)
    except ValidationError:
        return False
    return True


def default_expiry(now: datetime) -> datetime | None:
    """When a payload that names no expiry expires: django-cqrs takes the replica's own master TTL
    (``CQRS['master']['CQRS_MESSAGE_TTL']``, here ``CQRS_MESSAGE_TTL_S``; 0: never)."""
    ttl: int = settings.CQRS_MESSAGE_TTL_S
    return now + timedelta(seconds=ttl) if ttl > 0 else None


class DatabaseUnavailable(Exception):
    """The replica's database cannot be reached (e.g. PostgreSQL restarted): nothing was applied."""


def database_unavailable(error: BaseException) -> bool:
    """Whether ``error`` means the database failed rather than the payload: a lost or refused
    connection, a deadlock, a lock timeout are OperationalError / InterfaceError. (Django may have
    reconnected by the time it is seen, so the connection's state cannot tell.) The price: a payload
    that always raises one (SQLite's "no such table" for an unmigrated model) stops the consumer,
    with a WARNING each try, until it is fixed. Not so PostgreSQL's "program limit exceeded", an
    OperationalError about the values (``values_refused``)."""
    return isinstance(error, (OperationalError, InterfaceError)) and not values_refused(error)


def receive(
    body: bytes, routing_key: str = "", queue: str = "", now: datetime | None = None,
) -> Verdict:
    """Decide on (and apply) one message from the replica's queue; an unexpected error (in a
    model's ``should_retry_cqrs`` override, say) dead-letters it rather than loop on it."""
    try:
        return _receive(body, routing_key, queue, now)
    except DatabaseUnavailable:
        raise
    except Exception as exc:
        if database_unavailable(exc):
            raise DatabaseUnavailable(str(exc)) from exc
        logger.exception("CQRS message dead-lettered after an unexpected error: %.200r", body)
        return Verdict("dead_letter", reason=f"unexpected error: {exc!r}")


def _receive(body: bytes, routing_key: str, queue: str, now: datetime | None) -> Verdict:
    now = now or timezone.now()
    parsed = parse(body, now)
    if isinstance(parsed, str):
        logger.warning("CQRS message dead-lettered: %s: %.200r", parsed, body)
        return Verdict("dead_letter", reason=parsed)
    payload = parsed
    if payload.is_expired(now):
        logger.warning("CQRS payload expired at %s, dead-lettered: pk = %s (%s).",
                       payload.expires, payload.instance_pk, payload.cqrs_id)
        return Verdict("dead_letter", payload, reason="expired")
    error: Exception | None = None
    try:
        outcome = apply(payload, direct=bool(queue) and routing_key.startswith(f"cqrs.{queue}."))
    except Exception as exc:
        if database_unavailable(exc):
            raise DatabaseUnavailable(str(exc)) from exc
        error, outcome = exc, Outcome.FAILED
    if outcome is not Outcome.FAILED:
        return Verdict("ack", payload)
    return after_failure(payload, error)


def after_failure(payload: TransportPayload, error: Exception | None) -> Verdict:
    """Retry with back-off while the model allows, else dead-letter."""
    model = ReplicaRegistry.get_model_by_cqrs_id(payload.cqrs_id)
    assert model is not None  # parse() checked it
    revision = payload.instance_data.get("cqrs_revision")
    what = f"pk = {payload.instance_pk}, cqrs_revision = {revision} ({payload.cqrs_id})"
    if model.should_retry_cqrs(payload.retries, error):
        delay = float(model.get_cqrs_retry_delay(payload.retries))
        # The traceback once, with the dead letter: a retried failure is often a passing one.
        logger.warning("CQRS %s failed (retry %d in %.1f s): %s: %r", payload.signal_type, payload.retries + 1,
                       delay, what, error if error is not None else "the model returned nothing")
        return Verdict("retry", payload.model_copy(update={"retries": payload.retries + 1}), delay_s=delay)
    if values_refused(error):
        # Bad data from the master, not a fault here: the database says what, no traceback needed.
        logger.warning("CQRS %s refused by the database, dead-lettered: %s: %r", payload.signal_type, what, error)
        return Verdict("dead_letter", payload, reason="refused by the database")
    if error is not None:
        logger.error("CQRS %s failed after %d retries, dead-lettered: %s", payload.signal_type,
                     payload.retries, what, exc_info=error)
    else:
        logger.error("CQRS %s not applied after %d retries, dead-lettered: %s", payload.signal_type,
                     payload.retries, what)
    return Verdict("dead_letter", payload, reason="out of retries")


# --- RabbitMQ layout (django-cqrs's rabbit_mq transport) ------------------------------------------


def dead_letter_queue(queue: str) -> str:
    """Where ``queue``'s dead letters go: ``CQRS_DEAD_LETTER_QUEUE`` (django-cqrs's
    ``CQRS['replica']['dead_letter_queue']``), else ``dead_letter_<queue>``."""
    configured: str | None = settings.CQRS_DEAD_LETTER_QUEUE
    return configured or f"dead_letter_{queue}"


def bindings(queue: str, cqrs_ids: Collection[str] | None = None) -> list[tuple[str, str]]:
    """(queue, routing key) pairs on the CQRS exchange: the replica's queue gets each ``cqrs_id``
    and ``cqrs.<queue>.<cqrs_id>`` (SYNCs sent to this replica alone, and its own retries); its
    dead letter queue (``dead_letter_queue``) ``cqrs.<dead letter queue>.<cqrs_id>``."""
    pairs = []
    for cqrs_id in sorted(ReplicaRegistry.models):
        if cqrs_ids and cqrs_id not in cqrs_ids:
            continue
        pairs.append((queue, cqrs_id))
        pairs.append((queue, requeue_routing_key(queue, cqrs_id)))
        pairs.append((dead_letter_queue(queue), requeue_routing_key(dead_letter_queue(queue), cqrs_id)))
    return pairs


def requeue_routing_key(queue: str, cqrs_id: str) -> str:
    return f"cqrs.{queue}.{cqrs_id}"


def wire(payload: TransportPayload) -> bytes:
    """The payload as django-cqrs writes it (every key, nulls included)."""
    return payload.model_dump_json().encode()
