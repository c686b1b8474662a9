"""RabbitMQ through aio-pika (the one module that imports it): publisher confirms, persistent
messages, and the CloudEvents AMQP binding (binary mode by default, structured as an option).

Binary mode: each attribute is an application property (a RabbitMQ header) named
``cloudEvents:<name>``, ``datacontenttype`` is the AMQP content-type and ``data`` is the body.
Routing key: the event's destination, else its type. Unroutable events are returned by
RabbitMQ (``mandatory``) and refused here, instead of being confirmed and silently dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractExchange, AbstractRobustConnection
from aio_pika.exceptions import DeliveryError, PublishError
from django.conf import settings

from app.outbox.cloudevents import Outbound
from app.outbox.targets import PublishRejected, TargetUnavailable

logger = logging.getLogger(__name__)

PREFIX = "cloudEvents:"
STRUCTURED_TYPE = "application/cloudevents+json"
CONNECT_TIMEOUT_S = 10.0


async def ping(url: str, timeout_s: float) -> None:
    """Connect to ``url`` and close again (``/readyz``); raises when RabbitMQ cannot be reached."""
    connection = await aio_pika.connect(url, timeout=timeout_s)
    await connection.close()


def amqp_message(event: Outbound, mode: str) -> aio_pika.Message:
    common = {
        "delivery_mode": aio_pika.DeliveryMode.PERSISTENT,
        "message_id": event.id,
        "timestamp": event.time,
        "type": event.type,
    }
    if mode == "structured":
        return aio_pika.Message(event.structured(), content_type=STRUCTURED_TYPE, **common)  # type: ignore[arg-type]
    attributes = event.string_attributes()
    content_type = attributes.pop("datacontenttype", None)
    headers = {f"{PREFIX}{name}": value for name, value in attributes.items()}
    return aio_pika.Message(
        event.data or b"", headers=headers, content_type=content_type, **common  # type: ignore[arg-type]
    )


class RabbitMQTarget:
    name = "rabbitmq"

    def __init__(self, url: str | None = None, exchange: str | None = None, mode: str | None = None) -> None:
        self.url = url or settings.AMQP_URL
        self.exchange_name = exchange if exchange is not None else settings.OUTBOX_AMQP_EXCHANGE
        self.mode = mode or settings.OUTBOX_AMQP_MODE
        self._connection: AbstractRobustConnection | None = None
        self._channel: AbstractChannel | None = None
        self._exchange: AbstractExchange | None = None

    async def connect(self) -> None:
        if not self.url:
            raise TargetUnavailable("AMQP_URL is not set")
        connection = None
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT_S):
                # A plain connection: the relay decides when to reconnect and what to resend.
                connection = await aio_pika.connect(self.url, timeout=CONNECT_TIMEOUT_S)
                channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
                exchange = (
                    await channel.declare_exchange(
                        self.exchange_name, settings.OUTBOX_AMQP_EXCHANGE_TYPE, durable=True
                    )
                    if self.exchange_name
                    else channel.default_exchange
                )
        except (TimeoutError, OSError, aio_pika.exceptions.AMQPError) as exc:
            if connection is not None:  # half open (e.g. the exchange exists with another type)
                with contextlib.suppress(Exception):
                    await connection.close()
            raise TargetUnavailable(f"RabbitMQ: {exc!r}") from exc
        self._connection, self._channel, self._exchange = connection, channel, exchange  # type: ignore[assignment]

    async def publish(self, event: Outbound) -> None:
        if self._exchange is None or self._channel is None or self._channel.is_closed:
            raise TargetUnavailable("RabbitMQ channel is not open")
        message = amqp_message(event, self.mode)
        try:
            await self._exchange.publish(
                message, event.destination or event.type, mandatory=settings.OUTBOX_AMQP_MANDATORY,
                timeout=settings.OUTBOX_PUBLISH_TIMEOUT_S,
            )
        except PublishError as exc:
            raise PublishRejected(f"RabbitMQ returned the event (unroutable): {exc!r}") from exc
        except DeliveryError as exc:
            # A nack is RabbitMQ's trouble (a full queue with reject-publish, no quorum leader),
            # not the event's: try again later without counting an attempt.
            raise TargetUnavailable(f"RabbitMQ nacked the event: {exc!r}") from exc
        except (TimeoutError, OSError, aio_pika.exceptions.AMQPError, RuntimeError) as exc:
            raise TargetUnavailable(f"RabbitMQ: {exc!r}") from exc

    async def close(self) -> None:
        connection, self._connection, self._channel, self._exchange = self._connection, None, None, None
        if connection is not None:
            try:
                await asyncio.wait_for(connection.close(), CONNECT_TIMEOUT_S)
            except Exception:
                logger.debug("closing the RabbitMQ connection failed", exc_info=True)
