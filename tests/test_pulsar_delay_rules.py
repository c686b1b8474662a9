"""Delayed delivery on subscriptions (docs/architecture.md 18.4): the plain rules of app/pulsar/delays.py,
and the held-back reads of app/pulsar/services.py against the real database. No sockets."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from django.utils import timezone

from app.broker.models import Topic
from app.broker.services import NewMessage, Replay, SubscriptionAck, write_batch
from app.pulsar.delays import ALL_SEQUENCES, Mark, held_until, holds_back, loop_time_of
from app.pulsar.services import backlog, due_messages, open_subscription
from tests.protocol import make_topic

T0 = datetime(2030, 1, 1, tzinfo=UTC)
LATER = T0 + timedelta(seconds=10)
EARLIER = T0 - timedelta(seconds=10)


# --- the rules ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("subscription_type", "holds"), [
    ("Exclusive", False), ("Failover", False), ("Shared", True), ("Key_Shared", True),
])
def test_which_types_hold_back(subscription_type: str, holds: bool) -> None:
    """As in Pulsar, only Shared and Key_Shared subscriptions hold delayed messages back."""
    assert holds_back(subscription_type) is holds


@pytest.mark.parametrize(("subscription_type", "deliver_at", "sequence", "mark", "until"), [
    ("Shared", None, 5, Mark(T0), None),
    ("Shared", LATER, 5, Mark(T0), LATER),
    ("Key_Shared", LATER, 5, Mark(T0), LATER),
    ("Exclusive", LATER, 5, Mark(T0), None),
    ("Failover", LATER, 5, Mark(T0), None),
    ("Shared", EARLIER, 5, Mark(T0), None),
    ("Shared", T0, 5, Mark(T0), None),
    ("Shared", T0, 5, Mark(T0, 4), T0),
    ("Shared", T0, 4, Mark(T0, 4), None),
    ("Shared", T0, 5, Mark(EARLIER), T0),
], ids=["no-delay", "future", "key-shared-future", "exclusive", "failover", "past", "at-mark",
        "same-time-later-sequence", "same-time-at-sequence", "past-but-above-stale-mark"])
def test_held_until(subscription_type: str, deliver_at: datetime | None, sequence: int, mark: Mark,
                    until: datetime | None) -> None:
    """A message is held until its due time exactly when its type holds back and the mark does not release it."""
    assert held_until(subscription_type, deliver_at, sequence, mark) == until


def test_mark_never_moves_back() -> None:
    """Advancing to an earlier clock reading keeps the mark (a clock stepping back releases nothing twice)."""
    assert Mark(T0).advanced(EARLIER) == Mark(T0)
    assert Mark(T0, 3).advanced(T0) == Mark(T0, ALL_SEQUENCES)
    assert Mark(T0).advanced(LATER) == Mark(LATER)


@pytest.mark.parametrize(("deliver_at", "expected"), [(LATER, 110.0), (T0, 100.0), (EARLIER, 100.0)],
                         ids=["future", "now", "past"])
def test_loop_time_of(deliver_at: datetime, expected: float) -> None:
    """A due time on the loop's clock; one already past is due now."""
    assert loop_time_of(deliver_at, wall_now=T0, loop_now=100.0) == pytest.approx(expected)


# --- the reads ------------------------------------------------------------------------------------


def publish(topic: Topic, *delays_s: float | None) -> list[uuid.UUID]:
    """Store one message per delay (None: not delayed); their ids in publish order."""
    now = timezone.now()
    ops = [NewMessage(topic.pk, uuid.uuid4(), None, "anonymous", {}, "cGF5", None, now, "{}",
                      deliver_at=None if delay is None else now + timedelta(seconds=delay)) for delay in delays_s]
    assert all(isinstance(result, int) for result in write_batch(ops))
    return [op.message_id for op in ops]


def ids(replays: list[Replay]) -> list[uuid.UUID]:
    return [uuid.UUID(r.message_id) for r in replays]


def subscribed_topic() -> tuple[Topic, int]:
    topic = Topic.objects.get(slug=make_topic(policy="store", dasf=False))
    return topic, open_subscription(topic.pk, "s", "Shared", "anonymous").id


def test_backlog_leaves_out_held_and_tells_the_earliest() -> None:
    """A holding read skips messages not yet due and reports the earliest due time among them."""
    topic, sub = subscribed_topic()
    first, held_late, held_soon, last = publish(topic, None, 600, 60, None)
    page = backlog(sub, after=0, limit=10, released=Mark(timezone.now()))
    assert ids(page.replays) == [first, last] and page.last_sequence == 4
    soon = Topic.objects.get(pk=topic.pk).messages.get(message_id=held_soon).deliver_at
    assert page.held_next == soon


def test_backlog_without_mark_returns_everything() -> None:
    """A read for a type that holds nothing back returns delayed messages too, and no due time."""
    topic, sub = subscribed_topic()
    published = publish(topic, 600, None)
    page = backlog(sub, after=0, limit=10)
    assert ids(page.replays) == published and page.held_next is None


def test_backlog_held_next_only_within_the_page() -> None:
    """A full page reports only held messages it read past, not those after it."""
    topic, sub = subscribed_topic()
    publish(topic, None, None, 60)
    page = backlog(sub, after=0, limit=2, released=Mark(timezone.now()))
    assert len(page.replays) == 2 and page.held_next is None


def test_due_messages_in_due_order() -> None:
    """Held messages come due in order of due time, then sequence; the next held one's time is told."""
    topic, sub = subscribed_topic()
    mark = Mark(timezone.now())
    late, early, same_a, same_b, future = publish(topic, 20, 10, 15, 15, 3600)
    now = timezone.now() + timedelta(seconds=30)
    due = due_messages(sub, released=mark, now=now, through=5, limit=10)
    assert ids(due.replays) == [early, same_a, same_b, late] and not due.more
    assert due.released == Mark(now)
    assert due.held_next == Topic.objects.get(pk=topic.pk).messages.get(message_id=future).deliver_at
    assert [r.redelivery_count for r in due.replays] == [0, 0, 0, 0]


def test_due_messages_page_by_mark() -> None:
    """A full page moves the mark to its last message; the next read goes on after it, missing none."""
    topic, sub = subscribed_topic()
    mark = Mark(timezone.now())
    published = publish(topic, 10, 10, 10)
    now = timezone.now() + timedelta(seconds=30)
    first = due_messages(sub, released=mark, now=now, through=3, limit=2)
    assert ids(first.replays) == published[:2] and first.more
    rest = due_messages(sub, released=first.released, now=now, through=3, limit=2)
    assert ids(rest.replays) == published[2:] and not rest.more


def test_due_messages_skip_acked_and_unread() -> None:
    """Acked messages and messages after ``through`` (not read past yet) are not due reads' business."""
    topic, sub = subscribed_topic()
    mark = Mark(timezone.now())
    acked, kept, unread = publish(topic, 10, 10, 10)
    assert write_batch([SubscriptionAck(topic.pk, topic.policy, sub, acked, "anonymous")]) == [None]
    due = due_messages(sub, released=mark, now=timezone.now() + timedelta(seconds=30), through=2, limit=10)
    assert ids(due.replays) == [kept]
