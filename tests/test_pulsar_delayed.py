"""Delayed delivery on Pulsar subscriptions (docs/architecture.md 18.4; test plan 18.6 item 25): a
message published with ``deliverAfterMs`` / ``deliverAt`` is held back by ``Shared`` and
``Key_Shared`` subscriptions until due, and reaches other consumers at once."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta

import pytest
from websockets.asyncio.client import ClientConnection

from app.pulsar.models import Subscription
from tests.protocol import TIMEOUT_S, eventually, make_topic
from tests.pulsar_client import ack, consumer, message, producer, quiet, send
from tests.servers import ServerProcess

# Long enough to tell "held" from "at once" on a busy machine (a message sent at once arrives within
# milliseconds), short enough to wait for: each holding test waits it out at least once.
DELAY_MS = 1_000
# A delay no test waits for.
HOUR_MS = 3_600_000


def due_time(frame: dict[str, object], delay_ms: int) -> datetime:
    """When a message delivered as ``frame`` was due: its publishTime plus the delay."""
    return datetime.fromisoformat(str(frame["publishTime"])) + timedelta(milliseconds=delay_ms)


async def delivered_at(ws: ClientConnection) -> tuple[dict[str, object], datetime]:
    """The next message on ``ws`` and the wall-clock time it arrived (bounded by the timeout)."""
    frame = await message(ws)
    return frame, datetime.now().astimezone()


@pytest.mark.parametrize("kind", ["Shared", "Key_Shared"])
async def test_holding_types_get_it_no_earlier_than_due(server: ServerProcess, kind: str) -> None:
    """Shared and Key_Shared consumers get a deliverAfterMs message after its due time, redeliveryCount 0."""
    slug = make_topic(dasf=False, policy="store")
    ws = await consumer(server, slug, query=f"subscriptionType={kind}")
    mid = await send(await producer(server, slug), 1, deliverAfterMs=DELAY_MS)
    frame, arrived = await delivered_at(ws)
    assert frame["messageId"] == mid and frame["redeliveryCount"] == 0
    assert arrived >= due_time(frame, DELAY_MS)


@pytest.mark.parametrize("kind", ["Exclusive", "Failover"])
async def test_other_types_get_it_at_once(server: ServerProcess, kind: str) -> None:
    """Exclusive and Failover consumers get a message delayed by an hour at once."""
    slug = make_topic(dasf=False, policy="store")
    ws = await consumer(server, slug, query=f"subscriptionType={kind}")
    mid = await send(await producer(server, slug), 1, deliverAfterMs=HOUR_MS)
    assert (await message(ws))["messageId"] == mid


async def test_deliver_at_is_held_until_then(server: ServerProcess) -> None:
    """deliverAt (epoch ms) holds a Shared subscription's message until that instant."""
    slug = make_topic(dasf=False, policy="store")
    ws = await consumer(server, slug, query="subscriptionType=Shared")
    at = datetime.now().astimezone() + timedelta(milliseconds=DELAY_MS)
    mid = await send(await producer(server, slug), 1, deliverAt=int(at.timestamp() * 1000))
    frame, arrived = await delivered_at(ws)
    assert frame["messageId"] == mid and arrived >= at


@pytest.mark.parametrize("kind", ["Shared", "Key_Shared"])
async def test_later_messages_are_not_blocked(server: ServerProcess, kind: str) -> None:
    """Messages published after a held one reach the consumer at once, in order; the held one does not."""
    slug = make_topic(dasf=False, policy="store")
    ws = await consumer(server, slug, query=f"subscriptionType={kind}")
    prod = await producer(server, slug)
    await send(prod, 0, deliverAfterMs=HOUR_MS, key="k")
    later = [await send(prod, n, key="k") for n in (1, 2, 3)]
    assert [(await message(ws))["messageId"] for _ in later] == later
    await quiet(ws)


async def test_due_order_across_delays(server: ServerProcess) -> None:
    """Held messages go out in order of due time, not of publication."""
    slug = make_topic(dasf=False, policy="store")
    ws = await consumer(server, slug, query="subscriptionType=Shared")
    prod = await producer(server, slug)
    late = await send(prod, 1, deliverAfterMs=2 * DELAY_MS)
    early = await send(prod, 2, deliverAfterMs=DELAY_MS)
    assert [(await message(ws))["messageId"] for _ in range(2)] == [early, late]


async def test_held_backlog_is_held_for_a_new_consumer(server: ServerProcess) -> None:
    """A delayed message in the stored backlog is held for a Shared consumer that connects later, the rest not."""
    slug = make_topic(dasf=False, policy="store")
    first = await consumer(server, slug, query="subscriptionType=Shared")
    await first.close()  # the subscription exists; its backlog is read from the database from now on
    prod = await producer(server, slug)
    held = await send(prod, 1, deliverAfterMs=DELAY_MS)
    plain = await send(prod, 2)
    ws = await consumer(server, slug, query="subscriptionType=Shared")
    assert (await message(ws))["messageId"] == plain
    frame, arrived = await delivered_at(ws)
    assert frame["messageId"] == held and arrived >= due_time(frame, DELAY_MS)


async def test_acked_delayed_message_is_not_delivered_again(server: ServerProcess) -> None:
    """An ack of a released delayed message counts as any: a new consumer of the subscription does not get it."""
    slug = make_topic(dasf=False, policy="store")
    ws = await consumer(server, slug, query="subscriptionType=Shared")
    prod = await producer(server, slug)
    await send(prod, 1, deliverAfterMs=DELAY_MS // 3)
    await ack(ws, await message(ws))
    await eventually(lambda: Subscription.objects.get(topic__slug=slug).acked_through == 1, message="ack stored")
    await ws.close()
    again = await consumer(server, slug, query="subscriptionType=Shared")
    marker = await send(prod, 2)
    assert (await message(again))["messageId"] == marker
    await quiet(again)


async def test_held_message_survives_a_restart(own_server: ServerProcess) -> None:
    """A held message is delivered after its due time by a restarted server (the due time is stored)."""
    slug = make_topic(dasf=False, policy="store")
    delay_ms = 4_000
    ws = await consumer(own_server, slug, query="subscriptionType=Shared")
    mid = await send(await producer(own_server, slug), 1, deliverAfterMs=delay_ms)
    own_server.stop()
    own_server.restart()
    ws = await consumer(own_server, slug, query="subscriptionType=Shared")
    frame, arrived = await asyncio.wait_for(delivered_at(ws), TIMEOUT_S)
    assert frame["messageId"] == mid and frame["redeliveryCount"] == 0
    assert arrived >= due_time(frame, delay_ms)
