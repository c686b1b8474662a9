"""Acks inside the group commit, and what they remove (docs/architecture.md sections 5 and 18.3).

The decision is ``policy.removed_after_ack``; here it is applied to rows. Pulsar subscriptions of a
topic hold its messages too: a message is not removed while a subscription that existed when it was
published has not acked it. Topics without subscriptions (every DASF topic) keep the cache policy's
ack as one DELETE (plus its delivery rows): "the topic has no subscription" is a clause of it,
evaluated once per statement, so it costs what it did (measured). A topic with subscriptions takes
the general path: its cursors locked (as subscription acks and releases lock them), acks recorded,
then the rule per message.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Collection, Sequence
from datetime import datetime
from typing import TYPE_CHECKING

from django.utils import timezone

from app.broker.models import Delivery, Message, Topic
from app.broker.permissions import consumer_principals
from app.broker.policy import StorePolicy, removed_after_ack
from app.broker.statements import hot_statements
from app.pulsar.models import Subscription, SubscriptionMessage

if TYPE_CHECKING:
    from app.broker.services import Ack

# A subscription as the removal rule reads it: pk, start_sequence, acked_through.
Cursor = tuple[int, int, int]


def apply_acks(acks: Sequence[Ack], lock_with: Collection[int] = ()) -> None:
    """DASF-shape acks (per principal). ``lock_with``: the topics whose cursors the caller locks
    next (its subscription acks'); when the slow path locks cursors here, those are locked with
    them, in one order (app.pulsar.cursors), so that two writers never wait for each other in a
    circle."""
    by_topic: dict[tuple[int, StorePolicy], list[Ack]] = defaultdict(list)
    for ack in acks:
        by_topic[(ack.topic_id, ack.policy)].append(ack)
    slow: list[tuple[int, StorePolicy, list[Ack]]] = []
    for (topic_id, policy), acks_of_topic in by_topic.items():
        # One principal acking the same message twice in a batch (two of its connections got
        # it) is one ack: PostgreSQL refuses an upsert touching a row twice.
        group = list({(a.message_id, a.principal): a for a in acks_of_topic}.values())
        # Under cache, one message deleted means the topic had no subscription: the statement
        # deleted every one of them still stored, so the rest went before (another principal's
        # ack, as when several fan out on the topic) and there is nothing left to record.
        if policy is StorePolicy.CACHE and hot_statements().delete_acked(topic_id, {a.message_id for a in group}):
            continue
        slow.append((topic_id, policy, group))
    # Under cache: the topic has subscriptions (or the messages went before). The acks are recorded
    # and the rule decides; the upsert matches only messages still stored. The cursors are locked
    # first, as subscription acks and releases lock them: an ack committing after a release read
    # the acks would leave its message stored for good.
    removing = {topic_id for topic_id, policy, _ in slow if policy in (StorePolicy.CACHE, StorePolicy.CACHEALL)}
    cursors = lock_cursors(removing | set(lock_with)) if removing else {}
    now = timezone.now()
    for topic_id, policy, group in slow:
        by_principal: dict[str, set[uuid.UUID]] = defaultdict(set)
        for ack in group:
            by_principal[ack.principal].add(ack.message_id)
        acked: set[int] = set()
        for principal, acked_ids in by_principal.items():
            acked |= record_acks(topic_id, principal, acked_ids, now)
        remove_done(topic_id, policy, sorted(acked), cursors.get(topic_id, []))


def lock_cursors(topic_ids: Collection[int]) -> dict[int, list[Cursor]]:
    """Lock the subscriptions of these topics in one statement, in (topic, subscription) id order
    as app.pulsar.cursors does; returns them per topic."""
    found: dict[int, list[Cursor]] = defaultdict(list)
    rows = (Subscription.objects.select_for_update().filter(topic_id__in=sorted(topic_ids))
            .order_by("topic_id", "pk").values_list("topic_id", "pk", "start_sequence", "acked_through"))
    for topic_id, pk, start_sequence, acked_through in rows:
        found[topic_id].append((pk, start_sequence, acked_through))
    return found


def record_acks(topic_id: int, principal: str, message_ids: Collection[uuid.UUID], now: datetime) -> set[int]:
    """Mark stored messages acked by ``principal``, in one upsert (app/broker/statements). Unknown
    ids match no row. Returns the pks of the messages marked."""
    return hot_statements().record_acks(topic_id, principal, message_ids, now)


def remove_done(topic_id: int, policy: StorePolicy, message_pks: list[int],
                cursors: list[Cursor] | None = None) -> int:
    """Remove those of these stored messages that ``removed_after_ack`` says may go, with their
    delivery and subscription rows. ``cursors``: the topic's subscriptions as ``lock_cursors``
    read them, else they are read here. Returns how many went."""
    if not message_pks or policy not in (StorePolicy.CACHE, StorePolicy.CACHEALL):
        return 0
    sequences = dict(Message.objects.filter(pk__in=message_pks).values_list("pk", "sequence"))
    acked: dict[int, set[str]] = defaultdict(set)
    for message_pk, principal in Delivery.objects.filter(
        message_id__in=sequences, acked_at__isnull=False
    ).values_list("message_id", "principal"):
        acked[message_pk].add(principal)
    consumers = consumer_principals(Topic.objects.get(pk=topic_id)) if policy is StorePolicy.CACHEALL else set()
    waiting = _waiting_subscriptions(topic_id, sequences, cursors)
    done = [pk for pk in sequences if removed_after_ack(policy, acked[pk], consumers, waiting.get(pk, ()))]
    if done:
        delete_messages(done)
    return len(done)


def _waiting_subscriptions(topic_id: int, sequences: dict[int, int],
                           cursors: list[Cursor] | None) -> dict[int, set[int]]:
    """Per message pk: the subscriptions that existed at its publication and have not acked it."""
    subscriptions = cursors if cursors is not None else list(
        Subscription.objects.filter(topic_id=topic_id).values_list("pk", "start_sequence", "acked_through")
    )
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
