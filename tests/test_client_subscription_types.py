"""The client SDK's Failover and Key_Shared subscriptions against a real server."""

from __future__ import annotations

import asyncio

import pytest

from switchyard_client import Client, Consumer, Message, Outgoing
from tests.protocol import make_topic
from tests.servers import ServerProcess

pytestmark = pytest.mark.wire_interop

TIMEOUT_S = 10


@pytest.fixture
def topic() -> str:
    return make_topic(dasf=False, policy="store")


async def drain(consumer: Consumer, seen: list[Message], everyone: list[list[Message]], expected: int,
                stop: asyncio.Event) -> None:
    """Receive and ack into ``seen`` until all consumers together saw ``expected`` messages."""
    while not stop.is_set():
        try:
            message = await consumer.receive(timeout=0.2)
        except TimeoutError:
            continue
        seen.append(message)
        await message.ack()
        if sum(map(len, everyone)) >= expected:
            stop.set()


async def test_failover_gives_everything_to_the_first_then_to_the_next(server: ServerProcess, topic: str) -> None:
    """Under Failover the first consumer gets every message; once it leaves, the standby gets what follows."""
    async with Client(server.http) as client:
        first = client.subscribe(topic, "f", type="failover")
        await first.start()
        standby = client.subscribe(topic, "f", type="failover")
        await standby.start()
        producer = await client.producer(topic)
        await producer.send_many([b"1", b"2", b"3"])
        got = [await first.receive(timeout=TIMEOUT_S) for _ in range(3)]
        for message in got:
            await message.ack()
        assert [m.data for m in got] == [b"1", b"2", b"3"]
        with pytest.raises(TimeoutError):
            await standby.receive(timeout=0.5)
        await first.close()
        await producer.send(b"4")
        assert (await standby.receive(timeout=TIMEOUT_S)).data == b"4"


async def test_key_shared_keeps_each_key_on_one_consumer(server: ServerProcess, topic: str) -> None:
    """Under Key_Shared every message of a key goes to the same consumer, and every message arrives once."""
    async with Client(server.http) as client:
        consumers = [client.subscribe(topic, "k", type="key_shared") for _ in range(2)]
        for consumer in consumers:
            await consumer.start()
        seen: list[list[Message]] = [[], []]
        stop = asyncio.Event()
        draining = [asyncio.create_task(drain(c, s, seen, 60, stop)) for c, s in zip(consumers, seen, strict=True)]
        producer = await client.producer(topic)
        keys = [f"key-{n % 6}" for n in range(60)]
        await producer.send_many([Outgoing(str(n).encode(), key=key) for n, key in enumerate(keys)])
        try:
            await asyncio.wait_for(stop.wait(), TIMEOUT_S)
        finally:
            stop.set()
            await asyncio.gather(*draining)
        owners = {m.key: index for index, messages in enumerate(seen) for m in messages}
        assert all(owners[m.key] == index for index, messages in enumerate(seen) for m in messages)
        assert sorted(int(m.data) for messages in seen for m in messages) == list(range(60))
