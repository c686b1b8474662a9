"""The client SDK across a server killed with SIGKILL and restarted on the same port: consumers get
their outstanding messages once, sends wait for the server (bounded by their timeout), and closing
leaves no task behind."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from switchyard_client import SendTimeout
from tests.client_servers import StoredTopics, fast, own_server, running
from tests.servers import ServerProcess

pytestmark = pytest.mark.wire_interop

TIMEOUT_S = 20


@pytest.fixture(scope="module")
def module_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A server of this module's own."""
    proc = own_server(tmp_path_factory.mktemp("client-reconnect"))
    yield proc
    proc.stop()


@pytest.fixture
def killable(module_server: ServerProcess) -> ServerProcess:
    return running(module_server)


@pytest.fixture(scope="module")
def stored_topics(module_server: ServerProcess) -> StoredTopics:
    return StoredTopics(module_server, batch=6)


@pytest.fixture
def topic(stored_topics: StoredTopics) -> str:
    """A new stored topic on the module's server."""
    return stored_topics.new()


async def restart_after_kill(server: ServerProcess) -> None:
    server.kill()
    await asyncio.to_thread(server.restart)


async def test_a_consumer_gets_its_unacked_messages_after_a_restart(killable: ServerProcess, topic: str) -> None:
    """Messages sent but not received before a kill arrive once the consumer reconnects."""
    async with fast(killable) as client:
        consumer = client.subscribe(topic, "s")
        await consumer.start()
        await (await client.producer(topic)).send_many([b"1", b"2", b"3"])
        first = await consumer.receive(timeout=TIMEOUT_S)
        await first.ack()
        await restart_after_kill(killable)
        rest = [await consumer.receive(timeout=TIMEOUT_S) for _ in range(2)]
        assert [m.data for m in rest] == [b"2", b"3"]
        for message in rest:
            await message.ack()
        with pytest.raises(TimeoutError):
            await consumer.receive(timeout=1)


async def test_a_held_message_is_not_handed_over_twice(killable: ServerProcess, topic: str) -> None:
    """A message the application holds when the server dies is not surfaced again; its ack after the
    reconnect is taken, so the subscription does not deliver it again."""
    async with fast(killable) as client:
        consumer = client.subscribe(topic, "s")
        await consumer.start()
        producer = await client.producer(topic)
        await producer.send(b"held")
        held = await consumer.receive(timeout=TIMEOUT_S)
        await restart_after_kill(killable)
        marker = await producer.send(b"after")
        after = await consumer.receive(timeout=TIMEOUT_S)
        assert after.id == marker
        await held.ack()
        await after.ack()
        await consumer.close()
        with pytest.raises(TimeoutError):
            await client.subscribe(topic, "s").receive(timeout=1.5)


async def test_a_send_during_an_outage_waits_for_the_server(killable: ServerProcess, topic: str) -> None:
    """A message sent while the server is down is sent once it is back, and acked; it arrives once."""
    async with fast(killable) as client:
        producer = await client.producer(topic)
        consumer = client.subscribe(topic, "s")
        await consumer.start()
        killable.kill()
        sending = asyncio.create_task(producer.send(b"during", timeout=TIMEOUT_S))
        await asyncio.to_thread(killable.restart)
        message_id = await sending
        message = await consumer.receive(timeout=TIMEOUT_S)
        assert (message.id, message.data) == (message_id, b"during")
        await message.ack()
        with pytest.raises(TimeoutError):
            await consumer.receive(timeout=1)


async def test_a_send_times_out_while_the_server_is_down(killable: ServerProcess, topic: str) -> None:
    """With no server to take it, a send raises SendTimeout after its timeout."""
    async with fast(killable) as client:
        producer = await client.producer(topic)
        killable.kill()
        with pytest.raises(SendTimeout):
            await producer.send(b"lost?", timeout=0.5)
        await asyncio.to_thread(killable.restart)
        assert await producer.send(b"back", timeout=TIMEOUT_S)


async def test_closing_leaves_no_task(killable: ServerProcess, topic: str) -> None:
    """After a client closed (sockets mid-reconnect included), none of its tasks is left."""
    before = asyncio.all_tasks()
    client = fast(killable)
    consumer = client.subscribe(topic, "s")
    await consumer.start()
    await (await client.producer(topic)).send(b"x")
    reader = client.reader(topic, start="earliest")
    await reader.receive(timeout=TIMEOUT_S)
    killable.kill()
    await asyncio.sleep(0)
    await client.close()
    assert asyncio.all_tasks() - before == set()
    await asyncio.to_thread(killable.restart)


async def test_a_cancelled_reader_task_closes_cleanly(killable: ServerProcess, topic: str) -> None:
    """Cancelling a task that iterates a consumer ends it at once; closing the client afterwards ends the rest."""
    before = asyncio.all_tasks()
    client = fast(killable)

    consumer = client.subscribe(topic, "s")
    await consumer.start()

    async def consume() -> None:
        async for message in consumer:
            await message.ack()

    task = asyncio.create_task(consume())
    await (await client.producer(topic)).send(b"x")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await client.close()
    assert asyncio.all_tasks() - before == set()
