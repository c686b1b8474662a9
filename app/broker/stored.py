"""A topic's stored messages as an operator sees them: filter, delete, publish again.

Plain functions on the ORM (the HTTP API calls them through ``sync_to_async``). Delivery state is
kept per principal (``Delivery``): a message is ``acked`` once some principal acked it (a Pulsar
subscription's ack is also its principal's), ``redelivered`` once it was handed out again to some
principal, else ``unacked``; with ``principal`` given, the state is that principal's alone.
"""

from __future__ import annotations

import enum
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.db import transaction
from django.db.models import Exists, OuterRef, Q, QuerySet

from app import codec
from app.broker.acks import delete_messages
from app.broker.models import Delivery, Message, Topic
from app.broker.services import NewMessage, producer_identity, write_batch

# Rows per DELETE statement when purging: under SQLite's bound-parameter limit, and short locks.
PURGE_CHUNK = 5_000


class DeliveryState(enum.StrEnum):
    UNACKED = "unacked"
    ACKED = "acked"
    REDELIVERED = "redelivered"


@dataclass(frozen=True, slots=True)
class MessageFilter:
    since: datetime | None = None  # published at or after
    until: datetime | None = None  # published before
    state: DeliveryState | None = None
    principal: str | None = None  # whose delivery state ``state`` means; None: anybody's
    producer: str | None = None  # the producing principal


@dataclass(slots=True)
class DeliveryFacts:
    acked_by: list[str] = field(default_factory=list)
    redelivery_count: int = 0


def _state_q(state: DeliveryState, principal: str | None) -> Q:
    deliveries = Delivery.objects.filter(message=OuterRef("pk"))
    if principal is not None:
        deliveries = deliveries.filter(principal=principal)
    acked = Exists(deliveries.filter(acked_at__isnull=False))
    if state is DeliveryState.ACKED:
        return Q(acked)
    if state is DeliveryState.REDELIVERED:
        return Q(Exists(deliveries.filter(redelivery_count__gt=0)))
    return ~Q(acked)


def filtered(topic: Topic, filters: MessageFilter) -> QuerySet[Message]:
    """The topic's stored messages that match ``filters`` (unordered)."""
    rows = Message.objects.filter(topic=topic)
    if filters.since is not None:
        rows = rows.filter(publish_time__gte=filters.since)
    if filters.until is not None:
        rows = rows.filter(publish_time__lt=filters.until)
    if filters.producer is not None:
        rows = rows.filter(producer_principal=filters.producer)
    if filters.state is not None:
        rows = rows.filter(_state_q(filters.state, filters.principal))
    return rows


def delivery_facts(messages: Iterable[Message]) -> dict[int, DeliveryFacts]:
    """Per message pk: who acked it and its highest redelivery count, in one query."""
    facts: dict[int, DeliveryFacts] = defaultdict(DeliveryFacts)
    rows = Delivery.objects.filter(message_id__in=[m.pk for m in messages]).order_by("principal")
    for message_pk, principal, count, acked_at in rows.values_list(
        "message_id", "principal", "redelivery_count", "acked_at"
    ):
        fact = facts[message_pk]
        if acked_at is not None:
            fact.acked_by.append(principal)
        fact.redelivery_count = max(fact.redelivery_count, count)
    return facts


def find(topic: Topic, message_id: uuid.UUID) -> Message | None:
    return Message.objects.filter(topic=topic, message_id=message_id).select_related("response_topic").first()


def delete(message: Message) -> None:
    """Delete one stored message with its delivery and subscription rows."""
    with transaction.atomic():
        delete_messages([message.pk])


def purge(topic: Topic, filters: MessageFilter) -> int:
    """Delete the topic's stored messages that match ``filters``, a chunk per transaction; how
    many went. Messages published meanwhile are not purged: a purge ends even while producers go on."""
    last = Topic.objects.filter(pk=topic.pk).values_list("last_sequence", flat=True).first() or 0
    matching = filtered(topic, filters).filter(sequence__lte=last).order_by("sequence")
    deleted = 0
    while True:
        with transaction.atomic():
            pks = list(matching.values_list("pk", flat=True)[:PURGE_CHUNK])
            delete_messages(pks)
        deleted += len(pks)
        if len(pks) < PURGE_CHUNK:
            return deleted


@dataclass(frozen=True, slots=True)
class Resent:
    message_id: uuid.UUID
    sequence: int | None  # None: the topic stores nothing now, the copy went to live consumers only
    publish_time: datetime
    frame: str


def resend(message: Message, topic: Topic, user: Any, now: datetime,
           deliver: Callable[[Resent], None]) -> Resent:
    """Publish a copy of ``message`` on ``topic`` as a new message (a new messageId and publish
    time; payload, properties, context, key and response topic as they were), produced by
    ``user``. It is stored per the topic's policy now, and ``deliver`` gets it once committed:
    inside a caller's transaction (a bulk request) nothing reaches consumers unless that commits.
    A delay the original asked for (deliverAt, deliverAfterMs) is not repeated: the copy is due at once."""
    message_id = uuid.uuid4()
    frame = codec.loads(message.frame)
    frame["messageId"] = str(message_id)
    frame["publishTime"] = now.isoformat()
    # The copy is due at once, and its redeliveries are counted afresh.
    for stale in ("redeliveryCount", "deliverAt", "deliverAfterMs"):
        frame.pop(stale, None)
    text = codec.dumps(frame)
    if not topic.policy.stores:
        sent = Resent(message_id, None, now, text)
        transaction.on_commit(lambda: deliver(sent))
        return sent
    producer_id, principal = producer_identity(user)
    op = NewMessage(
        topic_id=topic.pk, message_id=message_id, producer_id=producer_id, producer_principal=principal,
        properties=message.properties, payload=message.payload, context=message.context, publish_time=now,
        frame=text, response_topic_id=message.response_topic_id,
    )
    with transaction.atomic():
        [result] = write_batch([op])
        if isinstance(result, Exception):
            raise result
        assert result is not None
        sent = Resent(message_id, result, now, text)
        transaction.on_commit(lambda: deliver(sent))
    return sent
