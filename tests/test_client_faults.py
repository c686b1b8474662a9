"""The client SDK where delivery is hardest, against real server processes: a server killed while
hundreds of sends are in flight, a pull-mode receive waiting across a restart, a topic gone while a
send waits, messages over a frame limit, and an unsubscribe the server never answered."""

from __future__ import annotations

import asyncio
import signal
import time
from collections import Counter
from collections.abc import Iterator

import pytest

from switchyard_client import Client, ConnectionRefused, Message, SendError, SwitchyardError
from switchyard_client.consumer import Consumer
from switchyard_client.errors import FrameTooLarge
from tests.client_servers import StoredTopics, fast, own_server, running
from tests.protocol import eventually
from tests.servers import ServerProcess, manage

pytestmark = pytest.mark.wire_interop

TIMEOUT_S = 20
# Frames above MAX_FRAME_BYTES get an error ack, above four times that the server closes with 1009.
MAX_FRAME_BYTES = 16 * 1024


@pytest.fixture(scope="module")
def module_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A server of this module's own with a small frame limit."""
    proc = own_server(tmp_path_factory.mktemp("client-faults"), MAX_FRAME_BYTES=str(MAX_FRAME_BYTES))
    yield proc
    proc.stop()


@pytest.fixture
def killable(module_server: ServerProcess) -> ServerProcess:
    return running(module_server)


@pytest.fixture(scope="module")
def stored_topics(module_server: ServerProcess) -> StoredTopics:
    return StoredTopics(module_server, batch=8)


@pytest.fixture
def topic(stored_topics: StoredTopics) -> str:
    """A new stored topic on the module's server."""
    return stored_topics.new()


async def collect(consumer: Consumer, into: list[Message]) -> None:
    """Receive and ack every message until the consumer closes."""
    async for message in consumer:
        into.append(message)
        await message.ack()


async def test_send_many_across_a_kill_delivers_each_message_once(killable: ServerProcess, topic: str) -> None:
    """A server killed in the middle of a send_many of thousands of messages (at least a hundred not yet
    acked): every send returns its id once the server is back, and the consumer gets each
    message exactly once, in order."""
    count = 2000
    async with fast(killable, send_timeout_s=60) as client:
        consumer = client.subscribe(topic, "s", receiver_queue_size=100)
        await consumer.start()
        received: list[Message] = []
        collecting = asyncio.create_task(collect(consumer, received))
        producer = await client.producer(topic)

        def kill_after_deliveries() -> int:
            """On a thread of its own, so the kill does not wait for the event loop: the sends unacked then."""
            # As soon as a hundred sends are out and unacked: waiting for deliveries too raced the acks on a
            # busy machine (all acked before the consumer had run).
            deadline = time.monotonic() + TIMEOUT_S
            while len(producer._acks.pending) < 100 and time.monotonic() < deadline:
                time.sleep(0.0002)  # bounded-poll
            killable.kill()
            return len(producer._acks.pending)

        killing = asyncio.create_task(asyncio.to_thread(kill_after_deliveries))
        sending = asyncio.create_task(producer.send_many([f"m{n}" for n in range(count)]))
        unacked = await killing
        # All of them may still be unacked (send_many writes faster than the acks come back): the server
        # may have stored any of them, so the resend is tested either way.
        assert unacked > 0, "no send unacked at the kill: nothing was tested"
        await asyncio.to_thread(killable.restart)
        ids = await asyncio.wait_for(sending, 60)
        assert len(set(ids)) == count
        await eventually(lambda: len(received) >= count, 60, "every message")
        await consumer.close()
        await collecting
        assert Counter(m.id for m in received).most_common(1)[0][1] == 1
        assert [m.id for m in received] == ids
        assert [m.text for m in received] == [f"m{n}" for n in range(count)]


async def test_a_reader_resumes_after_a_kill_without_gaps_or_repeats(killable: ServerProcess, topic: str) -> None:
    """A reader that took one message and holds more in its queue when the server dies goes on after the
    restart with the next one: each message once, in order."""
    async with fast(killable) as client:
        producer = await client.producer(topic)
        await producer.send_many([b"1", b"2", b"3"])
        reader = client.reader(topic, start="earliest")
        assert (await reader.receive(timeout=TIMEOUT_S)).data == b"1"
        await eventually(lambda: reader.queued == 2, TIMEOUT_S, "the rest queued")
        killable.kill()
        await asyncio.to_thread(killable.restart)
        await producer.send_many([b"4", b"5"], timeout=TIMEOUT_S)
        assert [(await reader.receive(timeout=TIMEOUT_S)).data for _ in range(4)] == [b"2", b"3", b"4", b"5"]
        with pytest.raises(TimeoutError):
            await reader.receive(timeout=1)


async def test_a_pull_receive_waiting_across_a_restart_gets_the_next_message(killable: ServerProcess,
                                                                           topic: str) -> None:
    """A pull-mode receive that waits while the server restarts asks the new connection for messages,
    also when the redelivery of a message it holds takes the first permit."""
    async with fast(killable) as client:
        consumer = client.subscribe(topic, "s", pull=True, receiver_queue_size=1)
        await consumer.start()
        producer = await client.producer(topic)
        await producer.send(b"held")
        held = await consumer.receive(timeout=TIMEOUT_S)
        waiting = asyncio.create_task(consumer.receive(timeout=TIMEOUT_S))
        await eventually(lambda: consumer._waiting == 1, TIMEOUT_S, "the receive to wait")
        killable.kill()
        await asyncio.to_thread(killable.restart)
        after = await producer.send(b"after", timeout=TIMEOUT_S)
        message = await waiting
        assert (message.id, message.data) == (after, b"after")
        await held.ack()
        await message.ack()


async def test_a_send_waiting_for_a_topic_deleted_meanwhile_fails_at_once(killable: ServerProcess, topic: str) -> None:
    """A send waiting for the server to return fails with the refusal (404) as soon as the reconnect is
    refused for good, not at its timeout."""
    async with fast(killable) as client:
        producer = await client.producer(topic)
        killable.kill()
        sending = asyncio.create_task(producer.send(b"x", timeout=60))
        await asyncio.to_thread(manage, killable.database_url, "dasf_topic", topic, "--remove")
        await asyncio.to_thread(killable.restart)
        with pytest.raises(ConnectionRefused) as raised:
            await asyncio.wait_for(sending, TIMEOUT_S)
        assert raised.value.status == 404
        assert producer.closed


async def test_a_message_over_the_servers_frame_limit_fails_its_send(killable: ServerProcess, topic: str) -> None:
    """A frame so large that the server closes the connection (1009) fails that send with SendError at
    once, instead of closing every next connection until its timeout; other sends go on."""
    async with fast(killable) as client:
        producer = await client.producer(topic)
        small = asyncio.create_task(producer.send(b"before", timeout=TIMEOUT_S))
        with pytest.raises(SendError, match="too big"):
            await asyncio.wait_for(producer.send(b"x" * (5 * MAX_FRAME_BYTES), timeout=60), TIMEOUT_S)
        assert await small
        assert await producer.send(b"after", timeout=TIMEOUT_S)


async def test_a_delivery_over_max_frame_bytes_ends_the_consumer(killable: ServerProcess, topic: str) -> None:
    """A message larger than the client's max_frame_bytes raises FrameTooLarge from receive, instead of
    reconnecting for ever to be sent it again."""
    async with fast(killable, max_frame_bytes=4096) as client:
        consumer = client.subscribe(topic, "s")
        await consumer.start()
        await (await client.producer(topic)).send(b"x" * 8192)
        with pytest.raises(FrameTooLarge):
            await consumer.receive(timeout=TIMEOUT_S)


async def test_an_unsubscribe_the_server_never_answered_raises(killable: ServerProcess, topic: str) -> None:
    """A connection that breaks before the broker answered unsubscribe is no answer: unsubscribe raises,
    and the subscription is still there after the restart."""
    async with fast(killable) as client:
        consumer = client.subscribe(topic, "kept")
        await consumer.start()
        assert killable.proc is not None
        killable.proc.send_signal(signal.SIGSTOP)
        unsubscribing = asyncio.create_task(consumer.unsubscribe(timeout=TIMEOUT_S))
        await eventually(lambda: consumer._link is not None and consumer._link._last, TIMEOUT_S, "the unsubscribe")
        killable.kill()
        with pytest.raises(SwitchyardError, match="before the broker answered"):
            await unsubscribing
        await asyncio.to_thread(killable.restart)
        producer = await client.producer(topic)
        sent = await producer.send(b"still subscribed", timeout=TIMEOUT_S)
        assert (await receive_once_leased(client, topic, "kept")).id == sent


async def receive_once_leased(client: Client, topic: str, subscription: str) -> Message:
    """The next message of ``subscription``, once the restarted server no longer refuses it as leased by
    its killed self (409 until SUBSCRIPTION_LEASE_S passed)."""
    deadline = asyncio.get_running_loop().time() + TIMEOUT_S
    while True:
        try:
            return await client.subscribe(topic, subscription).receive(timeout=TIMEOUT_S)
        except ConnectionRefused as refused:
            if refused.status != 409 or asyncio.get_running_loop().time() > deadline:
                raise
            await asyncio.sleep(0.1)  # bounded-poll


async def test_closing_a_client_of_a_hung_server_is_quick(killable: ServerProcess, topic: str) -> None:
    """A server that stopped answering (SIGSTOP) does not hold the client's close for long: sockets are
    closed together, each waiting a short while for the closing handshake."""
    client = fast(killable)
    await client.producer(topic)
    await client.subscribe(topic, "s").start()
    await client.reader(topic).start()
    assert killable.proc is not None
    killable.proc.send_signal(signal.SIGSTOP)
    try:
        loop = asyncio.get_running_loop()
        started = loop.time()
        await asyncio.wait_for(client.close(), 30)
        assert loop.time() - started < 5
    finally:
        killable.proc.send_signal(signal.SIGCONT)
