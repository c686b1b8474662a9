"""Relay processes: several share the work without publishing an event twice; a relay killed
mid-batch is taken over and nothing is lost."""

from __future__ import annotations

import json
import os
import uuid
from collections import Counter
from collections.abc import Iterator

import pytest
from django.db import transaction
from django.test import override_settings

from app.outbox.emit import emit
from app.outbox.models import OutboxEvent, Status
from tests.databases import BACKEND
from tests.outbox import AmqpInbox, clear_outbox, header
from tests.protocol import eventually
from tests.servers import RelayProcess
from tests.services import require_rabbitmq

pytestmark = pytest.mark.slow


@pytest.fixture
def relay_env(_db_access: None) -> Iterator[dict[str, str]]:
    """Environment for relay processes publishing to an exchange of the test's own."""
    url = require_rabbitmq()
    clear_outbox()
    with override_settings(AMQP_URL=url):  # lets this process emit events for RabbitMQ
        yield {"AMQP_URL": url, "OUTBOX_AMQP_EXCHANGE": f"test.relays.{uuid.uuid4().hex[:8]}",
               "OUTBOX_POLL_INTERVAL_S": "0.2"}


def _emit_all(count: int, keys: int, per_transaction: int = 50) -> None:
    for start in range(0, count, per_transaction):
        with transaction.atomic():
            for n in range(start, min(count, start + per_transaction)):
                emit("com.example.counted", "/tests/relays", n, key=f"key-{n % keys}", target="rabbitmq")


def _assert_in_order_per_key(messages: list[object], keys: int) -> None:
    for k in range(keys):
        firsts: list[int] = []
        for message in messages:
            n = json.loads(message.body)  # type: ignore[attr-defined]
            if header(message, "partitionkey") == f"key-{k}" and n not in firsts:
                firsts.append(n)
        assert firsts == sorted(firsts), f"key-{k} out of order"


@pytest.mark.skipif(BACKEND != "postgres", reason="relays share work through SKIP LOCKED: PostgreSQL pass only")
async def test_two_relay_processes_publish_each_event_once(relay_env: dict[str, str]) -> None:
    """Two relay processes on PostgreSQL publish 2,000 events exactly once between them."""
    relays = [RelayProcess(os.environ["DATABASE_URL"], {**relay_env, "OUTBOX_BATCH_SIZE": "20"}) for _ in range(2)]
    async with AmqpInbox(relay_env["AMQP_URL"], relay_env["OUTBOX_AMQP_EXCHANGE"]) as box:
        try:
            for relay in relays:
                relay.start()
            _emit_all(2000, keys=40)
            await eventually(
                lambda: OutboxEvent.objects.filter(status=Status.PUBLISHED).count() == 2000, 120, "all published"
            )
        finally:
            for relay in relays:
                relay.stop()
        messages = await box.drain()  # confirmed means enqueued: the queue holds all there is
    numbers = Counter(json.loads(m.body) for m in messages)
    assert set(numbers) == set(range(2000))
    assert max(numbers.values()) == 1, "an event was published twice"
    _assert_in_order_per_key(messages, keys=40)
    shares = Counter(
        holder.rsplit(":", 1)[0] for holder in OutboxEvent.objects.values_list("claimed_by", flat=True)
    )
    assert len(shares) == 2 and min(shares.values()) >= 200, f"load not shared: {shares}"


async def test_killed_relay_is_taken_over_without_loss(relay_env: dict[str, str]) -> None:
    """SIGKILL a relay mid-stream: another takes its claims over once they expire; all arrive."""
    env = {**relay_env, "OUTBOX_CLAIM_TTL_S": "2", "OUTBOX_BATCH_SIZE": "50"}
    async with AmqpInbox(relay_env["AMQP_URL"], relay_env["OUTBOX_AMQP_EXCHANGE"]) as box:
        first = RelayProcess(os.environ["DATABASE_URL"], env)
        second = RelayProcess(os.environ["DATABASE_URL"], env)
        try:
            first.start()
            _emit_all(1000, keys=10)
            await eventually(lambda: OutboxEvent.objects.filter(status=Status.PUBLISHED).count() >= 100, 60)
            first.kill()
            second.start()
            await eventually(
                lambda: OutboxEvent.objects.filter(status=Status.PUBLISHED).count() == 1000, 120, "all published"
            )
        finally:
            first.stop()
            second.stop()
        messages = await box.drain()
    numbers = Counter(json.loads(m.body) for m in messages)
    assert set(numbers) == set(range(1000)), "an event was lost"
    _assert_in_order_per_key(messages, keys=10)
    print(f"takeover: {sum(numbers.values()) - 1000} events published twice (at least once)")


@pytest.mark.skipif(BACKEND != "postgres", reason="LISTEN/NOTIFY is PostgreSQL's")
async def test_relay_process_is_woken_by_notify(relay_env: dict[str, str]) -> None:
    """A relay process polling once a minute publishes a committed event at once (NOTIFY)."""
    relay = RelayProcess(os.environ["DATABASE_URL"], {**relay_env, "OUTBOX_POLL_INTERVAL_S": "60"})
    async with AmqpInbox(relay_env["AMQP_URL"], relay_env["OUTBOX_AMQP_EXCHANGE"]) as box:
        await box.consume()
        relay.start()
        try:
            _emit_all(1, keys=1)
            await box.until(1, timeout_s=30)  # the relay is running; now it idles for a minute
            await eventually(lambda: OutboxEvent.objects.filter(status=Status.PUBLISHED).count() == 1)
            with transaction.atomic():
                emit("com.example.counted", "/tests/relays", 1, key="key-0", target="rabbitmq")
            messages = await box.until(2, timeout_s=10)
        finally:
            relay.stop()
    assert [json.loads(m.body) for m in messages] == [0, 1]
