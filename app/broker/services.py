"""Broker services: plain synchronous functions on the ORM, called through ``database_sync_to_async``.

Nothing here knows about sockets or frames; consumers translate frames into these calls.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import DataError, IntegrityError, ProgrammingError, connection, transaction
from django.db.models import Exists, OuterRef, QuerySet
from django.utils import timezone

from app.auth.services import principal_of
from app.broker.acks import apply_acks
from app.broker.models import Delivery, Message, Topic
from app.broker.permissions import revoke_all
from app.broker.policy import StorePolicy
from app.broker.statements import hot_statements
from app.pulsar.cursors import apply_subscription_acks
from app.server.metrics import TALLY


class TopicError(Exception):
    """A topic cannot be used as asked; the message is the reason given to the client."""


@dataclass(slots=True)
class NewMessage:
    topic_id: int
    message_id: uuid.UUID
    producer_id: int | None
    producer_principal: str
    properties: Any
    payload: str | None
    context: Any
    publish_time: datetime
    frame: str
    response_topic_id: int | None = None
    deliver_at: datetime | None = None  # Pulsar's delayed delivery (Message.deliver_at)


@dataclass(slots=True)
class Ack:
    topic_id: int
    policy: StorePolicy
    message_id: uuid.UUID
    principal: str


@dataclass(slots=True)
class SubscriptionAck:
    """A consumer's ack on a Pulsar subscription (docs/architecture.md 18.3); also its principal's."""

    topic_id: int
    policy: StorePolicy
    subscription_id: int
    message_id: uuid.UUID
    principal: str


@dataclass(slots=True)
class DeadLetter:
    """Move one message of a subscription to its dead letter topic: ``copy`` (a new messageId, the
    original's payload, properties and key, its topic_id the dead letter topic's) is stored and the
    original acked on the subscription, in one transaction. Its result is the copy's sequence."""

    topic_id: int
    policy: StorePolicy
    subscription_id: int
    message_id: uuid.UUID
    principal: str
    copy: NewMessage

    def ack(self) -> SubscriptionAck:
        return SubscriptionAck(self.topic_id, self.policy, self.subscription_id, self.message_id, self.principal)


@dataclass(frozen=True, slots=True)
class Replay:
    sequence: int
    message_id: str
    frame: str
    redelivery_count: int


Op = NewMessage | Ack | SubscriptionAck | DeadLetter
# Per op: the sequence given to a stored message, None for an applied ack, or the failure.
OpResult = int | None | Exception


# --- topics --------------------------------------------------------------------------------


def get_topic(slug: str) -> Topic | None:
    return Topic.objects.select_related("response_for").filter(slug=slug).first()


def topic_slugs() -> list[str]:
    """Every topic's name (the directory a server keeps in memory)."""
    return list(Topic.objects.values_list("slug", flat=True).iterator(chunk_size=10_000))


def record_pong(topic_id: int) -> None:
    Topic.objects.filter(pk=topic_id).update(last_pong=timezone.now())


def record_api_info(topic_id: int, api_info: Any) -> None:
    Topic.objects.filter(pk=topic_id).update(api_info=api_info, last_pong=timezone.now())


# --- group commit --------------------------------------------------------------------------


def write_batch(ops: Sequence[Op]) -> list[OpResult]:
    """Apply inserts and acks in one transaction; if that fails, each op alone.

    One bad op (say, a producer reusing a messageId) must not fail its neighbours.
    """
    try:
        with transaction.atomic():
            return _apply(ops)
    except IntegrityError:
        if len(ops) == 1:
            return [IntegrityError("duplicate message")]
    except (DataError, ProgrammingError):
        # Something in one op the database refused; an unreachable database (OperationalError)
        # is not retried op by op, it fails the whole batch at once.
        if len(ops) == 1:
            raise
    results: list[OpResult] = []
    for op in ops:
        try:
            with transaction.atomic():
                results.extend(_apply([op]))
        except Exception as exc:
            results.append(exc)
    return results


def _apply(ops: Sequence[Op]) -> list[OpResult]:
    results: list[OpResult] = [None] * len(ops)
    inserts: dict[int, list[int]] = defaultdict(list)
    acks: list[Ack] = []
    subscription_acks: list[SubscriptionAck] = []
    for index, op in enumerate(ops):
        if isinstance(op, NewMessage):
            inserts[op.topic_id].append(index)
        elif isinstance(op, DeadLetter):
            inserts[op.copy.topic_id].append(index)
            subscription_acks.append(op.ack())
        elif isinstance(op, SubscriptionAck):
            subscription_acks.append(op)
        else:
            acks.append(op)
    statements = hot_statements()
    # Topic rows are locked in id order: two processes' batches (a dead letter op puts a second
    # topic in one) cannot wait on each other.
    for topic_id, indexes in sorted(inserts.items()):
        first = statements.store_messages(topic_id, [_inserted(ops[index]) for index in indexes])
        if first is None:
            raise TopicError(f"topic {topic_id} no longer exists")
        for offset, index in enumerate(indexes):
            results[index] = first + offset
    if acks:
        apply_acks(acks, lock_with={op.topic_id for op in subscription_acks})
    if subscription_acks:
        apply_subscription_acks(subscription_acks)
    return results


def _inserted(op: Op) -> NewMessage:
    """The message an insert op stores."""
    if isinstance(op, DeadLetter):
        return op.copy
    assert isinstance(op, NewMessage)
    return op


# --- replay --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ReplayPage:
    replays: list[Replay]
    # The topic's last sequence, read before the page: every stored message up to it was either
    # in this (or an earlier) page or is not outstanding for this principal.
    last_sequence: int


@dataclass(frozen=True, slots=True)
class ReplayRequest:
    """What ``outstanding`` is asked: the page after ``after`` of what ``principal`` has not acked."""

    topic_id: int
    policy: StorePolicy
    principal: str
    after: int = 0
    limit: int = 500
    redelivery: bool = True


def outstanding(
    topic_id: int, policy: StorePolicy, principal: str, *, after: int = 0, limit: int = 500,
    redelivery: bool = True,
) -> ReplayPage:
    """The next page of messages ``principal`` has not acked, in publish order. With
    ``redelivery`` they are counted as redelivered (a reconnect), else not (a gap repair)."""
    return outstanding_pages([ReplayRequest(topic_id, policy, principal, after, limit, redelivery)])[0]


# Reads of a page again after a message of it was deleted while its redelivery was counted.
REPLAY_READ_ATTEMPTS = 3


def outstanding_pages(requests: Sequence[ReplayRequest]) -> list[ReplayPage]:
    """``outstanding`` for each request, in one transaction (consumers attaching together: see
    app/broker/replays.py). Equal requests share one read; each one with ``redelivery`` counts its
    own redelivery, as a call of its own would."""
    if not any(request.policy.stores for request in requests):
        return [ReplayPage([], 0) for _ in requests]
    for attempt in range(1, REPLAY_READ_ATTEMPTS + 1):
        try:
            pages = _outstanding_pages(requests)
        except IntegrityError:
            # A cache ack (another principal's, another process's) deleted a message of a page after
            # it was read: its new delivery row has nothing to point to and the transaction is undone,
            # counts included. Read again, without it; inside a caller's transaction nothing can be.
            if attempt == REPLAY_READ_ATTEMPTS or connection.in_atomic_block:
                raise
            continue
        # Counted once the counts are kept (not for an attempt that was undone).
        TALLY.redeliveries += sum(len(page.replays) for page, request in zip(pages, requests, strict=True)
                                  if request.redelivery)
        return pages
    raise AssertionError("unreachable")


def _outstanding_pages(requests: Sequence[ReplayRequest]) -> list[ReplayPage]:
    read: dict[tuple[int, StorePolicy, str, int, int], tuple[list[tuple[int, int, uuid.UUID, str]], int]] = {}
    pages: list[ReplayPage] = []
    with transaction.atomic():
        for request in requests:
            if not request.policy.stores:
                pages.append(ReplayPage([], 0))
                continue
            key = (request.topic_id, request.policy, request.principal, request.after, request.limit)
            if key not in read:
                read[key] = _read_page(*key)
            page, last = read[key]
            counted = request.redelivery and page
            counts = _count_redelivery([pk for pk, *_ in page], request.principal) if counted else {}
            replays = [Replay(seq, str(mid), frame, counts.get(pk, 0)) for pk, seq, mid, frame in page]
            pages.append(ReplayPage(replays, last))
    return pages


def _read_page(topic_id: int, policy: StorePolicy, principal: str, after: int,
               limit: int) -> tuple[list[tuple[int, int, uuid.UUID, str]], int]:
    """(pk, sequence, messageId, frame) of the page, and the topic's last sequence read before it."""
    last = Topic.objects.filter(pk=topic_id).values_list("last_sequence", flat=True).first() or 0
    messages = _unacked(topic_id, policy, principal).filter(sequence__gt=after, sequence__lte=last)
    return list(messages.order_by("sequence").values_list("pk", "sequence", "message_id", "frame")[:limit]), last


def _count_redelivery(message_pks: list[int], principal: str) -> dict[int, int]:
    existing = {d.message_id: d for d in Delivery.objects.filter(message_id__in=message_pks, principal=principal)}
    for delivery in existing.values():
        delivery.redelivery_count += 1
    Delivery.objects.bulk_update(existing.values(), ["redelivery_count"])
    fresh = [Delivery(message_id=pk, principal=principal, redelivery_count=1)
             for pk in message_pks if pk not in existing]
    # A connection of the same principal in another process may replay the same message now.
    Delivery.objects.bulk_create(fresh, ignore_conflicts=True)
    counts = {pk: d.redelivery_count for pk, d in existing.items()}
    counts.update({d.message_id: 1 for d in fresh})
    return counts


def producer_identity(user: Any) -> tuple[int | None, str]:
    """The producer columns of a message: user id (None when anonymous) and principal."""
    principal = principal_of(user)
    return (user.pk if principal != "anonymous" else None), principal


# --- response topic garbage collection -----------------------------------------------------


def schedule_collection(topic_id: int, principal: str, policy: StorePolicy, now: datetime | None = None) -> bool:
    """The last consumer left a response topic: collect it later unless something is outstanding."""
    now = now or timezone.now()
    if outstanding_exists(topic_id, policy, principal):
        return False
    ttl = timedelta(seconds=settings.RESPONSE_TOPIC_TTL_S)
    Topic.objects.filter(pk=topic_id, response_for__isnull=False).update(garbage_collect_on=now + ttl)
    return True


def cancel_collection(topic_id: int) -> None:
    Topic.objects.filter(pk=topic_id, garbage_collect_on__isnull=False).update(garbage_collect_on=None)


def collect_response_topics(now: datetime | None = None) -> int:
    """Delete response topics whose collection time has passed, with their object permissions."""
    with transaction.atomic():
        due = Topic.objects.response_topics().filter(garbage_collect_on__lte=now or timezone.now())
        ids = list(due.values_list("pk", flat=True))
        if not ids:
            return 0
        revoke_all(ids)
        return int(Topic.objects.filter(pk__in=ids).delete()[1].get("broker.Topic", 0))


def keep_response_topics(slugs: list[str]) -> None:
    """Response topics with consumers in this process are in use, whatever another process decided."""
    Topic.objects.response_topics().filter(slug__in=slugs, garbage_collect_on__isnull=False).update(
        garbage_collect_on=None
    )


def outstanding_exists(topic_id: int, policy: StorePolicy, principal: str) -> bool:
    return policy.stores and _unacked(topic_id, policy, principal).exists()


def _unacked(topic_id: int, policy: StorePolicy, principal: str) -> QuerySet[Message]:
    """Stored messages of the topic that ``principal`` has not acked. Under cache an acked message is
    gone unless a Pulsar subscription still holds it (docs/architecture.md 18.3)."""
    acked = Delivery.objects.filter(message=OuterRef("pk"), principal=principal, acked_at__isnull=False)
    return Message.objects.filter(topic_id=topic_id).filter(~Exists(acked))


def last_sequences(slugs: list[str]) -> dict[str, int]:
    """The highest sequence handed out per topic (committed messages only)."""
    return dict(Topic.objects.filter(slug__in=slugs).values_list("slug", "last_sequence"))
