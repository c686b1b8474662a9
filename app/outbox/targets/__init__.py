"""Where the outbox publishes: one module per target behind this small interface.

A target raises ``TargetUnavailable`` when it cannot reach its service (the event goes back to the
queue; no attempt is counted, an outage dead-letters nothing), ``PublishRejected`` when the
service refused this event (counts an attempt; the last one dead-letters it) and ``PublishDeferred``
when the service could not take this event for now (it is tried again after a back-off; no attempt
is counted, the connection is kept for the other events).
"""

from __future__ import annotations

from typing import Protocol

from app.outbox.cloudevents import Outbound


class TargetUnavailable(Exception):
    """The service cannot be reached; try the event again later."""


class PublishRejected(Exception):
    """The service refused this event."""


class PublishDeferred(Exception):
    """The service could not take this event for now (e.g. a RabbitMQ nack)."""


class Target(Protocol):
    """Also optional: ``bounds_publish = True`` on a target whose ``publish`` raises TimeoutError
    by itself after ``OUTBOX_PUBLISH_TIMEOUT_S`` (the dispatcher then runs no timer of its own)."""

    name: str

    async def connect(self) -> None:
        """Open connections; raises TargetUnavailable."""

    async def publish(self, event: Outbound) -> None:
        """Return once the service has taken responsibility for the event (confirmed)."""

    async def close(self) -> None:
        """Release connections; never raises."""


def make_target(name: str) -> Target:
    # Imported here so a deployment without RabbitMQ never imports aio-pika.
    if name == "rabbitmq":
        from app.outbox.targets.rabbitmq import RabbitMQTarget

        return RabbitMQTarget()
    if name == "redis":
        from app.outbox.targets.redis_streams import RedisStreamsTarget

        return RedisStreamsTarget()
    if name == "topic":
        from app.outbox.targets.topics import TopicTarget

        return TopicTarget()
    raise ValueError(f"unknown outbox target {name!r}")
