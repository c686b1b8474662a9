"""The CQRS replica consumer this service's settings ask for: ``CQRS_SOURCE``, which settings/cqrs.py
derived and checked (exactly one configured): the topic source (relays/cqrs_topic_consumer.py) or
RabbitMQ (relays/cqrs_consumer.py)."""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import Protocol

from django.conf import settings

from relays.cqrs_consumer import CqrsConsumer
from relays.cqrs_topic_consumer import TopicConsumer


class ReplicaConsumer(Protocol):
    async def run(self) -> None: ...


def replica_consumer(queue: str | None = None, cqrs_ids: Collection[str] | None = None,
                     on_ready: Callable[[], None] | None = None) -> ReplicaConsumer:
    """``queue``: the RabbitMQ queue, or the topic subscription (default ``CQRS_QUEUE``); ``cqrs_ids``
    narrow RabbitMQ's bindings (a topic subscription has none)."""
    if settings.CQRS_SOURCE == "topic":
        if cqrs_ids:
            raise ValueError("a topic subscription has no bindings to narrow to CQRS_IDs")
        return TopicConsumer(subscription=queue, on_ready=on_ready)
    return CqrsConsumer(queue=queue, cqrs_ids=cqrs_ids, on_ready=on_ready)


async def cqrs_consumer_loop() -> None:
    """The server's replica consumer (``CQRS_QUEUE`` set and ``CQRS_CONSUME_IN_SERVER``)."""
    await replica_consumer().run()
