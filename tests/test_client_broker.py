"""The client SDK against a real server: producers, consumers and readers on the Pulsar paths."""

from __future__ import annotations

import asyncio
import socket

import pytest

from switchyard_client import Client, ConnectionRefused, Consumer, Outgoing, SendError, ServerError, Unreachable
from tests.protocol import eventually, make_topic, unique
from tests.servers import ServerProcess

pytestmark = pytest.mark.wire_interop

TIMEOUT_S = 10


@pytest.fixture
def topic() -> str:
    """A public topic with Pulsar semantics that stores messages."""
    return make_topic(dasf=False, policy="store")


async def test_send_returns_the_id_the_consumer_gets(server: ServerProcess, topic: str) -> None:
    """A sent message arrives with its id, bytes, properties and key."""
    async with Client(server.http) as client:
        consumer = client.subscribe(topic, "s")
        await consumer.start()
        producer = await client.producer(topic)
        message_id = await producer.send(b"\x00\xffhello", properties={"a": "1"}, key="k")
        message = await consumer.receive(timeout=TIMEOUT_S)
        assert (message.id, message.data, message.properties, message.key) == (message_id, b"\x00\xffhello",
                                                                                {"a": "1"}, "k")
        assert message.redelivery_count == 0 and message.publish_time is not None


async def test_text_is_sent_as_utf8(server: ServerProcess, topic: str) -> None:
    """A str is sent as its UTF-8 bytes and read back as text and JSON."""
    async with Client(server.http) as client:
        consumer = client.subscribe(topic, "s")
        await consumer.start()
        await (await client.producer(topic)).send('{"ü": 1}')
        message = await consumer.receive(timeout=TIMEOUT_S)
        assert (message.text, message.json()) == ('{"ü": 1}', {"ü": 1})


async def test_send_many_returns_the_ids_in_order(server: ServerProcess, topic: str) -> None:
    """send_many publishes a batch without waiting per message; the consumer gets it in order."""
    async with Client(server.http) as client:
        consumer = client.subscribe(topic, "s")
        await consumer.start()
        producer = await client.producer(topic)
        ids = await producer.send_many([b"0", "1", Outgoing(b"2", key="k")] + [str(n).encode() for n in range(3, 200)])
        received = [(await consumer.receive(timeout=TIMEOUT_S)) for _ in ids]
        assert [m.id for m in received] == ids
        assert [m.data for m in received] == [str(n).encode() for n in range(200)]


async def test_an_error_ack_raises_send_error(server: ServerProcess) -> None:
    """A message the broker refuses (a delay on a disabled topic) raises SendError with Pulsar's code."""
    topic = make_topic(dasf=False, policy="disabled")
    async with Client(server.http) as client:
        producer = await client.producer(topic)
        with pytest.raises(SendError) as raised:
            await producer.send(b"x", deliver_after=5)
        assert raised.value.result == "send-error:8"
        assert await producer.send(b"still usable")


async def test_a_refused_handshake_raises_connection_refused(server: ServerProcess) -> None:
    """A missing topic is refused for good (404), not retried until the timeout."""
    async with Client(server.http, connect_timeout_s=30) as client:
        with pytest.raises(ConnectionRefused) as raised:
            await asyncio.wait_for(client.producer(unique("missing")), 5)
        assert raised.value.status == 404


async def test_a_second_exclusive_consumer_is_refused(server: ServerProcess, topic: str) -> None:
    """An Exclusive subscription held by a consumer refuses another (409) on its first connection."""
    async with Client(server.http) as client:
        await client.subscribe(topic, "only").start()
        with pytest.raises(ConnectionRefused) as raised:
            await client.subscribe(topic, "only").start()
        assert raised.value.status == 409


async def test_an_acked_message_is_not_delivered_again(server: ServerProcess, topic: str) -> None:
    """After an ack, a new consumer of the subscription gets only what came later."""
    async with Client(server.http) as client:
        consumer = client.subscribe(topic, "s")
        await consumer.start()
        producer = await client.producer(topic)
        await producer.send(b"first")
        await (await consumer.receive(timeout=TIMEOUT_S)).ack()
        await consumer.close()
        await producer.send(b"second")
        again = client.subscribe(topic, "s")
        assert (await again.receive(timeout=TIMEOUT_S)).data == b"second"


async def test_an_unacked_message_comes_back_to_the_next_consumer(server: ServerProcess, topic: str) -> None:
    """A message not acked is redelivered to the subscription's next consumer, counted."""
    async with Client(server.http) as client:
        consumer = client.subscribe(topic, "s")
        await consumer.start()
        await (await client.producer(topic)).send(b"unacked")
        assert (await consumer.receive(timeout=TIMEOUT_S)).data == b"unacked"
        await consumer.close()
        message = await client.subscribe(topic, "s").receive(timeout=TIMEOUT_S)
        assert (message.data, message.redelivery_count) == (b"unacked", 1)


async def test_a_nacked_message_is_redelivered(server: ServerProcess, topic: str) -> None:
    """nack gives a message back; it returns after the negative-ack delay."""
    async with Client(server.http) as client:
        consumer = client.subscribe(topic, "s", type="shared", nack_delay_s=0.1)
        await consumer.start()
        await (await client.producer(topic)).send(b"again")
        first = await consumer.receive(timeout=TIMEOUT_S)
        await first.nack()
        second = await consumer.receive(timeout=TIMEOUT_S)
        assert (second.id, second.redelivery_count) == (first.id, 1)


async def test_shared_consumers_split_the_messages(server: ServerProcess, topic: str) -> None:
    """Two Shared consumers of one subscription each get some messages, none twice."""
    async with Client(server.http) as client:
        consumers = [client.subscribe(topic, "s", type="shared", receiver_queue_size=5) for _ in range(2)]
        for consumer in consumers:
            await consumer.start()
        await (await client.producer(topic)).send_many([str(n) for n in range(20)])
        got: dict[int, list[bytes]] = {0: [], 1: []}

        async def drain(index: int) -> None:
            while sum(len(v) for v in got.values()) < 20:
                try:
                    message = await consumers[index].receive(timeout=0.5)
                except TimeoutError:
                    continue
                got[index].append(message.data)
                await message.ack()

        await asyncio.wait_for(asyncio.gather(drain(0), drain(1)), TIMEOUT_S)
        assert got[0] and got[1]
        assert sorted(got[0] + got[1], key=int) == [str(n).encode() for n in range(20)]


async def test_pull_mode_receives_what_it_asks_for(server: ServerProcess, topic: str) -> None:
    """A pull-mode consumer asks for messages as it reads them and gets them all."""
    async with Client(server.http) as client:
        consumer = client.subscribe(topic, "s", pull=True, receiver_queue_size=2)
        await consumer.start()
        await (await client.producer(topic)).send_many([b"a", b"b", b"c", b"d", b"e"])
        received = []
        for _ in range(5):
            message = await consumer.receive(timeout=TIMEOUT_S)
            received.append(message.data)
            await message.ack()
        assert received == [b"a", b"b", b"c", b"d", b"e"]


async def test_receive_times_out(server: ServerProcess, topic: str) -> None:
    """receive with a timeout raises TimeoutError when nothing comes."""
    async with Client(server.http) as client:
        with pytest.raises(TimeoutError):
            await client.subscribe(topic, "s").receive(timeout=0.3)


async def test_reader_reads_from_the_earliest(server: ServerProcess, topic: str) -> None:
    """A reader from the earliest position gets the stored history, then live messages."""
    async with Client(server.http) as client:
        producer = await client.producer(topic)
        ids = await producer.send_many([b"old-1", b"old-2"])
        reader = client.reader(topic, start="earliest")
        assert [(await reader.receive(timeout=TIMEOUT_S)).id for _ in ids] == ids
        live = await producer.send(b"new")
        assert (await reader.receive(timeout=TIMEOUT_S)).id == live


async def test_reader_starts_after_a_message_id(server: ServerProcess, topic: str) -> None:
    """A reader started at a message id gets what came after it."""
    async with Client(server.http) as client:
        ids = await (await client.producer(topic)).send_many([b"1", b"2", b"3"])
        reader = client.reader(topic, start=ids[0])
        assert [(await reader.receive(timeout=TIMEOUT_S)).data for _ in range(2)] == [b"2", b"3"]


async def test_async_for_ends_when_the_consumer_closes(server: ServerProcess, topic: str) -> None:
    """Iteration stops cleanly once the consumer is closed."""
    async with Client(server.http) as client:
        consumer = client.subscribe(topic, "s")
        await consumer.start()
        producer = await client.producer(topic)
        await producer.send(b"one")
        seen = []
        async for message in consumer:
            seen.append(message.data)
            await message.ack()
            await consumer.close()
        assert seen == [b"one"]


async def test_unsubscribe_deletes_the_subscription(server: ServerProcess, topic: str) -> None:
    """unsubscribe deletes the subscription's cursor and closes the consumer."""
    from app.pulsar.models import Subscription

    async with Client(server.http) as client:
        consumer = client.subscribe(topic, "gone")
        await consumer.start()
        assert Subscription.objects.filter(topic__slug=topic, name="gone").exists()
        await consumer.unsubscribe()
        assert consumer.closed
    assert not Subscription.objects.filter(topic__slug=topic, name="gone").exists()


async def test_unsubscribe_with_another_consumer_attached_is_refused(server: ServerProcess, topic: str) -> None:
    """While another consumer is attached, unsubscribe raises ServerError and the consumer keeps working."""
    async with Client(server.http) as client:
        first, second = (client.subscribe(topic, "both", type="shared") for _ in range(2))
        await first.start()
        await second.start()
        with pytest.raises(ServerError):
            await first.unsubscribe()
        await (await client.producer(topic)).send(b"still here")
        got = await asyncio.wait_for(_first_of(first, second), TIMEOUT_S)
        assert got == b"still here"


async def _first_of(*consumers: Consumer) -> bytes:
    tasks = [asyncio.create_task(c.receive()) for c in consumers]
    done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    for task in pending:
        task.cancel()
    return next(iter(done)).result().data


async def test_unsubscribe_deletes_the_subscription_for_good(server: ServerProcess, topic: str) -> None:
    """After unsubscribe (which returns once the broker closed) the subscription is gone: a message
    published meanwhile does not reach the next consumer of that name, created at the latest message."""
    async with Client(server.http) as client:
        consumer = client.subscribe(topic, "gone")
        await consumer.start()
        await asyncio.wait_for(consumer.unsubscribe(), 5)
        producer = await client.producer(topic)
        await producer.send(b"while unsubscribed")
        again = client.subscribe(topic, "gone")
        await again.start()
        await producer.send(b"after")
        assert (await again.receive(timeout=TIMEOUT_S)).data == b"after"


async def seconds_to_close_while_sending(client: Client, topic: str) -> float:
    """How long a producer takes to close while a stream of sends (at most 500 unacked) is under way."""
    producer = await client.producer(topic)
    slots = asyncio.Semaphore(500)
    sends: list[asyncio.Future[str]] = []

    async def keep_sending() -> None:
        while True:
            await slots.acquire()
            sends.append(asyncio.ensure_future(producer.send(b"x")))
            sends[-1].add_done_callback(lambda _: slots.release())

    sending = asyncio.create_task(keep_sending())
    try:
        await eventually(lambda: sum(send.done() for send in sends) >= 1000, TIMEOUT_S, "1000 acks")
        sending.cancel()
        started = asyncio.get_running_loop().time()
        await asyncio.wait_for(producer.close(), 15)
        return asyncio.get_running_loop().time() - started
    finally:
        await asyncio.gather(sending, *sends, return_exceptions=True)


async def test_closing_a_busy_producer_is_prompt(server: ServerProcess, topic: str) -> None:
    """A producer closed while acks stream in closes at once, not after the socket's close timeout (10 s)."""
    async with Client(server.http) as client:
        # Twice: how many acks are on their way at the close differs from run to run.
        assert await seconds_to_close_while_sending(client, topic) < 3
        assert await seconds_to_close_while_sending(client, topic) < 3


async def test_no_server_raises_unreachable() -> None:
    """Nothing listening at the URL: Unreachable (a ConnectionError, not a timeout: nobody is slow) once the
    connect timeout is up."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    async with Client(f"http://127.0.0.1:{port}", connect_timeout_s=0.5) as client:
        with pytest.raises(Unreachable) as raised:
            await asyncio.wait_for(client.producer("t"), 5)
    assert isinstance(raised.value, ConnectionError) and not isinstance(raised.value, TimeoutError)
