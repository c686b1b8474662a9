"""No loss across SIGKILL: what a `cache` topic acked to producers survives a kill -9 of the server."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
import uuid
from typing import Any

from websockets.asyncio.client import ClientConnection

from tests.databases import query
from tests.protocol import connect, publish, recv_json, send_json, subscribe, unique
from tests.servers import ROOT, ServerProcess, server_env

N = 200
DB_TIMEOUT_S = 15.0


def create_cache_topic(server: ServerProcess) -> str:
    """Through the real admin command, on the server's own database.

    ``--no-dasf``: no api_info probe, so "the first frame a consumer gets" is a stored or live message.
    """
    slug = unique("durable")
    subprocess.run(
        [sys.executable, "manage.py", "dasf_topic", slug, "--new", "--anonymous", "--no-dasf",
         "--store-messages", "cache"],
        cwd=ROOT, env=server_env(server.database_url), check=True, timeout=60,
        capture_output=True,
    )
    return slug


def stored_ids(server: ServerProcess, slug: str) -> set[str]:
    """messageIds stored for ``slug``, read straight from the server's database."""
    rows = query(
        server.database_url,
        "SELECT m.message_id FROM broker_message m JOIN broker_topic t ON m.topic_id = t.id WHERE t.slug = %s",
        (slug,),
    )
    return {str(row[0]) if isinstance(row[0], uuid.UUID) else str(uuid.UUID(hex=str(row[0]))) for row in rows}


async def wait_stored(server: ServerProcess, slug: str, expected: set[str]) -> None:
    deadline = time.monotonic() + DB_TIMEOUT_S
    while (found := stored_ids(server, slug)) != expected:
        assert time.monotonic() < deadline, f"stored {len(found)} rows, expected {len(expected)}"
        await asyncio.sleep(0.05)  # bounded-poll


async def publish_all(server: ServerProcess, slug: str, count: int) -> list[str]:
    """Publish ``count`` messages; each must be acked ok. Returns their messageIds in publish order."""
    producer = await connect(server.ws + slug)
    try:
        acked = []
        for n in range(count):
            ack = await publish(producer, context=n)
            assert ack["result"] == "ok" and ack["context"] == n, ack
            acked.append(ack["messageId"])
        return acked
    finally:
        await producer.close()


async def receive(consumer: ClientConnection, count: int) -> list[dict[str, Any]]:
    """``count`` delivery frames, each acked on receipt."""
    frames = []
    for _ in range(count):
        frame = await recv_json(consumer)
        assert "messageId" in frame, frame
        frames.append(frame)
        await send_json(consumer, {"messageId": frame["messageId"]})
    return frames


async def assert_nothing_stored_for(server: ServerProcess, slug: str) -> None:
    """A new consumer gets no stored message: the first frame it receives is a marker published now."""
    consumer = await subscribe(server.ws, slug, probe=False)
    try:
        producer = await connect(server.ws + slug)
        try:
            marker = await publish(producer, context="marker")
            assert marker["result"] == "ok", marker
        finally:
            await producer.close()
        first = await recv_json(consumer)
        assert first["messageId"] == marker["messageId"], f"got a stored message again: {first}"
        await send_json(consumer, {"messageId": first["messageId"]})
    finally:
        await consumer.close()


async def test_acked_publishes_survive_sigkill(fresh_server: ServerProcess) -> None:
    """N messages acked ok with no consumer come back exactly once, in order, after kill -9 and restart."""
    slug = create_cache_topic(fresh_server)
    acked = await publish_all(fresh_server, slug, N)
    assert len(set(acked)) == N

    fresh_server.kill()
    fresh_server.restart()

    consumer = await subscribe(fresh_server.ws, slug, probe=False)
    try:
        frames = await receive(consumer, N)
    finally:
        await consumer.close()
    assert [f["messageId"] for f in frames] == acked
    assert [f["context"] for f in frames] == list(range(N))
    assert all(f.get("redeliveryCount", 0) >= 1 for f in frames), frames[:3]

    await assert_nothing_stored_for(fresh_server, slug)
    await wait_stored(fresh_server, slug, set())


async def test_messages_acked_before_kill_are_not_redelivered(fresh_server: ServerProcess) -> None:
    """After kill -9 and restart, only the messages no consumer had acked are delivered again."""
    slug = create_cache_topic(fresh_server)
    consumer = await subscribe(fresh_server.ws, slug, probe=False)
    try:
        acked = await publish_all(fresh_server, slug, N)
        live = []
        for _ in range(N):
            live.append(await recv_json(consumer))
        assert [f["messageId"] for f in live] == acked
        done, pending = acked[: N // 2], acked[N // 2:]
        for message_id in done:
            await send_json(consumer, {"messageId": message_id})
        await wait_stored(fresh_server, slug, set(pending))
        fresh_server.kill()
    finally:
        await consumer.close()
    fresh_server.restart()

    consumer = await subscribe(fresh_server.ws, slug, probe=False)
    try:
        frames = await receive(consumer, len(pending))
    finally:
        await consumer.close()
    assert [f["messageId"] for f in frames] == pending
    assert all(f.get("redeliveryCount", 0) >= 1 for f in frames), frames[:3]

    await assert_nothing_stored_for(fresh_server, slug)
    await wait_stored(fresh_server, slug, set())
