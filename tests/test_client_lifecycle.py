"""The client SDK against peers that misbehave, with no Switchyard server: one that accepts TCP
connections and never answers the handshake, and a websocket peer that sends junk. Calls end within
their timeouts, cancelling them leaves no task behind, and junk frames do not drop the connection."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import orjson
import pytest
from websockets.asyncio.server import ServerConnection, serve

from switchyard_client import Client, ClientClosed, SwitchyardError
from switchyard_client.errors import ConnectTimeout, Unreachable
from tests.protocol import eventually

pytestmark = pytest.mark.database_agnostic

TIMEOUT_S = 10


@pytest.fixture
async def black_hole() -> AsyncIterator[str]:
    """A server URL whose TCP connections are accepted and never answered."""
    held: list[asyncio.StreamWriter] = []

    async def hold(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    yield f"ws://127.0.0.1:{port}"
    for writer in held:
        writer.close()
    server.close()
    await server.wait_closed()


async def _settled_tasks(before: set[asyncio.Task[Any]]) -> set[asyncio.Task[Any]]:
    """The client's tasks started since ``before`` that are still running, once they had a moment to end."""
    for _ in range(3):
        await asyncio.sleep(0)
    return {task for task in asyncio.all_tasks() - before - PEER_TASKS if not task.done()}


async def test_a_producer_to_a_silent_server_times_out_with_the_reason(black_hole: str) -> None:
    """A handshake never answered ends the connect after connect_timeout_s: a ConnectTimeout, which is
    both a SwitchyardError and a TimeoutError, naming the last attempt's failure."""
    before = asyncio.all_tasks()
    client = Client(black_hole, connect_timeout_s=0.5)
    with pytest.raises(ConnectTimeout) as raised:
        await asyncio.wait_for(client.producer("t"), TIMEOUT_S)
    assert isinstance(raised.value, SwitchyardError) and isinstance(raised.value, TimeoutError)
    assert await _settled_tasks(before) == set()


async def test_cancelling_a_connect_leaves_no_task(black_hole: str) -> None:
    """A producer whose connect is cancelled (a caller's own timeout) stops trying at once, without
    waiting for the client's close."""
    before = asyncio.all_tasks()
    client = Client(black_hole, connect_timeout_s=30)
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(client.producer("t"), 0.3)
    assert await _settled_tasks(before) == set()


async def test_receive_timeout_covers_the_first_connect(black_hole: str) -> None:
    """receive(timeout=) on a consumer not connected yet ends after its timeout, not the connect's, and a
    later receive tries to connect again."""
    async with Client(black_hole, connect_timeout_s=30) as client:
        consumer = client.subscribe("t", "s")
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(TimeoutError, match="no message within"):
            await consumer.receive(timeout=0.3)
        assert loop.time() - started < 5
        with pytest.raises(TimeoutError, match="no message within"):
            await consumer.receive(timeout=0.3)


async def test_a_closed_client_makes_no_socket() -> None:
    """After close, making a producer, consumer or reader raises ClientClosed."""
    client = Client("ws://127.0.0.1:9")
    await client.close()
    with pytest.raises(ClientClosed):
        await client.producer("t")
    with pytest.raises(ClientClosed):
        client.subscribe("t", "s")
    with pytest.raises(ClientClosed):
        client.reader("t")


async def test_a_consumer_closed_before_it_started_does_not_connect(black_hole: str) -> None:
    """A consumer closed before its first receive raises ClientClosed, and async for ends, without connecting."""
    before = asyncio.all_tasks()
    async with Client(black_hole, connect_timeout_s=30) as client:
        consumer = client.subscribe("t", "s")
        await consumer.close()
        with pytest.raises(ClientClosed):
            await asyncio.wait_for(consumer.receive(), TIMEOUT_S)
        assert [message async for message in consumer] == []
        assert await _settled_tasks(before) == set()


Peer = Callable[[ServerConnection], Awaitable[None]]


# The tasks of the peers' connections (not the client's).
PEER_TASKS: set[asyncio.Task[Any]] = set()


@pytest.fixture
async def peer() -> AsyncIterator[Callable[[Peer], Awaitable[tuple[str, list[ServerConnection]]]]]:
    """Starts a websocket peer running a handler; gives its URL and the connections it got."""
    servers = []

    async def start(handler: Peer) -> tuple[str, list[ServerConnection]]:
        connections: list[ServerConnection] = []

        async def handle(ws: ServerConnection) -> None:
            task = asyncio.current_task()
            assert task is not None
            PEER_TASKS.add(task)
            connections.append(ws)
            await handler(ws)

        server = await serve(handle, "127.0.0.1", 0, ping_interval=None, close_timeout=0.5)
        servers.append(server)
        return f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}", connections

    yield start
    for server in servers:
        server.close()
        await server.wait_closed()
    PEER_TASKS.clear()


def _delivery(message_id: str, data: bytes, **fields: Any) -> str:
    frame = {"messageId": message_id, "payload": base64.b64encode(data).decode(), "publishTime": "2024-01-01T00:00:00Z"}
    return orjson.dumps({**frame, **fields}).decode()


async def test_junk_frames_do_not_drop_the_connection(peer: Any) -> None:
    """Non-JSON text, binary junk, JSON that is no object and a delivery with fields of the wrong types
    are skipped or read with defaults; the deliveries arrive on the one connection."""
    async def junk_then_deliveries(ws: ServerConnection) -> None:
        for frame in ("not json {", b"\x00\xff\xfe", "[1, 2]", "null",
                      _delivery("odd", b"1", publishTime=5, redeliveryCount="x", properties=[]),
                      _delivery("good", b"2")):
            await ws.send(frame)
        await ws.wait_closed()

    url, connections = await peer(junk_then_deliveries)
    async with Client(url) as client:
        consumer = client.subscribe("t", "s")
        received = [await consumer.receive(timeout=TIMEOUT_S) for _ in range(2)]
        assert [(m.id, m.data) for m in received] == [("odd", b"1"), ("good", b"2")]
        assert received[0].redelivery_count == 0 and received[0].publish_time is None
    assert len(connections) == 1


async def test_an_error_ack_without_message_id_fails_only_its_send(peer: Any) -> None:
    """Apache Pulsar's error ack (no messageId, context as a string) fails its send with SendError; the
    connection stays, and the next send is acked."""
    async def pulsar_acks(ws: ServerConnection) -> None:
        async for text in ws:
            frame = orjson.loads(text)
            if frame["payload"] == base64.b64encode(b"bad").decode():
                ack = {"result": "send-error:7", "errorMsg": "Invalid payload", "context": str(frame["context"])}
            else:
                ack = {"result": "ok", "messageId": "CAAQAw==", "context": str(frame["context"])}
            await ws.send(orjson.dumps(ack).decode())

    url, connections = await peer(pulsar_acks)
    async with Client(url, send_timeout_s=TIMEOUT_S) as client:
        producer = await client.producer("t")
        with pytest.raises(SwitchyardError, match="send-error:7"):
            await producer.send(b"bad")
        assert await producer.send(b"good") == "CAAQAw=="
    assert len(connections) == 1


async def test_http_calls_to_no_server_raise_unreachable(black_hole: str) -> None:
    """status and emit against a port nobody listens on, or a server that never answers, raise
    Unreachable (a SwitchyardError), not the standard library's errors."""
    async with Client("http://127.0.0.1:9") as client:
        with pytest.raises(Unreachable):
            await client.status("t", timeout_s=5)
        with pytest.raises(Unreachable):
            await client.emit("type", "source", timeout_s=5)
    async with Client(black_hole) as client:
        with pytest.raises(Unreachable):
            await client.status("t", timeout_s=0.3)


async def test_closing_a_producer_while_it_sends_again_is_quick(peer: Any) -> None:
    """A producer closed while it sends its unacked messages again to a peer that does not read them
    ends within the close timeout: its sends raise ClientClosed, and no task is left."""
    async def drop_then_stall(ws: ServerConnection) -> None:
        if len(connections) == 1:
            await ws.recv()
            ws.transport.abort()  # a reconnect: every unacked message is sent again ...
        else:
            await ws.wait_closed()  # ... to a peer that reads nothing (its buffers fill)

    url, connections = await peer(drop_then_stall)
    before = asyncio.all_tasks()
    client = Client(url, backoff_initial_s=0.01)
    producer = await client.producer("t")
    sending = asyncio.create_task(producer.send_many([b"x" * 200_000 for _ in range(50)], timeout=30))
    await eventually(lambda: len(connections) == 2, TIMEOUT_S, "the reconnect")
    loop = asyncio.get_running_loop()
    started = loop.time()
    await asyncio.wait_for(client.close(), TIMEOUT_S)
    assert loop.time() - started < 5
    with pytest.raises(ClientClosed):
        await sending
    assert await _settled_tasks(before) == set()
