"""Failures and races around a subscription's dispatcher (app/pulsar/subscriptions.py,
dispatcher.py), in process with the stand-ins of tests/test_pulsar_registry.py on the real database:
a database error while a leaving consumer's message is dead-lettered, work in flight across a
stand-by, the lease keeper during a slow start, a deleted subscription found by a renewal, an
unsubscribe past the lease deadline. Each window is held open here: from outside a server it is too
short to hit."""

from __future__ import annotations

import asyncio
import threading
import uuid
from dataclasses import dataclass, field
from typing import Any

import pytest
from channels.db import database_sync_to_async
from django.db import OperationalError

from app.broker.services import Replay
from app.pulsar import services, subscriptions
from app.pulsar.dispatcher import SubscriptionDispatcher
from app.pulsar.flow import Flow
from app.pulsar.members import Pending, Slot
from app.pulsar.models import Subscription
from app.pulsar.subscriptions import Subscriptions
from tests.protocol import eventually
from tests.test_pulsar_registry import Member, Runtime, joined, member, topic_view


def message(count: int = 0) -> Pending:
    message_id = str(uuid.uuid4())
    return Pending(message_id, None, f'{{"messageId":"{message_id}","payload":""}}', count=count)


def holding(dispatcher: SubscriptionDispatcher, who: Member, item: Pending) -> None:
    """``who`` was sent ``item`` and has not acked it."""
    slot = dispatcher.slot_of(who)  # type: ignore[arg-type]
    assert slot is not None
    slot.hold(item)
    dispatcher.holders[item.message_id] = slot


def sent_ids(who: Member) -> list[str]:
    return [text.split('"messageId":"')[1].split('"')[0] for text in who.sent]


def unreachable(*args: Any, **kwargs: Any) -> Any:
    raise OperationalError("the database is unreachable")


# --- a consumer leaving while the database fails --------------------------------------------------


async def test_dead_letter_topic_failing_in_the_database_redelivers(monkeypatch: pytest.MonkeyPatch) -> None:
    """A leaving consumer's message due for its dead letter topic, the database failing: redelivered."""
    registry = Subscriptions(Runtime(asyncio.get_running_loop()))  # type: ignore[arg-type]
    topic = topic_view()
    leaving, staying = member("Shared", maxRedeliverCount=1), member("Shared", maxRedeliverCount=1)
    dispatcher = await joined(registry, leaving, topic)
    assert await joined(registry, staying, topic) is dispatcher
    item = message(count=1)
    holding(dispatcher, leaving, item)
    monkeypatch.setattr(services, "ensure_dead_letter_topic", unreachable)
    await registry.leave(leaving, dispatcher)
    assert sent_ids(staying) == [item.message_id]
    await registry.leave(staying, dispatcher)


async def test_last_consumer_leaving_stops_even_when_putting_back_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    """The last consumer's leave failing still stops the dispatcher: a later consumer is served."""
    registry = Subscriptions(Runtime(asyncio.get_running_loop()))  # type: ignore[arg-type]
    topic = topic_view()
    leaving, later = member("Shared"), member("Shared")
    old = await joined(registry, leaving, topic)
    holding(old, leaving, message())
    monkeypatch.setattr(old.redeliveries, "redeliver", unreachable)
    with pytest.raises(OperationalError):
        await registry.leave(leaving, old)
    assert old.closed.is_set() and not len(registry)
    new = await asyncio.wait_for(joined(registry, later, topic), 10)
    assert new is not old and new.serving
    await registry.leave(later, new)


async def test_redelivery_requeues_the_rest_when_a_move_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    """A dead-letter move failing unexpectedly: that message and the others are delivered again."""
    registry = Subscriptions(Runtime(asyncio.get_running_loop()))  # type: ignore[arg-type]
    who = member("Shared", maxRedeliverCount=1)
    dispatcher = await joined(registry, who, topic_view("disabled"))
    dead, back = message(count=1), message()

    async def broken(*args: Any) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(dispatcher.dead_letters, "move", broken)
    await dispatcher.redeliveries.redeliver([(dead, who), (back, who)])  # type: ignore[list-item]
    assert sorted(sent_ids(who)) == sorted([dead.message_id, back.message_id])
    await registry.leave(who, dispatcher)


# --- work in flight across a stand-by ----------------------------------------------------------


async def test_backlog_page_read_before_standing_by_is_dropped(monkeypatch: pytest.MonkeyPatch) -> None:
    """A backlog read begun before a stand-by and a new start is dropped: the new read starts at the cursor."""
    registry = Subscriptions(Runtime(asyncio.get_running_loop()))  # type: ignore[arg-type]
    who = member("Shared")
    dispatcher = await joined(registry, who, topic_view())
    stored = [Replay(n, str(uuid.uuid4()), f'{{"messageId":"{n}","payload":""}}', 0) for n in range(1, 9)]
    go = threading.Event()
    reads: list[int] = []

    def backlog(subscription_id: int, *, after: int, limit: int, released: Any = None) -> services.Backlog:
        reads.append(after)
        go.wait(10)
        return services.Backlog([r for r in stored if r.sequence > after][:limit], stored[-1].sequence)

    monkeypatch.setattr(services, "backlog", backlog)
    dispatcher.read_through = 5  # 1-5 were in flight here
    dispatcher.resync(8)
    dispatcher.resync(8)  # behind twice: read from the database
    await eventually(lambda: reads == [5], timeout=5, message="the read after 5")
    dispatcher.stand_by()
    dispatcher.start_serving(0)  # taken back over: 1-5 are read again
    go.set()
    await eventually(lambda: len(who.sent) >= 8, timeout=5, message="every stored message")
    assert sent_ids(who) == [str(n) for n in range(1, 9)]
    await registry.leave(who, dispatcher)


async def test_redelivery_counted_across_a_stand_by_is_not_queued(blocked_counting: threading.Event) -> None:
    """A leaving consumer's message counted while the dispatcher stood by and served again is not sent."""
    registry = Subscriptions(Runtime(asyncio.get_running_loop()))  # type: ignore[arg-type]
    topic = topic_view()
    leaving, staying = member("Shared"), member("Shared")
    dispatcher = await joined(registry, leaving, topic)
    await joined(registry, staying, topic)
    item = message()
    holding(dispatcher, leaving, item)
    leave = asyncio.create_task(registry.leave(leaving, dispatcher))
    await eventually(lambda: item.message_id in dispatcher.redeliveries._counting, timeout=5, message="the count")
    dispatcher.stand_by()
    dispatcher.start_serving(dispatcher.read_through)  # the new epoch reads what is stored
    blocked_counting.set()
    await asyncio.wait_for(leave, 10)
    await asyncio.sleep(0.2)  # bounded: a requeued message would be sent at once
    assert item.message_id not in sent_ids(staying)
    await registry.leave(staying, dispatcher)


def test_a_message_held_twice_counts_once() -> None:
    """A consumer's held characters count a message once, however often it is held."""
    slot = Slot(1, member("Shared"), Flow(pull=False, queue_size=10, limit=10, char_limit=1000))  # type: ignore[arg-type]
    item = message()
    slot.hold(item)
    slot.hold(item)
    assert slot.held_chars == len(item.text)
    slot.take_unacked(item.message_id)
    assert slot.held_chars == 0


# --- the lease keeper ------------------------------------------------------------------------


@dataclass
class CountingHub:
    subscribed: list[Any] = field(default_factory=list)

    def subscribe(self, slug: str, subscriber: Any) -> None:
        self.subscribed.append(subscriber)

    def unsubscribe(self, slug: str, subscriber: Any) -> None:
        pass


@dataclass
class SlowBackplane:
    go: asyncio.Event = field(default_factory=asyncio.Event)

    async def joined(self, slug: str) -> None:
        await self.go.wait()


async def test_keeper_does_not_serve_twice_during_a_slow_start(settings: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Renewals while the first consumer's start still waits (backplane) do not serve it a second time."""
    settings.SUBSCRIPTION_LEASE_S = 0.6
    hub, backplane = CountingHub(), SlowBackplane()
    registry = Subscriptions(Runtime(asyncio.get_running_loop(), hub=hub, backplane=backplane))  # type: ignore[arg-type]
    renewals: list[bool] = []
    acquire = subscriptions.acquire

    def counted(*args: Any) -> bool:
        renewals.append(held := acquire(*args))
        return held

    monkeypatch.setattr(subscriptions, "acquire", counted)
    who = member("Shared")
    joining = asyncio.create_task(joined(registry, who, topic_view()))
    await eventually(lambda: len(renewals) >= 2, timeout=5, message="a renewal during the start")
    await asyncio.sleep(0.3)  # bounded: a take-over follows its renewal at once
    backplane.go.set()
    dispatcher = await asyncio.wait_for(joining, 10)
    assert hub.subscribed == [dispatcher] and dispatcher.serving
    await registry.leave(who, dispatcher)


async def test_renewal_finding_the_subscription_deleted_evicts_its_consumers(settings: Any) -> None:
    """A renewal that finds the served subscription deleted stands by and closes its consumers (1011)."""
    settings.SUBSCRIPTION_LEASE_S = 0.6
    registry = Subscriptions(Runtime(asyncio.get_running_loop()))  # type: ignore[arg-type]
    who = member("Shared")
    dispatcher = await joined(registry, who, topic_view())
    await database_sync_to_async(Subscription.objects.filter(pk=dispatcher.subscription_id).delete)()
    await eventually(lambda: bool(who.evicted), timeout=5, message="the eviction")
    assert not dispatcher.serving and dispatcher.deleted
    await registry.leave(who, dispatcher)


async def test_unsubscribe_past_the_lease_deadline_is_refused() -> None:
    """An unsubscribe handled once the lease deadline has passed (a pause) deletes nothing; it stands by."""
    registry = Subscriptions(Runtime(asyncio.get_running_loop()))  # type: ignore[arg-type]
    who = member("Shared")
    dispatcher = await joined(registry, who, topic_view())
    dispatcher.lease.deadline = asyncio.get_running_loop().time()
    assert await registry.unsubscribe(who, dispatcher) is not None  # type: ignore[arg-type]
    assert not dispatcher.serving
    assert await database_sync_to_async(Subscription.objects.filter(pk=dispatcher.subscription_id).exists)()
    await registry.leave(who, dispatcher)
