"""The CQRS replica consumer's RabbitMQ source, in django-cqrs's layout, through aio-pika (the
replica's one module that imports it; the outbox's is app/outbox/targets/rabbitmq.py). The other
source, a Switchyard topic, is relays/cqrs_topic_consumer.py; what both share (retries in place,
per-instance order, database outages) is relays/cqrs_receiver.py.

Layout, as django-cqrs 3.x declares it: the durable topic exchange ``CQRS_EXCHANGE``; the durable
queue ``CQRS_QUEUE`` bound to each replica ``cqrs_id`` and to ``cqrs.<queue>.<cqrs_id>`` (direct
SYNCs and retries); the durable queue ``dead_letter_<queue>`` bound to
``cqrs.dead_letter_<queue>.<cqrs_id>``.

Messages are taken one at a time, in queue order, with manual acks: a message is acked only once
its transaction has committed, so a consumer killed mid-stream loses nothing and what it redelivers
is a duplicate revision, a no-op. A failed apply is retried in place (django-cqrs republishes it to
the end of the queue, where newer changes of its instance overtake it). Dead letters go to
``dead_letter_<queue>``, with the ``CQRS_DEAD_MESSAGE_TTL_S`` expiration, and the original is acked;
deliveries that could not be settled are nacked with requeue, in order. A lost connection is
reopened with back-off.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Collection, Sequence

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractExchange, AbstractIncomingMessage
from django.conf import settings

from app.cqrs import apply as cqrs
from app.cqrs.apply import Verdict
from app.outbox.targets.rabbitmq import django_cqrs_message
from relays.cqrs_receiver import CqrsReceiver, Ended, Unavailable, reconnecting

logger = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 10.0


class CqrsConsumer:
    def __init__(
        self,
        queue: str | None = None,
        cqrs_ids: Collection[str] | None = None,
        url: str | None = None,
        on_ready: Callable[[], None] | None = None,
    ) -> None:
        self.queue_name = queue or settings.CQRS_QUEUE or ""
        self.cqrs_ids = frozenset(cqrs_ids or ())
        self.url = url or settings.AMQP_URL or ""
        self.on_ready = on_ready
        self.receiver: CqrsReceiver[AbstractIncomingMessage] = CqrsReceiver("cqrs-consumer", self.queue_name)

    async def run(self) -> None:
        """Consume until cancelled; never returns."""
        if not self.queue_name or not self.url:
            raise RuntimeError("the CQRS consumer needs CQRS_QUEUE and AMQP_URL")
        try:
            await reconnecting(self._session, _unavailable)
        finally:
            await self.receiver.close()

    async def _session(self) -> Ended:
        """One connection: declare the layout, consume until the channel closes."""
        received = False
        connection = await aio_pika.connect(self.url, timeout=CONNECT_TIMEOUT_S)
        try:
            channel = await connection.channel(publisher_confirms=True)
            await channel.set_qos(prefetch_count=settings.CQRS_PREFETCH_COUNT)
            await declare(channel, self.queue_name, self.cqrs_ids)
            queue = await channel.get_queue(self.queue_name, ensure=False)
            settler = _Settler(channel, self.queue_name)
            async with queue.iterator() as messages:
                if self.on_ready is not None:
                    self.on_ready()
                    self.on_ready = None
                async for message in messages:
                    received = True
                    await self.receiver.take(message, settler)
        finally:
            await self.receiver.end_session()  # the held deliveries come back with the next channel
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(connection.close()), CONNECT_TIMEOUT_S)
        return Ended("the RabbitMQ channel closed", received)


def _unavailable(error: BaseException) -> Unavailable | None:
    # ChannelInvalidStateError is no AMQPError: it is what an ack raises when the broker shut the
    # channel under it (a RabbitMQ restart), an outage like the others (faults/outbox_rows.py).
    if isinstance(error, (OSError, TimeoutError, aio_pika.exceptions.AMQPError,
                          aio_pika.exceptions.ChannelInvalidStateError)):
        return Unavailable(f"RabbitMQ unavailable: {error!r}")
    return None


class _Settler:
    """Settles on one channel: dead letters go straight to ``dead_letter_<queue>`` through the
    default exchange (a body with no valid cqrs_id has no binding, and a payload lands in the same
    queue django-cqrs's binding would take it to), then the original is acked."""

    def __init__(self, channel: AbstractChannel, queue: str) -> None:
        self.channel = channel
        self.queue = queue

    async def ack(self, delivery: AbstractIncomingMessage) -> None:
        await delivery.ack()

    async def dead_letter(self, delivery: AbstractIncomingMessage, verdict: Verdict) -> None:
        body = delivery.body if verdict.payload is None else cqrs.wire(verdict.payload)
        ttl = settings.CQRS_DEAD_MESSAGE_TTL_S
        await self.channel.default_exchange.publish(
            django_cqrs_message(body, expiration_s=ttl if ttl > 0 else None), cqrs.dead_letter_queue(self.queue)
        )
        await delivery.ack()

    async def give_back(self, deliveries: Sequence[AbstractIncomingMessage]) -> None:
        # Back to the queue, the unsettled one first, so RabbitMQ redelivers them in order.
        for delivery in deliveries:
            with contextlib.suppress(Exception):
                await delivery.nack(requeue=True)


async def declare(channel: AbstractChannel, queue_name: str, cqrs_ids: Collection[str]) -> AbstractExchange:
    """django-cqrs's layout for a replica queue: the exchange, the queue, its dead letter queue and
    their bindings (the consumer and ``dead_letters`` both declare it before they act)."""
    exchange = await channel.declare_exchange(settings.CQRS_EXCHANGE, "topic", durable=True)
    await channel.declare_queue(queue_name, durable=True)
    await channel.declare_queue(cqrs.dead_letter_queue(queue_name), durable=True)
    for bound, routing_key in cqrs.bindings(queue_name, cqrs_ids):
        queue = await channel.get_queue(bound, ensure=False)
        await queue.bind(exchange, routing_key)
    return exchange


# --- cqrs_dead_letters: the dead letter queue by hand (django-cqrs's command) ----------------------


async def dead_letters(action: str, write: Callable[[str], None], queue: str | None = None,
                       url: str | None = None) -> None:
    """``retry`` (republish each to the replica's queue, app/cqrs/dead_letters.py), ``dump`` (print
    each body, leave them queued) or ``purge`` the messages of ``dead_letter_<queue>``, with
    django-cqrs's output. The layout is declared first, as the consumer declares it."""
    from django.utils import timezone

    from app.cqrs.dead_letters import revived

    consumer = CqrsConsumer(queue=queue, url=url)
    if not consumer.queue_name or not consumer.url:
        raise RuntimeError("the CQRS dead letters need CQRS_QUEUE and AMQP_URL")
    connection = await aio_pika.connect(consumer.url, timeout=CONNECT_TIMEOUT_S)
    try:
        channel = await connection.channel(publisher_confirms=True)
        exchange = await declare(channel, consumer.queue_name, consumer.cqrs_ids)
        dead = await channel.declare_queue(cqrs.dead_letter_queue(consumer.queue_name), durable=True)
        count = dead.declaration_result.message_count or 0
        if action == "purge":
            write(f"Total dead letters: {count}")
            if count:
                await dead.purge()
                write("Purged")
            return
        if action == "retry":
            write(f"Total dead letters: {count}")
        held: list[AbstractIncomingMessage] = []
        for number in range(1, count + 1):
            message = await dead.get(no_ack=False, fail=False, timeout=CONNECT_TIMEOUT_S)
            if message is None:
                break
            if action == "dump":
                write(message.body.decode("utf-8", "replace"))
                held.append(message)
                continue
            write(f"Retrying: {number}/{count}")
            again = revived(message.body, consumer.queue_name, timezone.now())
            if again is None:
                write(f"Not a CQRS payload, left in the queue: {message.body[:200]!r}")
                held.append(message)
                continue
            await exchange.publish(django_cqrs_message(again[1]), again[0])
            write(again[1].decode())
            await message.ack()
        for message in held:  # back to the queue, in order, once all were read
            await message.nack(requeue=True)
    finally:
        await connection.close()
