"""The client SDK's edges against the session's server: Pulsar's ack timeout, a DASF topic's consumer
that does not read, large DASF responses, tokens without rights, and cancelled calls."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from switchyard_client import Client, ClientClosed, ConnectionRefused, RequestTimeout
from tests.protocol import eventually, make_token, make_topic, make_user
from tests.servers import ServerProcess

pytestmark = pytest.mark.wire_interop

TIMEOUT_S = 10


@pytest.fixture
def topic() -> str:
    """A public topic with Pulsar semantics that stores messages."""
    return make_topic(dasf=False, policy="store")


async def test_a_message_not_acked_in_time_is_handed_over_again(server: ServerProcess, topic: str) -> None:
    """With ack_timeout_s, a message the application holds unacked past it comes back to the application
    (the broker redelivers it on the same connection); once acked it stays away."""
    async with Client(server.http) as client:
        consumer = client.subscribe(topic, "s", ack_timeout_s=1)
        await consumer.start()
        sent = await (await client.producer(topic)).send(b"slow")
        first = await consumer.receive(timeout=TIMEOUT_S)
        again = await consumer.receive(timeout=TIMEOUT_S)
        assert (first.id, again.id, again.redelivery_count) == (sent, sent, 1)
        await again.ack()
        with pytest.raises(TimeoutError):
            await consumer.receive(timeout=2.5)


async def test_a_dasf_topic_consumer_that_does_not_read_holds_a_bounded_queue(server: ServerProcess) -> None:
    """A DASF topic has no flow control: a consumer whose application does not read stops reading the
    socket at receiver_queue_size queued messages, and later gets every message in order."""
    topic = make_topic()
    async with Client(server.http) as client:
        consumer = client.subscribe(topic, "s", receiver_queue_size=5)
        await consumer.start()
        await (await client.producer(topic)).send_many([f"m{n}" for n in range(40)])
        await eventually(lambda: consumer.queued >= 5, TIMEOUT_S, "a full queue")
        texts, most = [], 0
        while len(texts) < 40:
            most = max(most, consumer.queued)
            message = await consumer.receive(timeout=TIMEOUT_S)
            await message.ack()
            if message.properties.get("messageType") != "api_info":  # the broker's probe of a DASF topic
                texts.append(message.text)
        assert most <= 5
        assert texts == [f"m{n}" for n in range(40)]


async def test_a_large_result_is_answered_in_fragments(server: ServerProcess) -> None:
    """A served result above demessaging's max_payload_size goes in fragments under the broker's frame
    limit, and request puts them together."""
    topic = make_topic()
    big = "x" * 1_200_000

    async def large(call: Any) -> Any:
        return big

    async with Client(server.http) as client:
        serving = asyncio.create_task(client.serve(topic, large))
        try:
            assert await client.request(topic, {"func_name": "large"}, timeout=TIMEOUT_S * 3) == big
        finally:
            serving.cancel()
            with pytest.raises(asyncio.CancelledError):
                await serving


async def test_a_bad_token_is_refused_for_good(server: ServerProcess) -> None:
    """An invalid token, where anonymous clients may not go either, is refused (401) at once, for
    producers and consumers alike."""
    private = make_topic(dasf=False, anonymous=False, public=False)
    async with Client(server.http, token="not-a-token", connect_timeout_s=30) as client:
        with pytest.raises(ConnectionRefused) as raised:
            await asyncio.wait_for(client.producer(private), 5)
        assert raised.value.status == 401
        with pytest.raises(ConnectionRefused) as raised:
            await asyncio.wait_for(client.subscribe(private, "s").receive(), 5)
        assert raised.value.status == 401


async def test_a_token_without_the_right_is_refused(server: ServerProcess) -> None:
    """A valid token whose user may not consume a private topic is refused (403) with the broker's reason."""
    private = make_topic(dasf=False, anonymous=False, public=False)
    async with Client(server.http, token=make_token(make_user())) as client:
        with pytest.raises(ConnectionRefused) as raised:
            await asyncio.wait_for(client.subscribe(private, "s").receive(), 5)
        assert raised.value.status == 403 and raised.value.reason


async def test_a_closed_producer_refuses_to_send(server: ServerProcess, topic: str) -> None:
    """Sending on a closed producer raises ClientClosed at once."""
    async with Client(server.http) as client:
        producer = await client.producer(topic)
        await producer.close()
        with pytest.raises(ClientClosed):
            await producer.send(b"x")


async def test_cancelled_calls_leave_no_task(server: ServerProcess, topic: str) -> None:
    """send, receive, request and serve cancelled by a caller's timeout, then the client closed: no task
    of the client's is left, and no send is left pending."""
    dasf_topic = make_topic()
    before = asyncio.all_tasks()
    client = Client(server.http)
    producer = await client.producer(topic)
    consumer = client.subscribe(make_topic(dasf=False, policy="store"), "s")
    for steps in range(20):  # cancelled at every point of a send: writing it, waiting for its ack
        sending = asyncio.create_task(producer.send(b"x" * 100_000))
        for _ in range(steps):
            await asyncio.sleep(0)
        sending.cancel()
        await asyncio.wait([sending])
    assert not producer._acks.pending
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(consumer.receive(), 0.5)
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(client.request(dasf_topic, {"func_name": "f"}, timeout=30), 0.5)

    never = asyncio.Event()

    async def stuck(call: Any) -> Any:
        await never.wait()

    serving = asyncio.create_task(client.serve(dasf_topic, stuck))
    with pytest.raises(RequestTimeout):
        await client.request(dasf_topic, {"func_name": "f"}, timeout=1.5)
    serving.cancel()
    with pytest.raises(asyncio.CancelledError):
        await serving
    await client.close()
    assert {task for task in asyncio.all_tasks() - before if not task.done()} == set()
