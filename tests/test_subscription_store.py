"""Pulsar subscription storage against the real database (docs/architecture.md 18.3, 18.4): opening,
backlogs, redelivery counts, unsubscribe, expiry, dead letters. No sockets. Acks and the removal rule
are tests/test_subscription_acks.py (which imports the helpers here)."""

from __future__ import annotations

import threading
import uuid
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from app.broker.models import Message, Topic
from app.broker.policy import StorePolicy
from app.broker.services import DeadLetter, NewMessage, SubscriptionAck, TopicError, write_batch
from app.pulsar.models import Release, Subscription
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


def stored(*message_ids: uuid.UUID) -> list[bool]:
    present = set(Message.objects.filter(message_id__in=message_ids).values_list("message_id", flat=True))
    return [m in present for m in message_ids]


def backlog_ids(subscription_id: int, after: int = 0, limit: int = 100) -> list[uuid.UUID]:
    return [uuid.UUID(r.message_id) for r in backlog(subscription_id, after=after, limit=limit).replays]


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
