"""Outbox to real Redis Streams: one entry per event, one field per attribute, capped streams."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis
from django.test import override_settings

from app.outbox.emit import emit
from app.outbox.models import OutboxEvent, Status
from tests.outbox import clear_outbox, fast_retries, running_relays
from tests.protocol import eventually
from tests.services import require_redis

READ_TIMEOUT_MS = 30_000


@pytest.fixture
async def stream(_db_access: None) -> AsyncIterator[tuple[aioredis.Redis, str]]:
    """A Redis client and a stream name of the test's own (deleted afterwards)."""
    url = require_redis()
    clear_outbox()
    name = f"test.outbox.{uuid.uuid4().hex[:8]}"
    client = aioredis.Redis.from_url(url)
    with override_settings(OUTBOX_REDIS_URL=url, OUTBOX_REDIS_STREAM=name, OUTBOX_POLL_INTERVAL_S=0.2):
        yield client, name
    await client.delete(name)
    await client.aclose()


async def _read(client: aioredis.Redis, name: str, count: int) -> list[dict[bytes, bytes]]:
    """Block on XREAD until ``count`` entries are in the stream."""
    entries: list[dict[bytes, bytes]] = []
    last = "0-0"
    while len(entries) < count:
        reply = await client.xread({name: last}, count=count, block=READ_TIMEOUT_MS)
        assert reply, f"XREAD timed out with {len(entries)} of {count} entries"
        for entry_id, fields in reply[0][1]:
            entries.append(fields)
            last = entry_id
    return entries


async def test_event_arrives_as_a_stream_entry(stream: tuple[aioredis.Redis, str]) -> None:
    """A committed event is one XADD entry: attributes as fields, data as its own field."""
    client, name = stream
    row = emit("com.example.paid", "/tests/redis", {"amount": 5}, subject="inv-1", key="inv", target="redis",
               extensions={"region": "eu"})
    async with running_relays():
        [fields] = await _read(client, name, 1)
        await eventually(lambda: OutboxEvent.objects.get(pk=row.pk).status == Status.PUBLISHED)
    assert {k.decode(): v.decode() for k, v in fields.items() if k != b"time"} == {
        "specversion": "1.0", "id": row.event_id, "source": "/tests/redis", "type": "com.example.paid",
        "datacontenttype": "application/json", "subject": "inv-1", "region": "eu", "partitionkey": "inv",
        "data": json.dumps({"amount": 5}, separators=(",", ":")),
    }
    assert await client.xlen(name) == 1


async def test_events_of_a_key_are_appended_in_order(stream: tuple[aioredis.Redis, str]) -> None:
    """Events of one key appear in the stream in the order they were emitted."""
    client, name = stream
    for n in range(50):
        emit("com.example.step", "/tests/redis", n, key=f"k{n % 2}", target="redis")
    async with running_relays(2):
        entries = await _read(client, name, 50)
    for key in ("k0", "k1"):
        numbers = [int(e[b"data"]) for e in entries if e[b"partitionkey"] == key.encode()]
        assert numbers == sorted(numbers) and len(numbers) == 25


async def test_destination_names_the_stream(stream: tuple[aioredis.Redis, str]) -> None:
    """An event's destination overrides the default stream."""
    client, name = stream
    other = f"{name}.other"
    emit("com.example.routed", "/tests/redis", None, target="redis", destination=other)
    try:
        async with running_relays():
            [fields] = await _read(client, other, 1)
        assert b"data" not in fields
    finally:
        await client.delete(other)


async def test_streams_are_capped(stream: tuple[aioredis.Redis, str]) -> None:
    """XADD trims with MAXLEN ~: a stream does not grow far past OUTBOX_REDIS_MAXLEN."""
    client, name = stream
    with override_settings(OUTBOX_REDIS_MAXLEN=100):
        for n in range(1000):
            emit("com.example.tick", "/tests/redis", n, target="redis")
        async with running_relays():
            await eventually(lambda: not OutboxEvent.objects.exclude(status=Status.PUBLISHED).exists(), 60)
    # Approximate trimming removes whole macro nodes (100 entries by default).
    assert 100 <= await client.xlen(name) <= 300


async def test_wrong_type_key_dead_letters_the_event(stream: tuple[aioredis.Redis, str]) -> None:
    """A stream name taken by another Redis type refuses the event, which ends as failed."""
    client, name = stream
    await client.set(name, "not a stream")
    with fast_retries():
        row = emit("com.example.blocked", "/tests/redis", 1, target="redis")
        async with running_relays():
            await eventually(lambda: OutboxEvent.objects.get(pk=row.pk).status == Status.FAILED, 30)
    row.refresh_from_db()
    assert row.attempts == 3 and "WRONGTYPE" in row.last_error
