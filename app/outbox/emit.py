"""``emit``: write events into the caller's transaction; the relay publishes them after commit.

    with transaction.atomic():
        order.save()
        emit("com.example.order.created", "/orders", {"id": order.pk}, key=f"order-{order.pk}")

A rolled-back transaction leaves no event behind, so nothing is published for it.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import connections, transaction
from django.utils import timezone

from app.outbox import wakeup
from app.outbox.cloudevents import EventIn, Extension, TargetName, encode_data
from app.outbox.models import OutboxEvent

# The first half of the two-integer advisory lock on a key's bucket ("SwYd"), so other users of
# advisory locks in the database do not collide with it. A few buckets bound the locks one
# transaction holds well below the shared lock table (max_locks_per_transaction × connections).
KEY_LOCK_NAMESPACE = 0x53775964
KEY_LOCK_BUCKETS = 1024


class TargetNotConfigured(ValueError):
    """The event names a target this deployment has no connection for."""


def configured_targets() -> set[str]:
    targets = {"topic"}
    if settings.AMQP_URL:
        targets.add("rabbitmq")
    if settings.OUTBOX_REDIS_URL:
        targets.add("redis")
    return targets


def emit(
    type: str,
    source: str,
    data: Any = None,
    *,
    subject: str | None = None,
    key: str | None = None,
    target: TargetName | None = None,
    destination: str = "",
    id: str | None = None,
    time: datetime | None = None,
    datacontenttype: str | None = None,
    dataschema: str | None = None,
    extensions: dict[str, Extension] | None = None,
    using: str = "default",
) -> OutboxEvent:
    """Validate one CloudEvent and insert it in the current transaction of ``using``.

    Raises pydantic.ValidationError for an invalid event, TargetNotConfigured for a target with
    no connection, and IntegrityError for a (source, id) pair emitted before.
    """
    fields: dict[str, Any] = {
        "type": type, "source": source, "data": data, "subject": subject, "key": key, "target": target,
        "destination": destination, "time": time, "datacontenttype": datacontenttype,
        "dataschema": dataschema, "extensions": extensions or {},
    }
    if id is not None:
        fields["id"] = id
    return emit_many([EventIn(**fields)], using=using)[0]


def emit_many(events: Iterable[EventIn], *, using: str = "default") -> list[OutboxEvent]:
    """Insert validated events in one statement, in the current transaction of ``using``."""
    available = configured_targets()
    now = timezone.now()
    rows: list[OutboxEvent] = []
    for event in events:
        target = event.target or settings.OUTBOX_TARGET
        if target not in available:
            raise TargetNotConfigured(f"outbox target {target!r} is not configured here")
        data, content_type = encode_data(event.data, event.datacontenttype)
        rows.append(
            OutboxEvent(
                event_id=event.id, source=event.source, type=event.type, time=event.time or now,
                datacontenttype=content_type, dataschema=event.dataschema, subject=event.subject,
                data=data, extensions=event.extensions, key=event.key, target=target,
                destination=event.destination, created_at=now, next_attempt_at=now,
            )
        )
    if not rows:
        return rows
    with transaction.atomic(using=using):
        _serialise_keys({row.key for row in rows if row.key is not None}, using)
        created = OutboxEvent.objects.using(using).bulk_create(rows)
        wakeup.notify_relays(using)
    return created


def _serialise_keys(keys: set[str], using: str) -> None:
    """Make id order the commit order within each key: on PostgreSQL, ids are handed out at insert
    and transactions commit in any order, so a relay could publish a key's later event before an
    earlier one commits. A transaction-scoped advisory lock on the key's bucket holds the key's
    next emitter until this transaction ends. Buckets, not keys: one lock per key would exhaust
    PostgreSQL's shared lock table ("out of shared memory") in a transaction of some ten thousand
    keyed events (a bulk update, a cascading delete, cqrs_sync); keys sharing a bucket merely wait
    for each other. Taken in sorted order, so two emitters cannot deadlock. SQLite already runs one
    writing transaction at a time."""
    if not keys or connections[using].vendor != "postgresql":
        return
    with connections[using].cursor() as cursor:
        cursor.execute(
            "SELECT pg_advisory_xact_lock(%s, b) FROM unnest(%s::int[]) AS b ORDER BY b",
            [KEY_LOCK_NAMESPACE, key_buckets(keys)],
        )


def key_buckets(keys: Iterable[str]) -> list[int]:
    """The distinct lock buckets of ``keys``, sorted (crc32: the same in every process)."""
    return sorted({zlib.crc32(key.encode()) % KEY_LOCK_BUCKETS for key in keys})


async def aemit(type: str, source: str, data: Any = None, **options: Any) -> OutboxEvent:
    """``emit`` for async code: the event commits on its own (async code has no transaction to
    join; put the whole unit of work in a sync function to emit in its transaction)."""
    event: OutboxEvent = await sync_to_async(emit)(type, source, data, **options)
    return event


async def aemit_many(events: Iterable[EventIn]) -> list[OutboxEvent]:
    created: list[OutboxEvent] = await sync_to_async(emit_many)(list(events))
    return created
