"""Server memory stays bounded when clients send much and read nothing: refusals echo only a small
``context``, every connection's send queue is bounded in bytes (4408 past SEND_QUEUE_BYTES), and
replays wait for room in bytes. Memory is the server's resident set (``/proc/<pid>/status``)."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Iterator

import pytest
import websockets
from websockets.asyncio.client import ClientConnection

from tests.protocol import OPEN, connect, make_topic, recv_json, send_json, subscribe, unique
from tests.servers import ServerProcess, memory_kib, start_server

TEST_BUDGET_S = 90.0
MIB = 1024 * 1024
# Peak resident growth allowed during an attack: the default send queue (16 MiB) plus frames in
# flight and allocator slack. Each attack below would hold at least twice this before the fix.
RSS_GROWTH_LIMIT_KIB = 64 * 1024
# Frames a flood sends: what the server would hold if it echoed their context (about 120 MiB).
FLOOD = {"oversized": (30, 4 * MIB - 4096), "no-rights": (120, MIB - 4096)}
# ~1 MiB messages to a consumer that never reads (about 120 MiB if its queue were unbounded).
STUCK_MESSAGES = 120
STUCK_PAYLOAD_CHARS = MIB - 4096


@pytest.fixture
def small_queue_server() -> Iterator[ServerProcess]:
    """A server whose per-connection send queue holds 1 MiB."""
    server = start_server(os.environ["DATABASE_URL"], SEND_QUEUE_BYTES=str(MIB))
    yield server
    server.stop()


async def closed_code(ws: ClientConnection, budget: float = 60.0) -> tuple[int, int | None]:
    """Read until the server closes: the frames read and the close code."""
    count = 0
    with pytest.raises(websockets.ConnectionClosed) as closed:
        async with asyncio.timeout(budget):
            while True:
                await ws.recv()
                count += 1
    return count, (closed.value.rcvd.code if closed.value.rcvd is not None else None)


async def publish_many(producer: ClientConnection, count: int, payload: str) -> None:
    """Publish ``count`` messages one after another; every one acked ok."""
    for n in range(count):
        await send_json(producer, {"payload": payload, "properties": {}, "context": n})
        ack = await recv_json(producer)
        assert ack["result"] == "ok" and ack["context"] == n, {k: v for k, v in ack.items() if k != "payload"}


@pytest.mark.parametrize("kind", list(FLOOD))
async def test_flood_of_big_refused_frames_keeps_memory_bounded(own_server: ServerProcess, kind: str) -> None:
    """An anonymous client flooding big refused frames without reading gets small acks; server memory stays bounded."""
    async with asyncio.timeout(TEST_BUDGET_S):
        count, size = FLOOD[kind]
        slug = unique("no-such") if kind == "oversized" else make_topic(public=False, anonymous=False)
        # A client library reads ahead (16 frames by default): this one holds one frame at most.
        flooder = await websockets.connect(own_server.ws + slug, max_size=None, max_queue=1)
        OPEN.append(flooder)
        peak_before = memory_kib(own_server, "VmHWM")
        frame = json.dumps({"payload": "", "properties": {}, "context": "c" * size})
        for _ in range(count):
            await flooder.send(frame)
        # Only now read (every frame is answered): the peak is past.
        acks = [await recv_json(flooder, timeout=30) for _ in range(count)]
        growth = memory_kib(own_server, "VmHWM") - peak_before
        assert growth < RSS_GROWTH_LIMIT_KIB, f"server peak RSS grew {growth} KiB under a {count} x {size} B flood"
        # Refusals, each too small to carry the context back.
        assert all("error" in ack["result"] and "context" not in ack for ack in acks), {
            k: str(v)[:80] for k, v in acks[0].items()}


async def test_consumer_that_never_reads_is_closed_by_bytes(own_server: ServerProcess) -> None:
    """A consumer that never reads ~1 MiB messages is closed with 4408 by bytes; server memory stays bounded."""
    async with asyncio.timeout(TEST_BUDGET_S):
        slug = make_topic(policy="disabled", dasf=False)
        stuck = await subscribe(own_server.ws, slug, probe=False)
        producer = await connect(own_server.ws + slug)
        rss_before = memory_kib(own_server, "VmRSS")
        # Every ack means the message was handed to the stuck consumer's connection.
        await publish_many(producer, STUCK_MESSAGES, "p" * STUCK_PAYLOAD_CHARS)
        growth = memory_kib(own_server, "VmRSS") - rss_before
        assert growth < RSS_GROWTH_LIMIT_KIB, f"server RSS grew {growth} KiB with a consumer that never reads"
        read, code = await closed_code(stuck)
        assert code == 4408 and read < STUCK_MESSAGES, (read, code)
        assert any("WARNING" in line and "4408" in line for line in own_server.output), "".join(own_server.output)
        assert not any(" ERROR " in line for line in own_server.output), "".join(own_server.output)


async def test_replay_larger_than_the_send_queue_reaches_a_reading_consumer(small_queue_server: ServerProcess) -> None:
    """A reading consumer gets a replay of more bytes than SEND_QUEUE_BYTES in full, and is not closed."""
    async with asyncio.timeout(TEST_BUDGET_S):
        server = small_queue_server
        slug = make_topic(policy="cache", dasf=False)
        producer = await connect(server.ws + slug)
        count, payload = 40, "r" * (100 * 1024)  # 4 MiB stored, four times the queue
        await publish_many(producer, count, payload)
        consumer = await subscribe(server.ws, slug, probe=False)
        got = []
        try:
            while len(got) < count:
                message = await recv_json(consumer)
                got.append(message["context"])
                await send_json(consumer, {"messageId": message["messageId"]})
        except websockets.ConnectionClosed as exc:
            pytest.fail(f"a reading consumer was closed ({exc.rcvd}) after {len(got)} of {count} replayed messages")
        assert got == list(range(count))


async def test_live_messages_held_back_during_a_stalled_replay_are_bounded_by_bytes(
    small_queue_server: ServerProcess,
) -> None:
    """Live messages held back behind a replay the consumer does not read close it with 4408 past SEND_QUEUE_BYTES."""
    async with asyncio.timeout(TEST_BUDGET_S):
        server = small_queue_server
        slug = make_topic(policy="cache", dasf=False)
        producer = await connect(server.ws + slug)
        # More than socket buffers, the queue and its transport can take: the replay stalls.
        payload = "h" * (500 * 1024)
        await publish_many(producer, 50, payload)
        stuck = await subscribe(server.ws, slug, probe=False)
        live = 10  # 5 MiB held back behind the stalled replay
        for n in range(live):
            await send_json(producer, {"payload": payload, "properties": {}, "context": f"live-{n}"})
            assert (await recv_json(producer))["result"] == "ok"
        _, code = await closed_code(stuck)
        assert code == 4408
        assert any("held back during a replay" in line for line in server.output), "".join(server.output)
