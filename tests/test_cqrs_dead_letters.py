"""``cqrs_dead_letters retry|dump|purge`` on a real RabbitMQ replica layout, and the dead letter queue's
name (``CQRS_DEAD_LETTER_QUEUE``) in the command, the bindings and the consumer."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
from django.conf import settings
from django.core.management import CommandError
from django.test import override_settings

from app.cqrs.apply import bindings
from tests.cqrs_commands import (
    run,
)
from tests.protocol import unique
from tests.servers import ConsumerProcess
from tests.services import require_rabbitmq

# --- cqrs_dead_letters (RabbitMQ) ------------------------------------------------------------------------


DEAD = {"signal_type": "SAVE", "cqrs_id": "test_author", "instance_pk": 1, "previous_data": None,
        "instance_data": {"id": 1, "name": "dead", "cqrs_revision": 3, "cqrs_updated": "2025-01-02T03:04:05+00:00"},
        "correlation_id": None, "retries": 5, "expires": "2025-01-03T03:04:05+00:00", "meta": None}


@dataclass
class DeadLetters:
    channel: Any
    queue: str

    async def count(self, name: str) -> int:
        declared = await self.channel.declare_queue(name, durable=True, passive=True)
        return int(declared.declaration_result.message_count or 0)

    async def take(self, name: str) -> list[Any]:
        queue = await self.channel.declare_queue(name, durable=True, passive=True)
        got = []
        while (message := await queue.get(no_ack=True, fail=False)) is not None:
            got.append(message)
        return got


@pytest.fixture
async def dead_letters() -> AsyncIterator[DeadLetters]:
    """A replica queue layout on RabbitMQ whose dead letter queue holds a payload and a non-payload."""
    import aio_pika

    url = require_rabbitmq()
    exchange, queue = unique("test.cqrs"), unique("replica")
    connection = await aio_pika.connect(url, timeout=10)
    channel = await connection.channel()
    await channel.declare_exchange(exchange, "topic", durable=True)
    await channel.declare_queue(queue, durable=True)
    await channel.declare_queue(f"dead_letter_{queue}", durable=True)
    for body in (json.dumps(DEAD).encode(), b"not json"):
        await channel.default_exchange.publish(aio_pika.Message(body), f"dead_letter_{queue}")
    try:
        with override_settings(AMQP_URL=url, CQRS_EXCHANGE=exchange, CQRS_QUEUE=queue):
            yield DeadLetters(channel, queue)
    finally:
        for name in (queue, f"dead_letter_{queue}"):
            await channel.queue_delete(name)
        await channel.exchange_delete(exchange)
        await connection.close()


async def dead_letters_command(action: str) -> str:
    out, _ = await asyncio.wait_for(asyncio.to_thread(run, "cqrs_dead_letters", action), 30)
    return out


async def test_dead_letters_dump_prints_and_keeps_them(dead_letters: DeadLetters) -> None:
    """dump prints each dead letter's body and leaves it in dead_letter_<queue>."""
    out = await dead_letters_command("dump")
    assert out.splitlines() == [json.dumps(DEAD), "not json"]
    assert await dead_letters.count(f"dead_letter_{dead_letters.queue}") == 2


async def test_dead_letters_retry_requeues_payloads(dead_letters: DeadLetters) -> None:
    """retry republishes a payload to cqrs.<queue>.<cqrs_id> with retries 0 and a new expiry."""
    out = await dead_letters_command("retry")
    lines = out.splitlines()
    assert lines[:2] == ["Total dead letters: 2", "Retrying: 1/2"] and lines[3] == "Retrying: 2/2"
    [message] = await dead_letters.take(dead_letters.queue)
    body = json.loads(message.body)
    assert message.routing_key == f"cqrs.{dead_letters.queue}.test_author" and json.loads(lines[2]) == body
    assert body["retries"] == 0 and body["expires"] > DEAD["expires"]
    assert {**body, "retries": 5, "expires": DEAD["expires"]} == DEAD
    assert [m.body for m in await dead_letters.take(f"dead_letter_{dead_letters.queue}")] == [b"not json"]


async def test_dead_letters_purge_empties_the_queue(dead_letters: DeadLetters) -> None:
    """purge removes every dead letter."""
    assert await dead_letters_command("purge") == "Total dead letters: 2\nPurged\n"
    assert await dead_letters.count(f"dead_letter_{dead_letters.queue}") == 0


def test_dead_letters_need_rabbitmq() -> None:
    """Without AMQP_URL and CQRS_QUEUE the command refuses; without an action argparse does."""
    with override_settings(AMQP_URL=None, CQRS_QUEUE=None), pytest.raises(CommandError, match="need AMQP_URL"):
        run("cqrs_dead_letters", "purge")
    with pytest.raises(CommandError, match="required: command"):
        run("cqrs_dead_letters")


# --- CQRS_DEAD_LETTER_QUEUE (django-cqrs's CQRS['replica']['dead_letter_queue']) -------------------------


def test_bindings_use_the_configured_dead_letter_queue(settings: Any) -> None:
    """A configured dead letter queue is bound to ``cqrs.<its name>.<cqrs_id>``, as django-cqrs binds it."""
    settings.CQRS_DEAD_LETTER_QUEUE = "shared_dead"
    assert bindings("svc", {"test_author"}) == [("svc", "test_author"), ("svc", "cqrs.svc.test_author"),
                                                 ("shared_dead", "cqrs.shared_dead.test_author")]


async def test_dead_letters_retry_reads_the_configured_queue(dead_letters: DeadLetters) -> None:
    """With CQRS_DEAD_LETTER_QUEUE, retry takes the dead letters from that queue."""
    import aio_pika

    name = unique("shared_dead")
    await dead_letters.channel.declare_queue(name, durable=True)
    try:
        await dead_letters.channel.default_exchange.publish(aio_pika.Message(json.dumps(DEAD).encode()), name)
        with override_settings(CQRS_DEAD_LETTER_QUEUE=name):
            out = await dead_letters_command("retry")
        assert out.startswith("Total dead letters: 1\n")
        [message] = await dead_letters.take(dead_letters.queue)
        assert json.loads(message.body)["instance_data"] == DEAD["instance_data"]
        assert await dead_letters.count(name) == 0
        assert await dead_letters.count(f"dead_letter_{dead_letters.queue}") == 2  # the fixture's, untouched
    finally:
        await dead_letters.channel.queue_delete(name)


async def test_consumer_dead_letters_to_the_configured_queue(dead_letters: DeadLetters) -> None:
    """The consumer sends what it gives up on to CQRS_DEAD_LETTER_QUEUE, not dead_letter_<queue>."""
    import aio_pika

    name = unique("shared_dead")
    proc = ConsumerProcess(os.environ["DATABASE_URL"], {
        "AMQP_URL": settings.AMQP_URL, "CQRS_EXCHANGE": settings.CQRS_EXCHANGE, "CQRS_QUEUE": dead_letters.queue,
        "CQRS_DEAD_LETTER_QUEUE": name})
    proc.start()
    try:
        exchange = await dead_letters.channel.get_exchange(settings.CQRS_EXCHANGE)
        await exchange.publish(aio_pika.Message(b"{not json"), "test_author")
        got: list[bytes] = []
        async with asyncio.timeout(30):
            while not got:
                got = [message.body for message in await dead_letters.take(name)]
                if not got:
                    await asyncio.sleep(0.05)  # bounded-poll
        assert got == [b"{not json"]
        assert await dead_letters.count(f"dead_letter_{dead_letters.queue}") == 2  # the fixture's, untouched
    finally:
        proc.stop()
        await dead_letters.channel.queue_delete(name)


def test_dead_letters_of_a_topic_source_are_named() -> None:
    """A replica reading a topic is told where its dead letters are: the server's dead letter topic."""
    with override_settings(CQRS_SOURCE="topic", CQRS_TOPIC="cqrs", CQRS_QUEUE="shop"), \
            pytest.raises(CommandError, match="cqrs-shop-DLQ"):
        run("cqrs_dead_letters", "dump")
