"""This process's subscription registry (app/pulsar/subscriptions.py) with a stand-in runtime, on the
real database: what a consumer joins while a dispatcher is closing; what a dispatcher does once its
lease deadline has passed (a paused process, renewals failing); an ack while its message's
redelivery is being counted. The moments in between (an unsubscribe whose socket has not closed
yet, a leave counting redeliveries) are too short to hit from outside a server process, so they are
held open here."""

from __future__ import annotations

import asyncio
import threading
import uuid
from dataclasses import dataclass, field
from typing import Any

import pytest
from django.contrib.auth.models import AnonymousUser
from django.db import OperationalError

from app.broker.hub import Delivered
from app.broker.models import Topic
from app.broker.permissions import Rights
from app.broker.topics import TopicView
from app.pulsar import subscriptions
from app.pulsar.dispatcher import SubscriptionDispatcher
from app.pulsar.members import Pending
from app.pulsar.params import ConsumerParams
from app.pulsar.subscriptions import Subscriptions
from tests.protocol import eventually, make_topic


@dataclass
class Member:
    params: ConsumerParams
    principal: str = "anonymous"
    user: Any = field(default_factory=AnonymousUser)
    sent: list[str] = field(default_factory=list)
    evicted: list[str] = field(default_factory=list)

    def send(self, text: str) -> None:
        self.sent.append(text)

    def recheck_rights(self) -> None:
        pass

    def evict(self, reason: str) -> None:
        self.evicted.append(reason)


class Hub:
    def subscribe(self, slug: str, subscriber: Any) -> None:
        pass

    def unsubscribe(self, slug: str, subscriber: Any) -> None:
        pass


class Backplane:
    async def joined(self, slug: str) -> None:
        pass


@dataclass
class Writer:
    submitted: list[Any] = field(default_factory=list)

    def submit(self, op: Any, done: Any = None) -> None:
        self.submitted.append(op)

    async def flush(self) -> None:
        pass


@dataclass
class Runtime:
    loop: asyncio.AbstractEventLoop
    unacked_limit: int = 1000
    hub: Hub = field(default_factory=Hub)
    backplane: Backplane = field(default_factory=Backplane)
    writer: Writer = field(default_factory=Writer)


def member(subscription_type: str, **params: Any) -> Member:
    return Member(ConsumerParams.model_validate({"subscriptionType": subscription_type, **params}))


def topic_view(policy: str = "store") -> TopicView:
    topic = Topic.objects.get(slug=make_topic(dasf=False, policy=policy))
    return TopicView.of(topic, Rights(produce=True, consume=True, view_status=False))


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


def live() -> Delivered:
    """A message of a topic that stores nothing, as the hub offers it."""
    message_id = str(uuid.uuid4())
    return Delivered(f'{{"messageId":"{message_id}","payload":""}}', message_id, None)


async def test_paused_past_its_lease_sends_nothing_and_stands_by() -> None:
    """A message arriving once the lease deadline has passed (a pause) is not sent; Failover stands by."""
    registry = Subscriptions(Runtime(asyncio.get_running_loop()))  # type: ignore[arg-type]
    who = member("Failover")
    dispatcher = await joined(registry, who, topic_view("disabled"))
    dispatcher.offer(live())
    assert len(who.sent) == 1
    dispatcher.lease.deadline = asyncio.get_running_loop().time()  # as after a pause longer than the lease
    dispatcher.offer(live())
    assert len(who.sent) == 1 and not dispatcher.serving and not who.evicted
    await registry.leave(who, dispatcher)


async def test_paused_exclusive_consumer_is_closed() -> None:
    """An Exclusive consumer of a dispatcher past its lease deadline is closed (1011), sent nothing more."""
    registry = Subscriptions(Runtime(asyncio.get_running_loop()))  # type: ignore[arg-type]
    who = member("Exclusive")
    dispatcher = await joined(registry, who, topic_view("disabled"))
    dispatcher.lease.deadline = asyncio.get_running_loop().time()
    dispatcher.offer(live())
    assert not who.sent and who.evicted and not dispatcher.serving
    await registry.leave(who, dispatcher)


async def test_failing_renewals_stand_by_before_the_lease_ends(
    settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Renewals that keep failing (database unreachable): the holder stands by before its lease can end."""
    settings.SUBSCRIPTION_LEASE_S = 1.5
    loop = asyncio.get_running_loop()
    registry = Subscriptions(Runtime(loop))  # type: ignore[arg-type]
    who = member("Exclusive")
    started = loop.time()
    dispatcher = await joined(registry, who, topic_view("disabled"))

    def unreachable(*args: Any) -> bool:
        raise OperationalError("the database is unreachable")

    monkeypatch.setattr(subscriptions, "acquire", unreachable)
    await eventually(lambda: not dispatcher.serving, timeout=5, message="standing by")
    assert loop.time() < started + 1.5 and who.evicted
    await registry.leave(who, dispatcher)


async def test_ack_while_its_redelivery_is_counted_is_taken(blocked_counting: threading.Event) -> None:
    """An ack right after a nack (delay 0), while the redelivery is counted, is taken; no redelivery."""
    runtime = Runtime(asyncio.get_running_loop())
    registry = Subscriptions(runtime)  # type: ignore[arg-type]
    who = member("Shared", negativeAckRedeliveryDelay=0)
    dispatcher = await joined(registry, who, topic_view())
    message_id = str(uuid.uuid4())
    dispatcher.requeue([Pending(message_id, None, f'{{"messageId":"{message_id}","payload":""}}')])
    assert len(who.sent) == 1
    assert dispatcher.nack(who, message_id)  # type: ignore[arg-type]
    await eventually(lambda: message_id in dispatcher.redeliveries._counting, timeout=5, message="the count")
    assert dispatcher.ack(who, message_id)  # type: ignore[arg-type]
    assert [op.message_id for op in runtime.writer.submitted] == [uuid.UUID(message_id)]
    blocked_counting.set()
    await eventually(lambda: not dispatcher.redeliveries._counting, timeout=5, message="the redelivery")
    await asyncio.sleep(0.2)  # bounded: a redelivery would be sent at once
    assert len(who.sent) == 1 and not dispatcher.queue
    await registry.leave(who, dispatcher)
