"""The four store policies of docs/architecture.md section 5, on a real server."""

from __future__ import annotations

import uuid

from app.broker.models import Delivery, Message
from tests.protocol import (
    auth,
    connect,
    eventually,
    make_token,
    make_topic,
    make_user,
    publish,
    recv_json,
    send_json,
    subscribe,
)


def stored(message_id: str) -> bool:
    return Message.objects.filter(message_id=uuid.UUID(message_id)).exists()


def acked_by_someone(message_id: str) -> bool:
    return not stored(message_id) or Delivery.objects.filter(
        message__message_id=uuid.UUID(message_id), acked_at__isnull=False
    ).exists()


async def test_ack_means_durable(server):
    """The producer's ok arrives only once the message is in the database."""
    slug = make_topic(policy="cache")
    producer = await connect(server.ws + slug)
    ack = await publish(producer)
    assert ack["result"] == "ok"
    assert stored(ack["messageId"])


async def test_disabled_delivers_live_and_stores_nothing(server):
    """disabled: consumers connected now get the message; nothing is stored or replayed."""
    slug = make_topic(policy="disabled")
    consumer = await subscribe(server.ws, slug)
    producer = await connect(server.ws + slug)
    ack = await publish(producer)
    assert (await recv_json(consumer))["messageId"] == ack["messageId"]
    assert not stored(ack["messageId"])
    late = await subscribe(server.ws, slug, "late")  # no replay: it gets the probe, not the message
    await late.close()


async def test_cache_removed_by_first_ack(server):
    """cache: the first ack of any consumer removes the message."""
    slug = make_topic(policy="cache")
    consumer = await subscribe(server.ws, slug)
    producer = await connect(server.ws + slug)
    ack = await publish(producer)
    assert (await recv_json(consumer))["messageId"] == ack["messageId"]
    await send_json(consumer, {"messageId": ack["messageId"]})
    await eventually(lambda: not stored(ack["messageId"]), message="the cached message to go")


async def test_cache_unacked_survives_consumer_crash(server):
    """cache: a message delivered but not acked is replayed to the reconnecting consumer."""
    slug = make_topic(policy="cache")
    consumer = await subscribe(server.ws, slug)
    producer = await connect(server.ws + slug)
    ack = await publish(producer)
    assert (await recv_json(consumer))["messageId"] == ack["messageId"]
    consumer.transport.abort()  # a crash: no close handshake, no ack
    again = await subscribe(server.ws, slug, probe=False)
    replayed = await recv_json(again)
    assert replayed["messageId"] == ack["messageId"]
    assert replayed["redeliveryCount"] == 1


async def test_cacheall_waits_for_every_consumer(server):
    """cacheall: the message stays until every principal with consume rights acked it."""
    alice, bob = make_user(), make_user()
    slug = make_topic(policy="cacheall", anonymous=False, public=True, consumers=(alice, bob))
    a = await subscribe(server.ws, slug, headers=auth(make_token(alice)))
    producer = await connect(server.ws + slug)
    ack = await publish(producer)
    assert (await recv_json(a))["messageId"] == ack["messageId"]
    await send_json(a, {"messageId": ack["messageId"]})
    await eventually(lambda: acked_by_someone(ack["messageId"]), message="alice's ack")
    assert stored(ack["messageId"])
    b = await subscribe(server.ws, slug, headers=auth(make_token(bob)), probe=False)
    assert (await recv_json(b))["messageId"] == ack["messageId"]
    await send_json(b, {"messageId": ack["messageId"]})
    await eventually(lambda: not stored(ack["messageId"]), message="removal after the last ack")


async def test_store_keeps_acked_messages(server):
    """store: acked messages stay; the principal who acked does not get them again."""
    slug = make_topic(policy="store")
    consumer = await subscribe(server.ws, slug)
    producer = await connect(server.ws + slug)
    ack = await publish(producer)
    assert (await recv_json(consumer))["messageId"] == ack["messageId"]
    await send_json(consumer, {"messageId": ack["messageId"]})
    await eventually(lambda: acked_by_someone(ack["messageId"]), message="the ack")
    assert stored(ack["messageId"])
    assert Delivery.objects.filter(message__message_id=ack["messageId"], acked_at__isnull=False).exists()
    await consumer.close()
    again = await subscribe(server.ws, slug)  # nothing outstanding: the api_info probe comes
    await again.close()


async def test_store_replays_to_a_new_principal(server):
    """store: a principal that never acked gets the stored history."""
    user = make_user()
    slug = make_topic(policy="store", consumers=(user,))
    producer = await connect(server.ws + slug)
    ack = await publish(producer)
    consumer = await subscribe(server.ws, slug, headers=auth(make_token(user)), probe=False)
    assert (await recv_json(consumer))["messageId"] == ack["messageId"]
