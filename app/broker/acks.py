"""Acks inside the group commit, and what they remove (docs/architecture.md sections 5 and 18.3).

The decision is ``policy.removed_after_ack``; here it is applied to rows. Pulsar subscriptions of a
topic hold its messages too: a message is not removed while a subscription that existed when it was
published has not acked it. Topics without subscriptions (every DASF topic) keep the cache policy's
ack as one DELETE: the subscription condition is a clause of it, one index probe that finds nothing.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Collection, Sequence
from datetime import datetime
from typing import TYPE_CHECKING

from django.db import connection
from django.utils import timezone

from app.broker.models import Delivery, Message, Topic
from app.broker.permissions import consumer_principals
from app.broker.policy import StorePolicy, removed_after_ack
from app.pulsar.models import Subscription, SubscriptionMessage

if TYPE_CHECKING:
    from app.broker.services import Ack


def apply_acks(acks: Sequence[Ack]) -> None:
    """DASF-shape acks (per principal)."""
    by_topic: dict[tuple[int, StorePolicy], list[Ack]] = defaultdict(list)
    for ack in acks:
        by_topic[(ack.topic_id, ack.policy)].append(ack)
    now = timezone.now()
    for (topic_id, policy), acks_of_topic in by_topic.items():
        # One principal acking the same message twice in a batch (two of its connections got
        # it) is one ack: PostgreSQL refuses an upsert touching a row twice.
        group = list({(a.message_id, a.principal): a for a in acks_of_topic}.values())
        by_principal: dict[str, set[uuid.UUID]] = defaultdict(set)
        for ack in group:
            by_principal[ack.principal].add(ack.message_id)
        if policy is StorePolicy.CACHE:
            removed = _delete_acked(topic_id, {a.message_id for a in group})
            for principal, acked_ids in by_principal.items():
                if acked_ids - removed:
                    # Kept for a subscription (or gone already): its principal acked it all the same.
                    record_acks(topic_id, principal, acked_ids - removed, now)
            continue
        for principal, acked_ids in by_principal.items():
            record_acks(topic_id, principal, acked_ids, now)
        if policy is StorePolicy.CACHEALL:
            pks = list(Message.objects.filter(topic_id=topic_id, message_id__in={a.message_id for a in group})
                       .values_list("pk", flat=True))
            remove_done(topic_id, policy, pks)


def record_acks(topic_id: int, principal: str, message_ids: Collection[uuid.UUID], now: datetime) -> None:
    """Mark stored messages acked by ``principal``, in one prepared upsert (the ORM's lookup plus
    bulk upsert cost several times the statement). Unknown ids match no row."""
    quote = connection.ops.quote_name
    prep = Message._meta.get_field("message_id").get_db_prep_value
    when = Delivery._meta.get_field("acked_at").get_db_prep_value(now, connection)
    ids = [prep(message_id, connection) for message_id in message_ids]
    deliveries, messages = quote(Delivery._meta.db_table), quote(Message._meta.db_table)
    sql = (
        f"INSERT INTO {deliveries} ({quote('message_id')}, {quote('principal')}, {quote('redelivery_count')}, "
        f"{quote('acked_at')}) SELECT {quote('id')}, %s, 0, %s FROM {messages} "
        f"WHERE {quote('topic_id')} = %s AND {quote('message_id')} IN ({', '.join(['%s'] * len(ids))}) "
        f"ON CONFLICT ({quote('message_id')}, {quote('principal')}) DO UPDATE SET {quote('acked_at')} = %s"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [principal, when, topic_id, *ids, when])


def _no_subscription_waits(message_table: str) -> str:
    """SQL: no subscription of the topic (parameter) that existed when the message of
    ``message_table`` was published still has to ack it."""
    quote = connection.ops.quote_name
    subs, rows = quote(Subscription._meta.db_table), quote(SubscriptionMessage._meta.db_table)
    seq = f"{message_table}.{quote('sequence')}"
    return (
        f"NOT EXISTS (SELECT 1 FROM {subs} s WHERE s.{quote('topic_id')} = %s "
        f"AND s.{quote('start_sequence')} < {seq} AND s.{quote('acked_through')} < {seq} "
        f"AND NOT EXISTS (SELECT 1 FROM {rows} r WHERE r.{quote('subscription_id')} = s.{quote('id')} "
        f"AND r.{quote('message_id')} = {message_table}.{quote('id')} AND r.{quote('acked_at')} IS NOT NULL))"
    )


def _delete_acked(topic_id: int, message_ids: set[uuid.UUID]) -> set[uuid.UUID]:
    """The cache policy's ack: delete the messages no subscription still needs, then their
    delivery rows, in two prepared statements (building querysets per batch cost more than running
    them). Returns the ids deleted."""
    quote = connection.ops.quote_name
    prep = Message._meta.get_field("message_id").get_db_prep_value
    to_python = Message._meta.get_field("message_id").to_python
    ids = [prep(message_id, connection) for message_id in message_ids]
    messages, deliveries = quote(Message._meta.db_table), quote(Delivery._meta.db_table)
    with connection.cursor() as cursor:
        cursor.execute(
            f"DELETE FROM {messages} WHERE {quote('topic_id')} = %s "
            f"AND {quote('message_id')} IN ({', '.join(['%s'] * len(ids))}) AND {_no_subscription_waits(messages)} "
            f"RETURNING {quote('id')}, {quote('message_id')}",
            [topic_id, *ids, topic_id],
        )
        removed = cursor.fetchall()
        if removed:
            cursor.execute(
                f"DELETE FROM {deliveries} WHERE {quote('message_id')} IN ({', '.join(['%s'] * len(removed))})",
                [pk for pk, _ in removed],
            )
    return {to_python(message_id) for _, message_id in removed}


def remove_done(topic_id: int, policy: StorePolicy, message_pks: list[int]) -> int:
    """Remove those of these stored messages that ``removed_after_ack`` says may go, with their
    delivery and subscription rows. Returns how many went."""
    if not message_pks or policy not in (StorePolicy.CACHE, StorePolicy.CACHEALL):
        return 0
    sequences = dict(Message.objects.filter(pk__in=message_pks).values_list("pk", "sequence"))
    acked: dict[int, set[str]] = defaultdict(set)
    for message_pk, principal in Delivery.objects.filter(
        message_id__in=sequences, acked_at__isnull=False
    ).values_list("message_id", "principal"):
        acked[message_pk].add(principal)
    consumers = consumer_principals(Topic.objects.get(pk=topic_id)) if policy is StorePolicy.CACHEALL else set()
    waiting = _waiting_subscriptions(topic_id, sequences)
    done = [pk for pk in sequences if removed_after_ack(policy, acked[pk], consumers, waiting.get(pk, ()))]
    if done:
        delete_messages(done)
    return len(done)


def _waiting_subscriptions(topic_id: int, sequences: dict[int, int]) -> dict[int, set[int]]:
    """Per message pk: the subscriptions that existed at its publication and have not acked it."""
    subscriptions = list(Subscription.objects.filter(topic_id=topic_id).values_list("pk", "start_sequence",
                                                                                      "acked_through"))
    if not subscriptions:
        return {}
    acked = set(SubscriptionMessage.objects.filter(
        message_id__in=sequences, acked_at__isnull=False, subscription__topic_id=topic_id,
    ).values_list("subscription_id", "message_id"))
    return {
        pk: {sub for sub, start, through in subscriptions if start < seq and through < seq and (sub, pk) not in acked}
        for pk, seq in sequences.items()
    }


def delete_messages(message_pks: list[int]) -> None:
    """Delete messages with their delivery and subscription rows, one statement each.

    QuerySet.delete() would load every row (frames included) and send signals per object; on the
    ack path that cost more than the rest of the commit. Nothing listens to these deletions.
    """
    for rows in (Delivery.objects.filter(message_id__in=message_pks),
                 SubscriptionMessage.objects.filter(message_id__in=message_pks),
                 Message.objects.filter(pk__in=message_pks)):
        rows._raw_delete(rows.db)
