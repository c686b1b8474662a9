"""Pulsar subscription storage against the real database (docs/architecture.md 18.3, 18.4): cursors,
backlogs, subscription acks and the removal rule, unsubscribe, expiry, dead letters. No sockets."""

from __future__ import annotations

import threading
import uuid
from datetime import timedelta

import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from app.broker.models import Delivery, Message, Topic
from app.broker.policy import StorePolicy
from app.broker.services import Ack, DeadLetter, NewMessage, SubscriptionAck, TopicError, outstanding, write_batch
from app.pulsar.models import Release, Subscription, SubscriptionMessage
from app.pulsar.services import (
    backlog,
    count_redeliveries,
    delete_subscription,
    ensure_dead_letter_topic,
    expire_subscriptions,
    open_subscription,
    release_pending,
    set_subscription_type,
    touch,
)
from tests.protocol import make_topic, make_user, unique


def topic_of(policy: str = "cache") -> Topic:
    return Topic.objects.get(slug=make_topic(policy=policy, dasf=False))


def publish(topic: Topic, count: int = 1) -> list[uuid.UUID]:
    """Store ``count`` messages through the writer; their ids in publish order."""
    ops = [NewMessage(topic.pk, uuid.uuid4(), None, "anonymous", {}, "cGF5", None, timezone.now(), "{}")
           for _ in range(count)]
    assert all(isinstance(result, int) for result in write_batch(ops))
    return [op.message_id for op in ops]


def sub_ack(topic: Topic, subscription_id: int, *message_ids: uuid.UUID, principal: str = "anonymous") -> None:
    ops = [SubscriptionAck(topic.pk, topic.policy, subscription_id, m, principal) for m in message_ids]
    assert write_batch(ops) == [None] * len(ops)


def dasf_ack(topic: Topic, *message_ids: uuid.UUID, principal: str = "anonymous") -> None:
    ops = [Ack(topic.pk, topic.policy, m, principal) for m in message_ids]
    assert write_batch(ops) == [None] * len(ops)


def stored(*message_ids: uuid.UUID) -> list[bool]:
    present = set(Message.objects.filter(message_id__in=message_ids).values_list("message_id", flat=True))
    return [m in present for m in message_ids]


def backlog_ids(subscription_id: int, after: int = 0, limit: int = 100) -> list[uuid.UUID]:
    return [uuid.UUID(r.message_id) for r in backlog(subscription_id, after=after, limit=limit).replays]


def acked_through(subscription_id: int) -> int:
    return Subscription.objects.get(pk=subscription_id).acked_through


# --- opening -------------------------------------------------------------------------------


def test_open_creates_at_latest():
    """A new subscription starts at the topic's last sequence: earlier messages are not its own."""
    topic = topic_of()
    publish(topic, 3)
    state = open_subscription(topic.pk, "s", "Exclusive", "anonymous")
    assert (state.start_sequence, state.acked_through, state.type) == (3, 3, "Exclusive")
    assert backlog_ids(state.id) == []


def test_open_is_idempotent_and_keeps_type():
    """Opening an existing subscription returns it unchanged, whatever type is asked."""
    topic = topic_of()
    first = open_subscription(topic.pk, "s", "Shared", "anonymous")
    publish(topic, 2)
    again = open_subscription(topic.pk, "s", "Failover", "anonymous")
    assert again == first


def test_open_is_race_safe():
    """Concurrent opens (each on its own database connection) all get the one subscription."""
    topic = topic_of()
    states = []

    def open_one():
        try:
            states.append(open_subscription(topic.pk, "raced", "Shared", "anonymous").id)
        finally:
            connection.close()

    threads = [threading.Thread(target=open_one) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert len(states) == 4 and len(set(states)) == 1
    assert Subscription.objects.filter(topic=topic, name="raced").count() == 1


def test_open_on_missing_topic_is_a_topic_error():
    """A topic deleted before its subscription is opened gets a TopicError."""
    topic = topic_of()
    topic.delete()
    with pytest.raises(TopicError):
        open_subscription(topic.pk, "s", "Exclusive", "anonymous")


def test_set_type_and_touch():
    """set_subscription_type changes the type; touch moves last_active."""
    topic = topic_of()
    state = open_subscription(topic.pk, "s", "Exclusive", "anonymous")
    Subscription.objects.filter(pk=state.id).update(last_active=timezone.now() - timedelta(days=1))
    set_subscription_type(state.id, "Key_Shared")
    touch([state.id])
    subscription = Subscription.objects.get(pk=state.id)
    assert subscription.type == "Key_Shared"
    assert subscription.last_active > timezone.now() - timedelta(minutes=1)


# --- backlog -------------------------------------------------------------------------------


def test_backlog_excludes_acked_and_earlier_messages():
    """The backlog is the messages published after creation that the subscription has not acked."""
    topic = topic_of("store")
    publish(topic, 2)
    state = open_subscription(topic.pk, "s", "Exclusive", "anonymous")
    ids = publish(topic, 4)
    sub_ack(topic, state.id, ids[1], ids[3])
    assert backlog_ids(state.id) == [ids[0], ids[2]]


def test_backlog_pages_by_sequence():
    """``after`` and ``limit`` page through the backlog in sequence order; last_sequence is the topic's."""
    topic = topic_of()
    state = open_subscription(topic.pk, "s", "Exclusive", "anonymous")
    ids = publish(topic, 5)
    first = backlog(state.id, after=0, limit=2)
    assert [uuid.UUID(r.message_id) for r in first.replays] == ids[:2] and first.last_sequence == 5
    rest = backlog(state.id, after=first.replays[-1].sequence, limit=10)
    assert [uuid.UUID(r.message_id) for r in rest.replays] == ids[2:]
    assert [r.redelivery_count for r in rest.replays] == [0, 0, 0]


def test_backlog_of_deleted_subscription_is_empty():
    """A subscription that no longer exists has nothing outstanding."""
    topic = topic_of()
    state = open_subscription(topic.pk, "s", "Exclusive", "anonymous")
    publish(topic, 1)
    delete_subscription(state.id)
    assert backlog(state.id, after=0, limit=10).replays == []


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


# --- redeliveries --------------------------------------------------------------------------


def test_count_redeliveries():
    """Each call counts +1 per message; the backlog reports the count; unknown ids are left out."""
    topic = topic_of()
    state = open_subscription(topic.pk, "s", "Exclusive", "anonymous")
    ids = publish(topic, 2)
    assert count_redeliveries(state.id, [str(ids[0])]) == {str(ids[0]): 1}
    counts = count_redeliveries(state.id, [str(i) for i in ids] + [str(uuid.uuid4()), "not-a-uuid"])
    assert counts == {str(ids[0]): 2, str(ids[1]): 1}
    assert [r.redelivery_count for r in backlog(state.id, after=0, limit=10).replays] == [2, 1]


def test_count_redeliveries_skips_acked():
    """A message the subscription acked is not counted."""
    topic = topic_of("store")
    state = open_subscription(topic.pk, "s", "Exclusive", "anonymous")
    ids = publish(topic, 2)
    sub_ack(topic, state.id, ids[1])
    assert count_redeliveries(state.id, [str(i) for i in ids]) == {str(ids[0]): 1}


# --- unsubscribe and expiry ----------------------------------------------------------------


def test_delete_subscription_releases_its_messages():
    """Unsubscribing removes the cache messages only it still held; a new one of that name starts at latest."""
    topic = topic_of()
    a = open_subscription(topic.pk, "a", "Exclusive", "anonymous")
    b = open_subscription(topic.pk, "b", "Exclusive", "anonymous")
    acked, unacked = publish(topic, 2)
    sub_ack(topic, a.id, acked)
    delete_subscription(b.id)
    assert stored(acked, unacked) == [False, True]  # nobody acked the second: a still holds it
    assert not Subscription.objects.filter(pk=b.id).exists()
    again = open_subscription(topic.pk, "b", "Exclusive", "anonymous")
    assert again.id != b.id and again.start_sequence == 2 and backlog_ids(again.id) == []


def test_release_in_pages(monkeypatch):
    """A large release is worked off by the garbage-collection relay's release_pending, page by page."""
    monkeypatch.setattr("app.pulsar.services.RELEASE_PAGE", 2)
    topic = topic_of()
    a = open_subscription(topic.pk, "a", "Exclusive", "anonymous")
    b = open_subscription(topic.pk, "b", "Exclusive", "anonymous")
    ids = publish(topic, 5)
    sub_ack(topic, a.id, *ids)
    delete_subscription(b.id)
    assert stored(*ids) == [False, False, True, True, True]
    assert Release.objects.filter(topic=topic).exists()
    assert release_pending() == 3
    assert stored(*ids) == [False] * 5 and not Release.objects.filter(topic=topic).exists()


def test_idle_subscriptions_expire(settings):
    """With SUBSCRIPTION_TTL_S, subscriptions idle longer are deleted and release what they held."""
    settings.SUBSCRIPTION_TTL_S = 60.0
    topic = topic_of()
    idle = open_subscription(topic.pk, "idle", "Exclusive", "anonymous")
    busy = open_subscription(topic.pk, "busy", "Exclusive", "anonymous")
    (message,) = publish(topic)
    sub_ack(topic, busy.id, message)
    Subscription.objects.filter(pk__in=[idle.id, busy.id]).update(last_active=timezone.now() - timedelta(minutes=5))
    touch([busy.id])
    assert expire_subscriptions() >= 1
    assert set(Subscription.objects.filter(topic=topic).values_list("name", flat=True)) == {"busy"}
    assert stored(message) == [False]


def test_no_expiry_by_default(settings):
    """SUBSCRIPTION_TTL_S=0 keeps idle subscriptions."""
    settings.SUBSCRIPTION_TTL_S = 0
    topic = topic_of()
    state = open_subscription(topic.pk, "s", "Exclusive", "anonymous")
    Subscription.objects.filter(pk=state.id).update(last_active=timezone.now() - timedelta(days=365))
    assert expire_subscriptions() == 0
    assert Subscription.objects.filter(pk=state.id).exists()


# --- dead letters --------------------------------------------------------------------------


def test_dead_letter_copies_and_acks_in_one_transaction():
    """DeadLetter stores the copy on the dead letter topic and acks the original on the subscription."""
    topic = topic_of()
    user = make_user()
    dlq = ensure_dead_letter_topic(unique("dlq"), user, f"user:{user.pk}", explicit=False)
    state = open_subscription(topic.pk, "s", "Shared", f"user:{user.pk}")
    original, other = publish(topic, 2)
    copy = NewMessage(dlq.id, uuid.uuid4(), user.pk, f"user:{user.pk}", {}, "cGF5", None, timezone.now(), "{}")
    results = write_batch([DeadLetter(topic.pk, topic.policy, state.id, original, f"user:{user.pk}", copy)])
    assert results == [1]
    assert Message.objects.filter(topic_id=dlq.id, message_id=copy.message_id, sequence=1).exists()
    assert stored(original, other) == [False, True]
    assert backlog_ids(state.id) == [other]


def test_failed_dead_letter_changes_nothing():
    """A copy the database refuses (a reused messageId) leaves the original unacked on the subscription."""
    topic = topic_of()
    user = make_user()
    dlq = ensure_dead_letter_topic(unique("dlq"), user, f"user:{user.pk}", explicit=False)
    state = open_subscription(topic.pk, "s", "Shared", f"user:{user.pk}")
    (original,) = publish(topic)
    taken = NewMessage(dlq.id, uuid.uuid4(), None, "anonymous", {}, "", None, timezone.now(), "{}")
    write_batch([taken])
    results = write_batch([DeadLetter(topic.pk, topic.policy, state.id, original, "anonymous", taken)])
    assert isinstance(results[0], Exception)
    assert stored(original) == [True] and backlog_ids(state.id) == [original]


def test_dead_letter_topic_is_private_and_consumable_by_its_principal():
    """A created dead letter topic is not DASF, private, storing, and its principal may consume it."""
    user = make_user()
    slug = unique("dlq")
    view = ensure_dead_letter_topic(slug, user, f"user:{user.pk}", explicit=False)
    topic = Topic.objects.get(slug=slug)
    assert (topic.supports_dasf, topic.is_public, topic.created_by) == (False, False, f"user:{user.pk}")
    assert view.rights.consume and view.policy.stores
    assert ensure_dead_letter_topic(slug, user, f"user:{user.pk}", explicit=False).id == view.id


def test_dead_letter_topic_counts_against_topic_limit(settings):
    """Creating a dead letter topic past TOPICS_PER_PRINCIPAL is refused."""
    settings.TOPICS_PER_PRINCIPAL = 1
    user = make_user()
    ensure_dead_letter_topic(unique("dlq"), user, f"user:{user.pk}", explicit=False)
    with pytest.raises(TopicError, match="topic limit"):
        ensure_dead_letter_topic(unique("dlq"), user, f"user:{user.pk}", explicit=False)


def test_dead_letter_topic_of_someone_else_is_refused():
    """An existing topic the principal may not publish to cannot be its dead letter topic; nor a bad name."""
    user = make_user()
    slug = make_topic(public=False, anonymous=False, dasf=False)
    with pytest.raises(TopicError, match="not allowed"):
        ensure_dead_letter_topic(slug, user, f"user:{user.pk}", explicit=False)
    with pytest.raises(TopicError, match="invalid topic name"):
        ensure_dead_letter_topic("no/slash", user, f"user:{user.pk}", explicit=False)


def test_dead_letter_topic_another_principal_created_is_refused():
    """A public topic another principal created under the name is refused, though the principal may publish to it."""
    user = make_user()
    slug = make_topic(dasf=False)
    Topic.objects.filter(slug=slug).update(created_by="user:0")
    with pytest.raises(TopicError, match="created by another principal"):
        ensure_dead_letter_topic(slug, user, f"user:{user.pk}", explicit=False)


def test_dead_letter_topic_anonymous_created_serves_anonymous():
    """A topic an anonymous client created (counted per address) may take the anonymous principal's dead letters."""
    from guardian.utils import get_anonymous_user

    slug = make_topic(dasf=False)
    Topic.objects.filter(slug=slug).update(created_by="anonymous@127.0.0.9")
    assert ensure_dead_letter_topic(slug, get_anonymous_user(), "anonymous", explicit=False).slug == slug


def test_dead_letter_topic_with_storing_disabled_by_default_caches(settings):
    """When the server default stores nothing, a dead letter topic is created under cache."""
    settings.STORE_SOURCE_MESSAGES = "disabled"
    user = make_user()
    view = ensure_dead_letter_topic(unique("dlq"), user, f"user:{user.pk}", explicit=False)
    assert view.policy is StorePolicy.CACHE
