"""This process's subscription registry (app/pulsar/subscriptions.py) with a stand-in runtime, on the
real database: what a consumer joins while a dispatcher is closing. The moments in between (an
unsubscribe whose socket has not closed yet, a leave counting redeliveries) are too short to hit
from outside a server process, so they are held open here."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from django.contrib.auth.models import AnonymousUser

from app.broker.models import Topic
from app.broker.permissions import Rights
from app.broker.topics import TopicView
from app.pulsar import services
from app.pulsar.dispatcher import SubscriptionDispatcher
from app.pulsar.members import Pending
from app.pulsar.params import ConsumerParams
from app.pulsar.subscriptions import Subscriptions
from tests.protocol import make_topic


@dataclass
class Member:
    params: ConsumerParams
    principal: str = "anonymous"
    user: Any = field(default_factory=AnonymousUser)
    sent: list[str] = field(default_factory=list)

    def send(self, text: str) -> None:
        self.sent.append(text)

    def recheck_rights(self) -> None:
        pass

    def evict(self, reason: str) -> None:
        pass


class Hub:
    def subscribe(self, slug: str, subscriber: Any) -> None:
        pass

    def unsubscribe(self, slug: str, subscriber: Any) -> None:
        pass


class Backplane:
    async def joined(self, slug: str) -> None:
        pass


class Writer:
    def submit(self, op: Any, done: Any = None) -> None:
        pass

    async def flush(self) -> None:
        pass


@dataclass
class Runtime:
    loop: asyncio.AbstractEventLoop
    unacked_limit: int = 1000
    hub: Hub = field(default_factory=Hub)
    backplane: Backplane = field(default_factory=Backplane)
    writer: Writer = field(default_factory=Writer)


def member(subscription_type: str) -> Member:
    return Member(ConsumerParams.model_validate({"subscriptionType": subscription_type}))


def topic_view() -> TopicView:
    topic = Topic.objects.get(slug=make_topic(dasf=False, policy="store"))
    return TopicView.of(topic, Rights(produce=True, consume=True, view_status=False))


@pytest.fixture
def blocked_counting(monkeypatch: pytest.MonkeyPatch) -> Iterator[threading.Event]:
    """count_redeliveries waits (in its thread) until the event is set."""
    go = threading.Event()
    counting = services.count_redeliveries

    def held(subscription_id: int, message_ids: list[str]) -> dict[str, int]:
        go.wait(10)
        return counting(subscription_id, message_ids)

    monkeypatch.setattr(services, "count_redeliveries", held)
    yield go
    go.set()


async def joined(registry: Subscriptions, who: Member, topic: TopicView) -> SubscriptionDispatcher:
    dispatcher = await registry.join(who, topic, "sub")
    assert isinstance(dispatcher, SubscriptionDispatcher), dispatcher
    dispatcher.ready(who)
    return dispatcher


async def test_consumer_joining_during_unsubscribe_gets_a_new_subscription() -> None:
    """A consumer joining after the last consumer's unsubscribe, before its socket closed, starts anew."""
    registry = Subscriptions(Runtime(asyncio.get_running_loop()))  # type: ignore[arg-type]
    topic = topic_view()
    leaving, joining = member("Shared"), member("Shared")
    old = await joined(registry, leaving, topic)
    assert await registry.unsubscribe(leaving, old) is None
    new = await joined(registry, joining, topic)
    assert new is not old and not new.deleted and new.subscription_id != old.subscription_id
    await registry.leave(leaving, old)
    await registry.leave(joining, new)


async def test_other_type_joining_while_the_last_consumer_leaves_waits(blocked_counting: threading.Event) -> None:
    """While the last consumer's leave counts its unacked, another type's consumer waits, then gets its type."""
    registry = Subscriptions(Runtime(asyncio.get_running_loop()))  # type: ignore[arg-type]
    topic = topic_view()
    shared, failover = member("Shared"), member("Failover")
    old = await joined(registry, shared, topic)
    slot = old.slot_of(shared)
    assert slot is not None
    slot.unacked["m"] = Pending("m", None, "{}")
    leaving = asyncio.create_task(registry.leave(shared, old))
    joining = asyncio.create_task(registry.join(failover, topic, "sub"))
    await asyncio.sleep(0.2)  # bounded: the join must still be waiting (the leave is held)
    assert not joining.done() and old.slot_of(failover) is None
    blocked_counting.set()
    await asyncio.wait_for(leaving, 10)
    new = await asyncio.wait_for(joining, 10)
    assert isinstance(new, SubscriptionDispatcher) and new is not old and new.type == "Failover"
    await registry.leave(failover, new)
