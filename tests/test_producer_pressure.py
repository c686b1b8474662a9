"""Producers cannot put unbounded bytes in flight: what a producer connection submitted for storing
and is not committed yet is bounded in bytes (PRODUCER_PENDING_BYTES), and so is what the writer
holds for everyone (WRITE_QUEUE_BYTES). Past either, the server reads no more of that producer's
frames until commits catch up (TCP slows the client); nothing is dropped or refused. Memory is the
server's resident set (``/proc/<pid>/status``)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest
import websockets
from websockets.asyncio.client import ClientConnection

from tests.protocol import OPEN, connect, make_topic, publish, recv_json
from tests.servers import ServerProcess, memory_kib, start_server
from tests.services import require_redis

TEST_BUDGET_S = 120.0
MIB = 1024 * 1024
# The attack: anonymous producers sending ~1 MiB frames to a public ``cache`` topic as fast as
# they can, never reading their acks. Bounded: this many frames each, for at most FLOOD_S.
FLOODERS = 4
FLOOD_FRAMES = 150
FLOOD_S = 20.0
FLOOD_PAYLOAD_CHARS = MIB - 4096
# The memory tests' flood: 256 MiB, twice RSS_GROWTH_LIMIT_KIB (eight times BACKPLANE_QUEUE_BYTES, which
# bounds the disabled topic's). With both bounds lifted the server's peak grew ~370 MiB under it on
# SQLite and ~740 MiB on PostgreSQL; bounded, ~70 and ~100 MiB.
MEMORY_FLOOD_FRAMES = 64
# Peak resident growth allowed: the default bounds (64 MiB for the writer, counted generously)
# plus a frame in flight per connection and allocator slack. Unbounded, the flood held ~900 MiB.
RSS_GROWTH_LIMIT_KIB = 128 * 1024


@pytest.fixture
def tight_server(request: pytest.FixtureRequest) -> Iterator[ServerProcess]:
    """A server where 1 MiB pending, per producer or in the writer as a whole, holds producers back."""
    bound = "PRODUCER_PENDING_BYTES" if request.param == "producer" else "WRITE_QUEUE_BYTES"
    server = start_server(os.environ["DATABASE_URL"], **{bound: str(MIB)})
    yield server
    server.stop()


async def flooder(server: ServerProcess, slug: str) -> ClientConnection:
    """A producer socket that reads ahead at most one frame (its acks wait in the server)."""
    ws = await websockets.connect(server.ws + slug, max_size=None, max_queue=1)
    OPEN.append(ws)
    return ws


async def flood(ws: ClientConnection, count: int, payload_chars: int, deadline_s: float) -> int:
    """Send up to ``count`` frames without reading (``context`` numbers them) for at most
    ``deadline_s``; how many were sent. A send waits while the server reads nothing."""
    sent = 0
    payload = "p" * payload_chars
    try:
        async with asyncio.timeout(deadline_s):
            for n in range(count):
                await ws.send(json.dumps({"payload": payload, "properties": {}, "context": n}))
                sent += 1
    except TimeoutError:
        pass
    return sent


async def acks_of(ws: ClientConnection, count: int) -> list[dict[str, object]]:
    return [await recv_json(ws, timeout=60) for _ in range(count)]


def stored_contexts(slug: str) -> list[object]:
    from app.broker.models import Message

    return list(Message.objects.filter(topic__slug=slug).order_by("sequence").values_list("context", flat=True))


async def test_producers_flooding_big_messages_keep_memory_bounded(own_server: ServerProcess) -> None:
    """Anonymous producers flooding ~1 MiB messages to a cache topic without reading acks keep server memory bounded."""
    async with asyncio.timeout(TEST_BUDGET_S):
        slug = make_topic(policy="cache")
        sockets = [await flooder(own_server, slug) for _ in range(FLOODERS)]
        peak_before = memory_kib(own_server, "VmHWM")
        sent = await asyncio.gather(
            *(flood(ws, MEMORY_FLOOD_FRAMES, FLOOD_PAYLOAD_CHARS, FLOOD_S) for ws in sockets)
        )
        acks = await asyncio.gather(*(acks_of(ws, n) for ws, n in zip(sockets, sent, strict=True)))
        growth = memory_kib(own_server, "VmHWM") - peak_before
        assert growth < RSS_GROWTH_LIMIT_KIB, f"server peak RSS grew {growth} KiB under {sent} x 1 MiB frames"
        for got, n in zip(acks, sent, strict=True):
            assert [(a["result"], a["context"]) for a in got] == [("ok", i) for i in range(n)]


@pytest.mark.parametrize("tight_server", ["producer", "writer"], indirect=True)
async def test_held_back_producers_get_every_message_acked_and_stored_in_order(tight_server: ServerProcess) -> None:
    """Producers held back by a bound still get every message acked ok and stored, in order."""
    async with asyncio.timeout(TEST_BUDGET_S):
        slugs = [make_topic(policy="store") for _ in range(3)]
        sockets = [await flooder(tight_server, slug) for slug in slugs]
        # 40 x 256 KiB each: ten times either bound, sent without reading an ack.
        sent = await asyncio.gather(*(flood(ws, 40, 256 * 1024, FLOOD_S) for ws in sockets))
        assert sent == [40, 40, 40]
        acks = await asyncio.gather(*(acks_of(ws, 40) for ws in sockets))
        for got in acks:
            assert [(a["result"], a["context"]) for a in got] == [("ok", n) for n in range(40)]
        for slug in slugs:
            assert stored_contexts(slug) == list(range(40))


@pytest.fixture
def one_socket_server() -> Iterator[ServerProcess]:
    """1 MiB pending per producer, and one anonymous socket per address: a connection that never
    ended would lock the next one out."""
    server = start_server(os.environ["DATABASE_URL"], PRODUCER_PENDING_BYTES=str(MIB), MAX_CONNECTIONS_PER_ADDRESS="1")
    yield server
    server.stop()


async def test_producer_that_disconnects_while_held_back_leaves_nothing_stuck(one_socket_server: ServerProcess) -> None:
    """A producer that disconnects while held back ends cleanly: the next one connects and publishes."""
    async with asyncio.timeout(TEST_BUDGET_S):
        server = one_socket_server
        slug = make_topic(policy="cache")
        gone = await flooder(server, slug)
        assert await flood(gone, 20, FLOOD_PAYLOAD_CHARS, FLOOD_S) == 20
        gone.transport.abort()  # frames still unread by the server are lost with the connection

        async def admitted() -> ClientConnection:
            while True:
                try:
                    return await connect(server.ws + slug)
                except websockets.InvalidStatus as refused:
                    assert refused.response.status_code == 429  # the old connection still counts
                    await asyncio.sleep(0.05)  # bounded-poll

        producer = await asyncio.wait_for(admitted(), 30)
        ack = await publish(producer, context="after")
        assert ack["result"] == "ok" and ack["context"] == "after", ack


async def test_server_stops_promptly_while_producers_are_held_back(own_server: ServerProcess) -> None:
    """A server stopping while producers are held back shuts down by itself (not killed), logging no error."""
    async with asyncio.timeout(TEST_BUDGET_S):
        slug = make_topic(policy="cache")
        sockets = [await flooder(own_server, slug) for _ in range(FLOODERS)]
        floods = [asyncio.create_task(flood(ws, FLOOD_FRAMES, FLOOD_PAYLOAD_CHARS, FLOOD_S)) for ws in sockets]
        # Held back once the writer holds more than its bound; the first acks say commits run.
        await asyncio.gather(*(acks_of(ws, 1) for ws in sockets))
        assert own_server.proc is not None
        await asyncio.to_thread(own_server.stop)  # SIGTERM; killed after 15 s
        for task in floods:
            task.cancel()
        await asyncio.gather(*floods, return_exceptions=True)
        # uvicorn ends by raising the signal it handled again; a kill (after 15 s) would be SIGKILL.
        assert own_server.proc.returncode == -signal.SIGTERM, "".join(own_server.output[-20:])


class StallingRelay:
    """A TCP relay to Redis whose server-to-Redis direction can be stopped: Redis, as the server
    sees it, takes nothing more (slower than the server publishes)."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.flowing = asyncio.Event()
        self.flowing.set()
        self._server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []

    async def start(self) -> str:
        """Listen on a free port; the Redis URL to give the server."""
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        return f"redis://127.0.0.1:{self._server.sockets[0].getsockname()[1]}/0"

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self.target)
        self._writers += [writer, up_writer]
        await asyncio.gather(self._pipe(reader, up_writer, gated=True), self._pipe(up_reader, writer, gated=False),
                             return_exceptions=True)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, gated: bool) -> None:
        try:
            while data := await reader.read(64 * 1024):
                if gated:
                    await self.flowing.wait()
                writer.write(data)
                await writer.drain()
        finally:
            writer.close()

    async def close(self) -> None:
        self.flowing.set()
        if self._server is not None:
            self._server.close()
        for writer in self._writers:
            writer.close()


async def test_disabled_topic_flood_while_redis_lags_keeps_memory_bounded() -> None:
    """Producers flooding ~1 MiB messages to a disabled topic while Redis takes nothing keep server memory bounded."""
    redis = urlsplit(require_redis())
    relay = StallingRelay(redis.hostname or "127.0.0.1", redis.port or 6379)
    server = await asyncio.to_thread(start_server, os.environ["DATABASE_URL"], REDIS_URL=await relay.start())
    try:
        async with asyncio.timeout(TEST_BUDGET_S):
            slug = make_topic(policy="disabled")
            sockets = [await flooder(server, slug) for _ in range(FLOODERS)]
            relay.flowing.clear()
            peak_before = memory_kib(server, "VmHWM")
            sent = await asyncio.gather(
                *(flood(ws, MEMORY_FLOOD_FRAMES, FLOOD_PAYLOAD_CHARS, FLOOD_S) for ws in sockets)
            )
            acks = await asyncio.gather(*(acks_of(ws, n) for ws, n in zip(sockets, sent, strict=True)))
            growth = memory_kib(server, "VmHWM") - peak_before
            assert growth < RSS_GROWTH_LIMIT_KIB, f"server peak RSS grew {growth} KiB under {sent} x 1 MiB frames"
            assert all(a["result"] == "ok" for got in acks for a in got)
            # What waited for Redis beyond BACKPLANE_QUEUE_BYTES was dropped, and said so.
            assert any("backplane backlog full" in line for line in server.output), "".join(server.output)
    finally:
        relay.flowing.set()
        await asyncio.to_thread(server.stop)
        await relay.close()
