"""Replica-side CQRS test helpers: payloads as a django-cqrs master writes them, the replica's rows,
and a replica layout of the test's own on a real RabbitMQ (``open_broker``)."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import random
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from app.cqrs.payload import SignalType, TransportPayload
from tests.apps.cqrs_replica.models import Author, HookCall
from tests.protocol import unique
from tests.services import drop_cqrs_layout, require_rabbitmq

_ids = itertools.count(random.randrange(10**8, 2 * 10**9, 10**6))
UPDATED = "2025-01-02T03:04:05+00:00"


def new_pk() -> int:
    """A primary key no other test (nor an earlier run on a kept database) uses."""
    return next(_ids)


def payload(cqrs_id: str, pk: int, revision: int, signal: str = "SAVE", **data: Any) -> TransportPayload:
    return TransportPayload(
        signal_type=SignalType(signal), cqrs_id=cqrs_id, instance_pk=pk,
        instance_data={"id": pk, "cqrs_revision": revision, "cqrs_updated": UPDATED, **data},
    )


def wire(cqrs_id: str, pk: int, revision: int, signal: str = "SAVE", **data: Any) -> dict[str, Any]:
    """The dict a django-cqrs master puts on the wire (``TransportPayload.to_dict``)."""
    return {
        "signal_type": signal, "cqrs_id": cqrs_id, "instance_pk": pk, "previous_data": None,
        "instance_data": {"id": pk, "cqrs_revision": revision, "cqrs_updated": UPDATED, **data},
        "correlation_id": None, "retries": 0, "expires": None, "meta": None,
    }


def author(pk: int) -> tuple[str, int] | None:
    row = Author.objects.filter(pk=pk).first()
    return None if row is None else (row.name, row.cqrs_revision)


def hook_calls(key: str) -> list[tuple[str, int]]:
    return list(HookCall.objects.filter(key=key).order_by("id").values_list("signal", "revision"))


@dataclass
class Broker:
    url: str
    exchange: str
    queue: str
    channel: Any = None

    @property
    def env(self) -> dict[str, str]:
        return {"AMQP_URL": self.url, "CQRS_EXCHANGE": self.exchange, "CQRS_QUEUE": self.queue,
                "CQRS_RETRY_DELAY_S": "0.05", "CQRS_MAX_RETRIES": "2"}

    async def publish(self, body: dict[str, Any] | bytes, routing_key: str) -> None:
        """Publish as a django-cqrs master does, once the consumer's binding routes it."""
        import aio_pika

        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        exchange = await self.channel.get_exchange(self.exchange)
        message = aio_pika.Message(raw, content_type="text/plain", delivery_mode=aio_pika.DeliveryMode.PERSISTENT)
        async with asyncio.timeout(30):
            while True:
                try:
                    await exchange.publish(message, routing_key, mandatory=True)
                    return
                except aio_pika.exceptions.PublishError:  # not bound yet (a server's consumer starting)
                    await asyncio.sleep(0.05)  # bounded-poll

    async def dead_letters(self, count: int) -> list[Any]:
        """The first ``count`` messages of dead_letter_<queue>."""
        queue = await self.channel.declare_queue(f"dead_letter_{self.queue}", durable=True)
        got: list[Any] = []
        async with asyncio.timeout(30):
            while len(got) < count:
                message = await queue.get(no_ack=True, fail=False)
                if message is None:
                    await asyncio.sleep(0.05)  # bounded-poll
                else:
                    got.append(message)
        return got


@contextlib.asynccontextmanager
async def open_broker(prefix: str = "replica") -> AsyncIterator[Broker]:
    """An exchange of the test's own, and the replica queues the consumer declares deleted afterwards."""
    import aio_pika

    url = require_rabbitmq()
    box = Broker(url, unique(f"test.cqrs.{prefix}"), unique(prefix))
    connection = await aio_pika.connect(url, timeout=10)
    box.channel = await connection.channel(on_return_raises=True)
    await box.channel.declare_exchange(box.exchange, "topic", durable=True)
    try:
        yield box
    finally:
        await connection.close()
        await drop_cqrs_layout(url, box.queue, box.exchange)
