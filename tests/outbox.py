"""Helpers for outbox tests: a clean outbox table, events in a chosen state, keys with outbox permissions,
relays run as tasks, fast retry settings."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from django.test import override_settings

from app.outbox.emit import emit
from app.outbox.models import OutboxEvent, Status
from relays.outbox import OutboxRelay
from tests.protocol import key_with


def clear_outbox() -> None:
    """Tests share the session database and run one at a time: no other test's events may be
    claimed by this test's relays."""
    OutboxEvent.objects.all().delete()


def event(status: Status = Status.PENDING, **fields: Any) -> OutboxEvent:
    """An event emitted in this process, then put in ``status`` directly (no relay runs)."""
    fields.setdefault("type", "com.example.thing")
    fields.setdefault("source", "/tests/outbox-api")
    row = emit(fields.pop("type"), fields.pop("source"), fields.pop("data", {"n": 1}), target="topic", **fields)
    if status != Status.PENDING:
        attempts = 3 if status in (Status.FAILED, Status.RETRY) else 1
        OutboxEvent.objects.filter(pk=row.pk).update(status=status, attempts=attempts, last_error="refused")
    row.refresh_from_db()
    return row


def outbox_key(*codenames: str) -> str:
    """A token of a user granted these ``outbox`` model permissions and nothing else."""
    return key_with(*(f"outbox.{codename}" for codename in codenames))[1]


@contextlib.asynccontextmanager
async def running_relays(count: int = 1, **options: Any) -> AsyncIterator[list[OutboxRelay]]:
    """``count`` relays running as tasks for the block; cancelled and awaited after it."""
    relays = [OutboxRelay(name=f"test{index}", **options) for index in range(count)]
    tasks = [asyncio.create_task(relay.run()) for relay in relays]
    try:
        yield relays
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(task, 30)


def fast_retries(**extra: Any) -> override_settings:
    """Retry settings for tests: three attempts, back-off in tens of milliseconds."""
    return override_settings(
        OUTBOX_MAX_ATTEMPTS=3, OUTBOX_BACKOFF_BASE_S=0.02, OUTBOX_BACKOFF_MAX_S=0.1,
        OUTBOX_POLL_INTERVAL_S=0.2, **extra,
    )


class AmqpInbox:
    """A real aio-pika consumer on a queue bound to the relay's exchange: collects what arrives."""

    def __init__(
        self, url: str, exchange: str, binding: str = "#", queue: str = "", durable: bool = False,
        keep: bool = False,
    ) -> None:
        self.url, self.exchange_name, self.binding = url, exchange, binding
        self.queue_name, self.durable, self.keep = queue, durable, keep
        self.messages: list[Any] = []
        self._arrived = asyncio.Event()

    async def __aenter__(self) -> AmqpInbox:
        import aio_pika

        self.connection = await aio_pika.connect(self.url, timeout=10)
        channel = await self.connection.channel()
        exchange = await channel.declare_exchange(self.exchange_name, "topic", durable=True)
        self.queue = await channel.declare_queue(
            self.queue_name, durable=self.durable, exclusive=not self.durable, auto_delete=not self.durable
        )
        await self.queue.bind(exchange, self.binding)
        return self

    async def consume(self) -> None:
        async def on_message(message: Any) -> None:
            self.messages.append(message)
            self._arrived.set()
            await message.ack()

        await self.queue.consume(on_message)

    async def drain(self) -> list[Any]:
        """Everything in the queue now, by basic.get until it is empty (confirmed = enqueued)."""
        while (message := await self.queue.get(no_ack=True, fail=False, timeout=10)) is not None:
            self.messages.append(message)
        return self.messages

    async def until(self, count: int, timeout_s: float = 60.0) -> list[Any]:
        """The messages once at least ``count`` have arrived."""
        async with asyncio.timeout(timeout_s):
            while len(self.messages) < count:
                self._arrived.clear()
                await self._arrived.wait()
        return self.messages

    async def __aexit__(self, *exc: object) -> None:
        if self.durable and not self.keep:
            await self.queue.delete(if_unused=False, if_empty=False)
        await self.connection.close()


def header(message: Any, name: str) -> str:
    """A CloudEvents attribute of a binary-mode AMQP message."""
    value = message.headers[f"cloudEvents:{name}"]
    return value.decode() if isinstance(value, bytes) else str(value)
