"""Outbox to a real RabbitMQ: CloudEvents AMQP binding, confirms, outages and dead letters."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest
from django.db import transaction
from django.test import override_settings

from app.outbox.emit import emit
from app.outbox.models import OutboxEvent, Status
from tests.outbox import AmqpInbox, clear_outbox, fast_retries, header, running_relays
from tests.protocol import eventually
from tests.services import require_rabbitmq


@pytest.fixture
def amqp(_db_access: None) -> Iterator[str]:
    """A RabbitMQ URL, an empty outbox, and an exchange of the test's own as the relay's target."""
    url = require_rabbitmq()
    clear_outbox()
    with override_settings(
        AMQP_URL=url, OUTBOX_AMQP_EXCHANGE=f"test.outbox.{uuid.uuid4().hex[:8]}", OUTBOX_POLL_INTERVAL_S=0.2
    ):
        yield url


@pytest.fixture
async def inbox(amqp: str) -> AsyncIterator[AmqpInbox]:
    from django.conf import settings

    async with AmqpInbox(amqp, settings.OUTBOX_AMQP_EXCHANGE) as box:
        await box.consume()
        yield box


def _emit(type: str = "com.example.thing.created", **fields: object) -> OutboxEvent:
    fields.setdefault("target", "rabbitmq")
    return emit(type, "/tests/outbox", **fields)  # type: ignore[arg-type]


async def test_committed_event_arrives_with_binary_cloudevents_attributes(inbox: AmqpInbox) -> None:
    """A committed event arrives with its attributes as cloudEvents: application properties."""
    with transaction.atomic():
        row = _emit(data={"order": 7}, subject="order-7", key="orders", extensions={"tenant": "acme", "priority": 3})
    async with running_relays():
        [message] = await inbox.until(1)
    assert json.loads(message.body) == {"order": 7}
    assert message.content_type == "application/json"
    assert message.delivery_mode.value == 2  # persistent
    assert message.message_id == row.event_id
    assert message.routing_key == "com.example.thing.created"
    assert {name: header(message, name) for name in
            ("specversion", "id", "source", "type", "subject", "tenant", "priority", "partitionkey")} == {
        "specversion": "1.0", "id": row.event_id, "source": "/tests/outbox", "type": "com.example.thing.created",
        "subject": "order-7", "tenant": "acme", "priority": "3", "partitionkey": "orders",
    }
    assert header(message, "time").endswith("Z")


async def test_event_is_published_once(inbox: AmqpInbox) -> None:
    """An event arrives exactly once: a later event of its key arrives right after it."""
    first = _emit(key="k")
    marker = _emit(key="k", type="com.example.marker")
    async with running_relays():
        messages = await inbox.until(2)
        await eventually(lambda: OutboxEvent.objects.filter(status=Status.PUBLISHED).count() == 2)
    assert [m.message_id for m in messages] == [first.event_id, marker.event_id]


async def test_rolled_back_transaction_publishes_nothing(inbox: AmqpInbox) -> None:
    """Events of a rolled-back transaction are never published; the next committed one is."""
    with pytest.raises(RuntimeError), transaction.atomic():
        _emit(type="com.example.rolled.back", key="k")
        raise RuntimeError("roll back")
    committed = _emit(type="com.example.committed", key="k")
    async with running_relays():
        messages = await inbox.until(1)
        await eventually(lambda: OutboxEvent.objects.get(pk=committed.pk).status == Status.PUBLISHED)
    assert [m.type for m in messages] == ["com.example.committed"]
    assert OutboxEvent.objects.count() == 1


async def test_structured_mode_sends_the_event_as_json(inbox: AmqpInbox) -> None:
    """In structured mode the body is the application/cloudevents+json document."""
    with override_settings(OUTBOX_AMQP_MODE="structured"):
        row = _emit(data={"a": [1, 2]}, key="s")
        async with running_relays():
            [message] = await inbox.until(1)
    assert message.content_type == "application/cloudevents+json"
    document = json.loads(message.body)
    assert document["data"] == {"a": [1, 2]}
    assert (document["specversion"], document["id"], document["partitionkey"]) == ("1.0", row.event_id, "s")


async def test_binary_data_is_the_body_as_is(inbox: AmqpInbox) -> None:
    """Binary data is sent byte for byte with its content type."""
    _emit(data=b"\x00\xffpng", datacontenttype="image/png")
    async with running_relays():
        [message] = await inbox.until(1)
    assert (message.body, message.content_type) == (b"\x00\xffpng", "image/png")


async def test_poison_event_is_dead_lettered_while_other_keys_flow(amqp: str) -> None:
    """An unroutable event fails after OUTBOX_MAX_ATTEMPTS; its key waits, other keys flow."""
    from django.conf import settings

    async with AmqpInbox(amqp, settings.OUTBOX_AMQP_EXCHANGE, binding="ok.#") as box:
        await box.consume()
        with fast_retries():
            poison = _emit(type="nowhere.bound", key="poisoned")
            behind = _emit(type="ok.behind", key="poisoned")
            flowing = [_emit(type="ok.flowing", key=f"key-{i % 3}", data=i) for i in range(30)]
            async with running_relays():
                await box.until(30)
                await eventually(lambda: OutboxEvent.objects.get(pk=poison.pk).status == Status.FAILED, 30)
    poison.refresh_from_db()
    behind.refresh_from_db()
    assert poison.attempts == 3
    assert "unroutable" in poison.last_error
    assert behind.status == Status.PENDING
    assert sorted(json.loads(m.body) for m in box.messages) == list(range(30))
    assert OutboxEvent.objects.filter(pk__in=[e.pk for e in flowing], status=Status.PUBLISHED).count() == 30


async def test_nacked_event_in_a_pipeline_is_retried_alone_in_key_order(amqp: str) -> None:
    """Among pipelined publishes, a nacked event (a full reject-publish queue) goes back without an
    attempt and holds back only its key's later events; the other keys' events all arrive."""
    import aio_pika
    from django.conf import settings

    async with AmqpInbox(amqp, settings.OUTBOX_AMQP_EXCHANGE, binding="ok.#") as box:
        await box.consume()
        channel = await box.connection.channel()
        exchange = await channel.declare_exchange(settings.OUTBOX_AMQP_EXCHANGE, "topic", durable=True)
        full = await channel.declare_queue(
            exclusive=True, arguments={"x-max-length": 1, "x-overflow": "reject-publish"}
        )
        await full.bind(exchange, "limited.#")
        await exchange.publish(aio_pika.Message(b"filler"), "limited.filler")  # the queue is full
        with fast_retries():
            others = [_emit(type="ok.other", key=f"key-{i % 3}", data=i) for i in range(15)]
            nacked = _emit(type="limited.nacked", key="blocked")
            behind = _emit(type="ok.behind", key="blocked", data="behind")
            others += [_emit(type="ok.other", key=f"key-{i % 3}", data=i) for i in range(15, 30)]
            async with running_relays() as [relay]:
                await box.until(30)
                await eventually(lambda: "nacked" in OutboxEvent.objects.get(pk=nacked.pk).last_error, 30)
                assert relay.pool.down() == set(), "a nack must not take the target down"
                # Tried again and again while the queue is full (a retry, then claimed again), never
                # counting an attempt; the event behind it is not published meanwhile.
                nacked.refresh_from_db()
                behind.refresh_from_db()
                assert nacked.status in (Status.RETRY, Status.PROCESSING) and nacked.attempts == 0
                assert behind.status != Status.PUBLISHED
                await full.purge()  # room again: the retry goes out, then the event behind it
                await box.until(31)
                await eventually(lambda: OutboxEvent.objects.filter(status=Status.PUBLISHED).count() == 32, 30)
    nacked.refresh_from_db()
    behind.refresh_from_db()
    assert nacked.published_at <= behind.published_at and nacked.attempts == 0
    numbers = [json.loads(m.body) for m in box.messages if m.type == "ok.other"]
    assert sorted(numbers) == list(range(30))
    for k in range(3):
        assert [n for n in numbers if n % 3 == k] == list(range(k, 30, 3)), f"key-{k} out of order"


async def test_unreachable_rabbitmq_counts_no_attempt(inbox: AmqpInbox) -> None:
    """While the target cannot be reached, events wait as pending with the reason; none fails."""
    with override_settings(AMQP_URL="amqp://guest:guest@127.0.0.1:1/"):
        row = _emit(key="k")
        async with running_relays():
            await eventually(lambda: "RabbitMQ" in OutboxEvent.objects.get(pk=row.pk).last_error, 30)
    row.refresh_from_db()
    assert (row.status, row.attempts) == (Status.PENDING, 0)
    async with running_relays():  # reachable again: it goes out
        [message] = await inbox.until(1)
    assert message.message_id == row.event_id
