"""Pulsar subscription acks against the real database (docs/architecture.md 18.3, 18.4): the cursor
and the rows above it, an ack as the principal's, the removal rule under cache, cacheall and store,
DASF acks on topics with subscriptions. No sockets. The shared helpers are tests/test_subscription_store.py's."""

from __future__ import annotations

import threading
import uuid

from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext

from app.broker.models import Delivery, Topic
from app.broker.policy import StorePolicy
from app.broker.services import Ack, outstanding, write_batch
from app.pulsar.models import Subscription, SubscriptionMessage
from app.pulsar.services import delete_subscription, open_subscription
from tests.protocol import make_topic, make_user
from tests.test_subscription_store import backlog_ids, publish, stored, sub_ack, topic_of


def dasf_ack(topic: Topic, *message_ids: uuid.UUID, principal: str = "anonymous") -> None:
    ops = [Ack(topic.pk, topic.policy, m, principal) for m in message_ids]
    assert write_batch(ops) == [None] * len(ops)


def acked_through(subscription_id: int) -> int:
    return Subscription.objects.get(pk=subscription_id).acked_through


# --- acks ----------------------------------------------------------------------------------


def test_acks_move_acked_through_and_drop_rows():
    """An ack above a gap is a row; acking the gap moves the cursor past both and drops the rows."""
    topic = topic_of("store")
    state = open_subscription(topic.pk, "s", "Exclusive", "anonymous")
    ids = publish(topic, 3)
    sub_ack(topic, state.id, ids[1])
    assert acked_through(state.id) == 0
    assert SubscriptionMessage.objects.filter(subscription_id=state.id).count() == 1
    sub_ack(topic, state.id, ids[0])
    assert acked_through(state.id) == 2
    assert not SubscriptionMessage.objects.filter(subscription_id=state.id).exists()
    sub_ack(topic, state.id, ids[2])
    assert acked_through(state.id) == 3 and backlog_ids(state.id) == []


def test_ack_counts_as_the_principals():
    """A subscription ack marks the principal's delivery acked: the DASF shape does not replay it."""
    topic = topic_of("store")
    state = open_subscription(topic.pk, "s", "Exclusive", "user:1")
    ids = publish(topic, 2)
    sub_ack(topic, state.id, ids[0], principal="user:1")
    page = outstanding(topic.pk, StorePolicy.STORE, "user:1", redelivery=False)
    assert [uuid.UUID(r.message_id) for r in page.replays] == [ids[1]]


def test_cache_message_removed_when_the_only_subscription_acks():
    """Under cache a subscription's ack is someone's ack: with no other subscription it removes the message."""
    topic = topic_of()
    state = open_subscription(topic.pk, "s", "Exclusive", "anonymous")
    ids = publish(topic, 2)
    sub_ack(topic, state.id, ids[1])
    assert stored(*ids) == [True, False]
    assert not Delivery.objects.filter(message__topic=topic, message__message_id=ids[1]).exists()


def test_cache_waits_for_every_subscription():
    """Under cache a message stays until each subscription that existed at its publication acked it."""
    topic = topic_of()
    a = open_subscription(topic.pk, "a", "Exclusive", "anonymous")
    b = open_subscription(topic.pk, "b", "Exclusive", "anonymous")
    (message,) = publish(topic)
    sub_ack(topic, a.id, message)
    assert stored(message) == [True]
    assert backlog_ids(b.id) == [message] and backlog_ids(a.id) == []
    sub_ack(topic, b.id, message)
    assert stored(message) == [False]
    assert not SubscriptionMessage.objects.filter(message__message_id=message).exists()


def test_later_subscription_does_not_hold_earlier_messages():
    """A subscription created after a message was published does not keep it."""
    topic = topic_of()
    a = open_subscription(topic.pk, "a", "Exclusive", "anonymous")
    (message,) = publish(topic)
    open_subscription(topic.pk, "late", "Exclusive", "anonymous")
    sub_ack(topic, a.id, message)
    assert stored(message) == [False]


def test_dasf_ack_does_not_remove_what_a_subscription_needs():
    """Under cache a principal's ack keeps a message a subscription has not acked, and is recorded."""
    topic = topic_of()
    state = open_subscription(topic.pk, "s", "Exclusive", "anonymous")
    ids = publish(topic, 2)
    dasf_ack(topic, *ids, principal="user:dasf")
    assert stored(*ids) == [True, True]
    assert outstanding(topic.pk, StorePolicy.CACHE, "user:dasf", redelivery=False).replays == []
    sub_ack(topic, state.id, *ids)
    assert stored(*ids) == [False, False]


def test_dasf_ack_removes_at_once_without_subscriptions():
    """A topic without subscriptions keeps the cache policy's ack: the first ack removes the message."""
    topic = topic_of()
    ids = publish(topic, 2)
    dasf_ack(topic, ids[0])
    assert stored(*ids) == [False, True]


def test_dasf_ack_batch_with_a_removed_message_only_deletes():
    """No subscriptions: a batch acking a message already removed and one still stored runs only the DELETEs."""
    topic = topic_of()
    ids = publish(topic, 2)
    dasf_ack(topic, ids[0], principal="user:first")
    with CaptureQueriesContext(connection) as queries:
        dasf_ack(topic, *ids, principal="user:second")
    assert stored(*ids) == [False, False]
    statements = [q["sql"] for q in queries if not q["sql"].startswith(("BEGIN", "COMMIT"))]
    assert statements and all("DELETE FROM" in s and "INSERT" not in s and "UPDATE" not in s for s in statements)


def test_dasf_ack_waits_for_the_topics_cursors():
    """On a topic with subscriptions a DASF ack waits while a release holds the topic's cursors."""
    topic = topic_of()
    open_subscription(topic.pk, "s", "Exclusive", "anonymous")
    ids = publish(topic)
    locked, release, acked = threading.Event(), threading.Event(), threading.Event()

    def hold() -> None:
        try:
            with transaction.atomic():
                list(Subscription.objects.select_for_update().filter(topic_id=topic.pk))
                locked.set()
                release.wait(10)
        finally:
            connection.close()

    def ack() -> None:
        try:
            dasf_ack(topic, *ids, principal="user:dasf")
            acked.set()
        finally:
            connection.close()

    holder, acker = threading.Thread(target=hold), threading.Thread(target=ack)
    holder.start()
    assert locked.wait(10)
    acker.start()
    waited = not acked.wait(0.3)  # bounded: the ack must still be waiting
    release.set()
    holder.join(10)
    acker.join(10)
    assert waited and acked.is_set()


def test_dasf_ack_after_subscriptions_acked_removes():
    """Under cache a message every subscription acked goes at once (a subscription ack is an ack)."""
    topic = topic_of()
    state = open_subscription(topic.pk, "s", "Exclusive", "anonymous")
    ids = publish(topic, 2)
    sub_ack(topic, state.id, ids[1])  # a row above the cursor, then a DASF ack of an earlier one
    dasf_ack(topic, ids[0])
    assert stored(*ids) == [True, False]


def test_cacheall_needs_every_principal_and_every_subscription():
    """Under cacheall both today's rule (every consuming principal) and the subscriptions' must hold."""
    alice = make_user()
    topic = Topic.objects.get(slug=make_topic(policy="cacheall", dasf=False, anonymous=False, consumers=(alice,)))
    state = open_subscription(topic.pk, "s", "Exclusive", f"user:{alice.pk}")
    first, second = publish(topic, 2)
    dasf_ack(topic, first, principal=f"user:{alice.pk}")
    assert stored(first) == [True]
    sub_ack(topic, state.id, first, principal="anonymous")
    assert stored(first) == [False]
    sub_ack(topic, state.id, second, principal="anonymous")
    assert stored(second) == [True]
    dasf_ack(topic, second, principal=f"user:{alice.pk}")
    assert stored(second) == [False]


def test_store_keeps_messages_every_subscription_acked():
    """Under store nothing is removed, whoever acks."""
    topic = topic_of("store")
    state = open_subscription(topic.pk, "s", "Exclusive", "anonymous")
    (message,) = publish(topic)
    sub_ack(topic, state.id, message)
    dasf_ack(topic, message)
    assert stored(message) == [True]


def test_ack_of_deleted_subscription_is_ignored():
    """An ack for a subscription deleted meanwhile changes nothing and fails nothing."""
    topic = topic_of("store")
    state = open_subscription(topic.pk, "s", "Exclusive", "anonymous")
    (message,) = publish(topic)
    delete_subscription(state.id)
    sub_ack(topic, state.id, message)
    assert not SubscriptionMessage.objects.filter(subscription_id=state.id).exists()
