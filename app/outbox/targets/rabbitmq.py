"""RabbitMQ through aio-pika (the one module that imports it): publisher confirms, persistent
messages, and the CloudEvents AMQP binding (binary mode by default, structured as an option).

Binary mode: each attribute is an application property (a RabbitMQ header) named
``cloudEvents:<name>``, ``datacontenttype`` is the AMQP content-type and ``data`` is the body.
Routing key: the event's destination, else its type. Unroutable events are returned by
RabbitMQ (``mandatory``) and refused here, instead of being confirmed and silently dropped.

CQRS payloads (data content type ``app.cqrs.events.CONTENT_TYPE``) are published as django-cqrs's
``RabbitMQTransport`` does, so an unmodified django-cqrs replica consumes them: the payload JSON as
the body (``text/plain``), persistent, on the durable topic exchange ``CQRS_EXCHANGE`` (declared on
the first one), routing key the payload's ``cqrs_id`` (or the event's destination: a SYNC for one
replica queue), no CloudEvents headers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import aio_pika
import aiormq
from aio_pika.abc import AbstractChannel, AbstractExchange, AbstractRobustConnection
from aio_pika.exceptions import DeliveryError, PublishError
from aiormq.abc import AbstractChannel as Underlay
from django.conf import settings

from app import codec
from app.cqrs.events import CONTENT_TYPE as CQRS_CONTENT_TYPE
from app.outbox.cloudevents import Outbound
from app.outbox.targets import PublishDeferred, PublishRejected, TargetUnavailable

logger = logging.getLogger(__name__)

PREFIX = "cloudEvents:"
STRUCTURED_TYPE = "application/cloudevents+json"
CONNECT_TIMEOUT_S = 10.0
PERSISTENT = aio_pika.DeliveryMode.PERSISTENT.value


async def ping(url: str, timeout_s: float) -> None:
    """Connect to ``url`` and close again (``/readyz``); raises when RabbitMQ cannot be reached."""
    connection = await aio_pika.connect(url, timeout=timeout_s)
    await connection.close()


def amqp_message(event: Outbound, mode: str) -> tuple[bytes, aiormq.spec.Basic.Properties]:
    """The event's body and AMQP properties. Built as aiormq's frame properties directly (what
    ``aio_pika.Message`` turns into): per event, the Message object cost as much as the encoding."""
    content_type: str | None
    headers: dict[str, Any] | None
    if mode == "structured":
        body, content_type, headers = event.structured(), STRUCTURED_TYPE, None
    else:
        attributes: dict[str, str | None] = {**event.string_attributes()}
        content_type = attributes.pop("datacontenttype", None)
        headers = {f"{PREFIX}{name}": value for name, value in attributes.items()}
        body = event.data or b""
    return body, aiormq.spec.Basic.Properties(
        content_type=content_type, delivery_mode=PERSISTENT, headers=headers, message_id=event.id,
        timestamp=event.time, message_type=event.type, priority=0,
    )


def django_cqrs_message(body: bytes, *, expiration_s: int | None = None, message_id: str | None = None
                        ) -> aio_pika.Message:
    """A CQRS payload as django-cqrs's ``RabbitMQTransport`` publishes it: persistent, ``text/plain``,
    and an expiration when given (its dead letters). The one builder of the master (here) and of the
    replica consumer's dead letters and of ``cqrs_dead_letters retry`` (relays/cqrs_consumer.py)."""
    return aio_pika.Message(
        body, content_type="text/plain", delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        expiration=expiration_s, message_id=message_id,
    )


def cqrs_message(event: Outbound) -> tuple[aio_pika.Message, str]:
    """The django-cqrs message and its routing key."""
    body = event.data or b""
    try:
        routing_key = event.destination or str(codec.loads(body)["cqrs_id"])
    except (codec.DecodeError, KeyError, TypeError) as exc:
        raise PublishRejected(f"not a CQRS payload (no cqrs_id): {exc!r}") from exc
    return django_cqrs_message(body, message_id=event.id), routing_key


class RabbitMQTarget:
    name = "rabbitmq"
    bounds_publish = True

    def __init__(self, url: str | None = None, exchange: str | None = None, mode: str | None = None) -> None:
        self.url = url or settings.AMQP_URL
        self.exchange_name = exchange if exchange is not None else settings.OUTBOX_AMQP_EXCHANGE
        self.mode = mode or settings.OUTBOX_AMQP_MODE
        self.mandatory = settings.OUTBOX_AMQP_MANDATORY
        self.timeout_s = settings.OUTBOX_PUBLISH_TIMEOUT_S
        self._connection: AbstractRobustConnection | None = None
        self._channel: AbstractChannel | None = None
        self._underlay: Underlay | None = None
        self._exchange: AbstractExchange | None = None
        self._cqrs_exchange: AbstractExchange | None = None

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
                underlay = await channel.get_underlay_channel()
        except (TimeoutError, OSError, aio_pika.exceptions.AMQPError) as exc:
            if connection is not None:  # half open (e.g. the exchange exists with another type)
                with contextlib.suppress(Exception):
                    await connection.close()
            raise TargetUnavailable(f"RabbitMQ: {exc!r}") from exc
        self._connection, self._channel, self._exchange = connection, channel, exchange  # type: ignore[assignment]
        self._underlay = underlay

    async def publish(self, event: Outbound) -> None:
        channel, underlay = self._channel, self._underlay
        if self._exchange is None or channel is None or underlay is None or channel.is_closed:
            raise TargetUnavailable("RabbitMQ channel is not open")
        try:
            if event.datacontenttype == CQRS_CONTENT_TYPE:
                exchange = self._cqrs_exchange or await self._declare_cqrs_exchange(channel)
                message, routing_key = cqrs_message(event)
                body, properties = message.body, message.properties
                # As django-cqrs: a cqrs_id no replica has bound yet is dropped, not returned
                # (returned, it would fail and block the instance's later changes); a replica that
                # binds later catches up through cqrs_sync.
                mandatory = False
            else:
                exchange, routing_key, mandatory = self._exchange, "", self.mandatory
                body, properties = amqp_message(event, self.mode)
            # aiormq's publish under aio-pika's exchange (what Exchange.publish calls): a nack
            # raises DeliveryError, a return PublishError, no confirmation in time TimeoutError.
            await underlay.basic_publish(
                body, exchange=exchange.name, routing_key=routing_key or event.destination or event.type,
                properties=properties, mandatory=mandatory, timeout=self.timeout_s,
            )
        except PublishError as exc:
            raise PublishRejected(f"RabbitMQ returned the event (unroutable): {exc!r}") from exc
        except DeliveryError as exc:
            # A nack is RabbitMQ's trouble (a full queue with reject-publish, no quorum leader),
            # not the event's: try it again later without counting an attempt. The channel stays
            # open: the events published beside it on it are confirmed on their own.
            raise PublishDeferred(f"RabbitMQ nacked the event: {exc!r}") from exc
        except TimeoutError as exc:
            raise TargetUnavailable(f"RabbitMQ: no confirmation in {self.timeout_s}s") from exc
        except (OSError, aio_pika.exceptions.AMQPError, RuntimeError) as exc:
            raise TargetUnavailable(f"RabbitMQ: {exc!r}") from exc

    async def _declare_cqrs_exchange(self, channel: AbstractChannel) -> AbstractExchange:
        # django-cqrs's exchange: durable, topic (replicas bind their queues by cqrs_id).
        self._cqrs_exchange = await channel.declare_exchange(settings.CQRS_EXCHANGE, "topic", durable=True)
        return self._cqrs_exchange

    async def close(self) -> None:
        connection, self._connection, self._channel, self._exchange = self._connection, None, None, None
        self._underlay = None
        self._cqrs_exchange = None
        if connection is not None:
            try:
                await asyncio.wait_for(connection.close(), CONNECT_TIMEOUT_S)
            except Exception:
                logger.debug("closing the RabbitMQ connection failed", exc_info=True)
