"""Subscription acks inside the group commit (docs/architecture.md 18.3): mark the message acked
on the subscription, move its cursor, count the ack as its principal's too, then apply the removal
rule. Called by app.broker.services.write_batch in the transaction that stores messages."""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Collection, Sequence
from datetime import datetime
from typing import TYPE_CHECKING

from django.db import connection
from django.utils import timezone

from app.broker.acks import record_acks, remove_done
from app.broker.models import Message, Topic
from app.pulsar.models import Subscription, SubscriptionMessage

if TYPE_CHECKING:
    from app.broker.services import SubscriptionAck


def apply_subscription_acks(acks: Sequence[SubscriptionAck]) -> None:
    now = timezone.now()
    by_topic: dict[int, list[SubscriptionAck]] = defaultdict(list)
    for ack in acks:
        by_topic[ack.topic_id].append(ack)
    for topic_id, acks_of_topic in sorted(by_topic.items()):
        # Every cursor of the topic, locked (topics and cursors in id order, so two writers never
        # wait for each other in a circle): the removal rule reads them all, and two processes
        # acking one message on two subscriptions must not each miss the other's ack (the message
        # would stay forever). SQLite runs one write transaction at a time anyway.
        cursors = dict(Subscription.objects.select_for_update().filter(topic_id=topic_id).order_by("pk")
                       .values_list("pk", "acked_through"))
        last = Topic.objects.filter(pk=topic_id).values_list("last_sequence", flat=True).first() or 0
        by_subscription: dict[int, list[SubscriptionAck]] = defaultdict(list)
        for ack in acks_of_topic:
            if ack.subscription_id in cursors:  # else deleted meanwhile: nothing to ack
                by_subscription[ack.subscription_id].append(ack)
        acked: set[int] = set()
        for subscription_id, group in by_subscription.items():
            message_ids = {a.message_id for a in group}
            acked |= _mark_acked(subscription_id, topic_id, cursors[subscription_id], message_ids, now)
            by_principal: dict[str, set[uuid.UUID]] = defaultdict(set)
            for ack in group:
                by_principal[ack.principal].add(ack.message_id)
            for principal, message_ids in by_principal.items():
                record_acks(topic_id, principal, message_ids, now)
            _advance(subscription_id, topic_id, cursors[subscription_id], last, now)
        if acked:
            remove_done(topic_id, acks_of_topic[0].policy, sorted(acked))


def _mark_acked(subscription_id: int, topic_id: int, acked_through: int, message_ids: Collection[uuid.UUID],
                now: datetime) -> set[int]:
    """Upsert the subscription's rows of these stored messages above its cursor as acked, in one
    prepared statement; returns their message pks. Messages of the topic at or below
    ``acked_through`` are acked already (or are not the subscription's)."""
    quote = connection.ops.quote_name
    prep = Message._meta.get_field("message_id").get_db_prep_value
    when = SubscriptionMessage._meta.get_field("acked_at").get_db_prep_value(now, connection)
    ids = [prep(message_id, connection) for message_id in message_ids]
    rows, messages = quote(SubscriptionMessage._meta.db_table), quote(Message._meta.db_table)
    sql = (
        f"INSERT INTO {rows} ({quote('subscription_id')}, {quote('message_id')}, {quote('sequence')}, "
        f"{quote('redelivery_count')}, {quote('acked_at')}) "
        f"SELECT %s, {quote('id')}, {quote('sequence')}, 0, %s FROM {messages} "
        f"WHERE {quote('topic_id')} = %s AND {quote('sequence')} > %s "
        f"AND {quote('message_id')} IN ({', '.join(['%s'] * len(ids))}) "
        f"ON CONFLICT ({quote('subscription_id')}, {quote('message_id')}) DO UPDATE SET {quote('acked_at')} = %s "
        f"RETURNING {quote('message_id')}"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [subscription_id, when, topic_id, acked_through, *ids, when])
        return {int(pk) for pk, in cursor.fetchall()}


def _advance(subscription_id: int, topic_id: int, acked_through: int, last_sequence: int, now: datetime) -> None:
    """Move the cursor to just below the lowest stored message the subscription has not acked (or
    to the topic's last sequence), and drop the rows it passed."""
    quote = connection.ops.quote_name
    rows, messages = quote(SubscriptionMessage._meta.db_table), quote(Message._meta.db_table)
    sql = (
        f"SELECT MIN(m.{quote('sequence')}) FROM {messages} m WHERE m.{quote('topic_id')} = %s "
        f"AND m.{quote('sequence')} > %s AND NOT EXISTS (SELECT 1 FROM {rows} r "
        f"WHERE r.{quote('subscription_id')} = %s AND r.{quote('message_id')} = m.{quote('id')} "
        f"AND r.{quote('acked_at')} IS NOT NULL)"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [topic_id, acked_through, subscription_id])
        (lowest,) = cursor.fetchone() or (None,)
    through = max(acked_through, last_sequence if lowest is None else int(lowest) - 1)
    Subscription.objects.filter(pk=subscription_id).update(acked_through=through, last_active=now)
    if through > acked_through:
        passed = SubscriptionMessage.objects.filter(subscription_id=subscription_id, sequence__lte=through)
        passed._raw_delete(passed.db)
