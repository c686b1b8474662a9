"""Pulsar subscriptions on ``/ws/v2/consumer/`` for topics that are not ``supports_dasf``:
handshake refusals, durable named subscriptions, subscription types, unsubscribe and removal
(docs/architecture.md 18.2, 18.3; test plan 18.6 items 1-4, 9, 11-16, 22-24)."""

from __future__ import annotations

import asyncio
import json

import pytest

from tests.bad_input import assert_error, recv, stored
from tests.protocol import auth, eventually, make_token, make_topic, make_user, send_json, subscribe
from tests.pulsar_client import (
    accepted_eventually,
    ack,
    collect,
    consumer,
    consumer_url,
    end_of_topic_round_trip,
    message,
    producer,
    quiet,
    refused,
    send,
)
from tests.servers import ServerProcess


def subscription_acked(slug: str, name: str, message_id: str) -> bool:
    """Whether subscription ``name``'s ack of ``message_id`` is in the database: its cursor passed the
    message or its row is acked. True too once the message is gone, which the caller's check reports."""
    from app.broker.models import Message
    from app.pulsar.models import Subscription, SubscriptionMessage

    sequence = Message.objects.filter(topic__slug=slug, message_id=message_id).values_list("sequence", flat=True)
    if not sequence:
        return True
    cursor = Subscription.objects.get(topic__slug=slug, name=name)
    return cursor.acked_through >= sequence[0] or SubscriptionMessage.objects.filter(
        subscription=cursor, sequence=sequence[0], acked_at__isnull=False).exists()


# --- handshake refusals (18.6 items 1-4) --------------------------------------------------------------


async def test_no_consume_right_is_403(server: ServerProcess) -> None:
    """A topic the anonymous principal may not consume: 403 before accept."""
    slug = make_topic(dasf=False, public=False, anonymous=False)
    status, body = await refused(consumer_url(server, slug))
    assert status == 403 and "consume" in json.loads(body)["error"]


async def test_invalid_token_is_401(server: ServerProcess) -> None:
    """An invalid token where the anonymous principal has no right: 401."""
    slug = make_topic(dasf=False, public=False, anonymous=False)
    status, _ = await refused(consumer_url(server, slug), auth("not-a-token"))
    assert status == 401


async def test_missing_topic_is_404(server: ServerProcess) -> None:
    """A topic that does not exist: 404 (not a socket waiting for it)."""
    status, _ = await refused(consumer_url(server, make_topic(dasf=False) + "-missing"))
    assert status == 404


async def test_missing_response_topic_of_a_dasf_source_still_waits(server: ServerProcess) -> None:
    """A missing topic named like a response topic of an existing topic is accepted and waits, as today."""
    source = make_topic()
    ws = await subscribe(server.ws + "v2/consumer/persistent/public/default/", f"{source}_abcdefgh", probe=False)
    await end_of_topic_round_trip(ws)


@pytest.mark.parametrize(
    ("query", "named"),
    [("subscriptionType=Sharded", "subscriptionType"), ("receiverQueueSize=many", "receiverQueueSize"),
     ("receiverQueueSize=0", "receiverQueueSize"), ("ackTimeoutMillis=1.5", "ackTimeoutMillis"),
     ("deadLetterTopic=no/such", "deadLetterTopic"), ("maxRedeliverCount=1", "deadLetterTopic")],
    ids=["type", "queue-size", "queue-size-zero", "timeout", "dead-letter-name", "default-dead-letter-name"],
)
async def test_bad_parameters_are_400(server: ServerProcess, query: str, named: str) -> None:
    """An unknown subscriptionType, a malformed number, a bad dead letter name: 400 naming the parameter."""
    slug = make_topic(dasf=False)
    status, body = await refused(consumer_url(server, slug, "sub.1", query))
    assert status == 400 and named in json.loads(body)["error"]


async def test_empty_subscription_is_400(server: ServerProcess) -> None:
    """A consumer path without a subscription name: 400."""
    slug = make_topic(dasf=False)
    status, _ = await refused(consumer_url(server, slug, ""))
    assert status == 400


async def test_second_exclusive_consumer_is_409(server: ServerProcess) -> None:
    """A second Exclusive consumer gets 409; once the first left, a new one is accepted."""
    slug = make_topic(dasf=False)
    first = await consumer(server, slug)
    status, body = await refused(consumer_url(server, slug))
    assert status == 409 and "exclusive" in body.lower()
    await first.close()
    await accepted_eventually(consumer_url(server, slug))


async def test_other_subscription_type_is_409(server: ServerProcess) -> None:
    """A consumer asking another subscriptionType than the attached consumers': 409."""
    slug = make_topic(dasf=False)
    await consumer(server, slug, query="subscriptionType=Shared")
    status, body = await refused(consumer_url(server, slug, query="subscriptionType=Failover"))
    assert status == 409 and "Shared" in body


# --- frames (18.6 item 9) ----------------------------------------------------------------------------------


async def test_unknown_frame_type_is_an_error_and_no_ack(server: ServerProcess) -> None:
    """An unknown type gets an error frame and does not ack the message it names."""
    slug = make_topic(dasf=False, policy="store")
    ws = await consumer(server, slug)
    prod = await producer(server, slug)
    mid = await send(prod, 1)
    got = await message(ws)
    assert got["messageId"] == mid
    await send_json(ws, {"type": "bogus", "messageId": mid})
    assert_error(await recv(ws), "bogus")
    await ack(ws, got)  # still in flight: taken without an error frame
    await end_of_topic_round_trip(ws)


async def test_permit_in_push_mode_is_an_error(server: ServerProcess) -> None:
    """A permit frame on a push-mode consumer gets an error frame."""
    ws = await consumer(server, make_topic(dasf=False))
    await send_json(ws, {"type": "permit", "permitMessages": 1})
    assert_error(await recv(ws), "pullMode")


# --- subscriptions (18.6 items 11-13) -------------------------------------------------------------------------


async def test_each_subscription_gets_every_message_once(server: ServerProcess) -> None:
    """Two subscriptions of one topic each get every message once, redeliveryCount 0."""
    slug = make_topic(dasf=False)
    subs = [await consumer(server, slug, "a"), await consumer(server, slug, "b")]
    prod = await producer(server, slug)
    ids = [await send(prod, n) for n in range(3)]
    for ws in subs:
        frames = [await message(ws) for _ in ids]
        assert [f["messageId"] for f in frames] == ids and {f["redeliveryCount"] for f in frames} == {0}
        for frame in frames:
            await ack(ws, frame)
    marker = await send(prod, 9)
    for ws in subs:
        assert (await message(ws))["messageId"] == marker
        await quiet(ws, 0.1)


async def test_unacked_come_back_on_reconnect(server: ServerProcess) -> None:
    """A subscription's unacked messages come back when its consumer reconnects, redeliveryCount 1."""
    slug = make_topic(dasf=False)
    ws = await consumer(server, slug)
    prod = await producer(server, slug)
    first, second = await send(prod, 1), await send(prod, 2)
    await ack(ws, await message(ws))
    assert (await message(ws))["messageId"] == second
    await ws.close()
    again = await accepted_eventually(consumer_url(server, slug))
    frame = await message(again)
    assert (frame["messageId"], frame["redeliveryCount"]) == (second, 1) and first != second


async def test_new_subscription_starts_at_latest(server: ServerProcess) -> None:
    """A subscription created after a message was published does not get it."""
    slug = make_topic(dasf=False)
    prod = await producer(server, slug)
    await send(prod, 1)
    ws = await consumer(server, slug)
    later = await send(prod, 2)
    assert (await message(ws))["messageId"] == later


# --- subscription types (18.6 items 14-16) ------------------------------------------------------------------


async def test_failover_second_takes_over_with_unacked(server: ServerProcess) -> None:
    """Failover: only the first consumer gets messages; when it leaves the second gets its unacked ones and the rest."""
    slug = make_topic(dasf=False)
    query = "subscriptionType=Failover"
    active, standby = await consumer(server, slug, query=query), await consumer(server, slug, query=query)
    prod = await producer(server, slug)
    first = await send(prod, 1)
    assert (await message(active))["messageId"] == first
    await quiet(standby)
    await active.close()
    frame = await message(standby)
    assert (frame["messageId"], frame["redeliveryCount"]) == (first, 1)
    second = await send(prod, 2)
    assert (await message(standby))["messageId"] == second


async def test_shared_splits_messages(server: ServerProcess) -> None:
    """Shared: three consumers each get a share, and every message goes to exactly one."""
    slug = make_topic(dasf=False)
    sockets = [await consumer(server, slug, query="subscriptionType=Shared") for _ in range(3)]
    prod = await producer(server, slug)
    ids = [await send(prod, n) for n in range(9)]
    got = await collect(sockets, len(ids))
    assert all(got) and sorted(f["messageId"] for share in got for f in share) == sorted(ids)
    for ws in sockets:
        await quiet(ws, 0.1)


async def test_key_shared_keeps_a_key_on_one_consumer(server: ServerProcess) -> None:
    """Key_Shared: all messages of one key go to one consumer while it is connected."""
    slug = make_topic(dasf=False)
    sockets = [await consumer(server, slug, query="subscriptionType=Key_Shared") for _ in range(2)]
    prod = await producer(server, slug)
    keys = ["a", "b", "c", "d"] * 3
    for n, key in enumerate(keys):
        await send(prod, n, key=key)
    got = await collect(sockets, len(keys))
    owners = {f["key"]: index for index, share in enumerate(got) for f in share}
    for index, share in enumerate(got):
        assert all(owners[f["key"]] == index for f in share)
    assert sorted(f["key"] for share in got for f in share) == sorted(keys)


# --- unsubscribe and removal (18.6 items 22-24) --------------------------------------------------------------


async def test_unsubscribe_deletes_the_cursor(server: ServerProcess) -> None:
    """unsubscribe closes with 1000; a new consumer of that name starts at latest."""
    slug = make_topic(dasf=False)
    ws = await consumer(server, slug)
    prod = await producer(server, slug)
    await send(prod, 1)
    await message(ws)  # left unacked
    await send_json(ws, {"type": "unsubscribe"})
    await asyncio.wait_for(ws.wait_closed(), 10)
    assert ws.close_code == 1000
    await send(prod, 2)
    again = await accepted_eventually(consumer_url(server, slug))
    latest = await send(prod, 3)
    assert (await message(again))["messageId"] == latest


async def test_unsubscribe_with_other_consumers_is_an_error(server: ServerProcess) -> None:
    """unsubscribe while another consumer is attached gets an error frame; the subscription stays."""
    slug = make_topic(dasf=False)
    query = "subscriptionType=Shared"
    ws, _other = await consumer(server, slug, query=query), await consumer(server, slug, query=query)
    await send_json(ws, {"type": "unsubscribe"})
    assert_error(await recv(ws), "other consumer")


def lease_rows(slug: str) -> int:
    """Lease rows of the topic's subscriptions."""
    from app.broker.models import Topic
    from app.leases.models import Lease

    return Lease.objects.filter(name__startswith=f"sub:{Topic.objects.get(slug=slug).pk}:").count()


async def test_unsubscribe_deletes_the_lease_row(server: ServerProcess) -> None:
    """A deleted (unsubscribed) subscription leaves no lease row behind."""
    slug = make_topic(dasf=False)
    ws = await consumer(server, slug)
    assert lease_rows(slug) == 1
    await send_json(ws, {"type": "unsubscribe"})
    await asyncio.wait_for(ws.wait_closed(), 10)
    await eventually(lambda: lease_rows(slug) == 0, message="the lease row deleted")


async def test_last_consumer_leaving_deletes_the_lease_row(server: ServerProcess) -> None:
    """When a subscription's last consumer closes, its lease row goes (the subscription stays)."""
    slug = make_topic(dasf=False)
    ws = await consumer(server, slug)
    await ws.close()
    await eventually(lambda: lease_rows(slug) == 0, message="the lease row deleted")


async def test_cache_message_stays_until_every_subscription_acked(server: ServerProcess) -> None:
    """Under cache, a message acked by one subscription stays until the other subscription acks it."""
    slug = make_topic(dasf=False, policy="cache")
    a, b = await consumer(server, slug, "a"), await consumer(server, slug, "b")
    prod = await producer(server, slug)
    mid = await send(prod, 1)
    await ack(a, await message(a))
    got = await message(b)
    await eventually(lambda: subscription_acked(slug, "a", mid), message="a's ack stored")
    assert len(stored(slug)) == 1
    await ack(b, got)
    await eventually(lambda: not stored(slug), message="message removed")


async def test_cacheall_needs_principals_and_subscriptions(server: ServerProcess) -> None:
    """Under cacheall, a message goes only when every consumer principal and every subscription acked it."""
    user = make_user()
    slug = make_topic(dasf=False, policy="cacheall", consumers=(user,))
    sub = await consumer(server, slug)
    dasf = await subscribe(server.ws, slug, headers=auth(make_token(user)), probe=False)
    prod = await producer(server, slug)
    mid = await send(prod, 1)
    await ack(sub, await message(sub))  # the subscription and the anonymous principal
    got = await message(dasf)
    await eventually(lambda: subscription_acked(slug, "sub", mid), message="the subscription's ack stored")
    assert len(stored(slug)) == 1
    await ack(dasf, got)
    await eventually(lambda: not stored(slug), message="message removed")


async def test_store_keeps_acked_messages(server: ServerProcess) -> None:
    """Under store, a message acked by every subscription stays stored."""
    slug = make_topic(dasf=False, policy="store")
    a = await consumer(server, slug, "a")
    prod = await producer(server, slug)
    mid = await send(prod, 1)
    await ack(a, await message(a))
    await eventually(lambda: subscription_acked(slug, "a", mid), message="a's ack stored")
    assert len(stored(slug)) == 1
