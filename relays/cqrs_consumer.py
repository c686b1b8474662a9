"""The CQRS replica consumer loop: RabbitMQ in django-cqrs's layout, through aio-pika (the replica's
one module that imports it; the outbox's is app/outbox/targets/rabbitmq.py).

Layout, as django-cqrs 3.x declares it: the durable topic exchange ``CQRS_EXCHANGE``; the durable
queue ``CQRS_QUEUE`` bound to each replica ``cqrs_id`` and to ``cqrs.<queue>.<cqrs_id>`` (direct
SYNCs and retries); the durable queue ``dead_letter_<queue>`` bound to
``cqrs.dead_letter_<queue>.<cqrs_id>``.

Messages are taken one at a time, in queue order, with manual acks: a message is acked only once
its transaction has committed (app/cqrs/apply.py decides), so a consumer killed mid-stream loses
nothing and what it redelivers is a duplicate revision, a no-op. A failed apply keeps its message
unacked and tries it again here after the delay, with ``retries`` + 1, until it is applied or
dead-lettered (django-cqrs republishes it to the end of the queue, where newer changes of its
instance overtake it); meanwhile later messages of the same instance are held behind it
(app/cqrs/ordering.py) and other instances go on. Dead letters go to ``dead_letter_<queue>``, with
the ``CQRS_DEAD_MESSAGE_TTL_S`` expiration, and the original is acked. An unavailable database
(a PostgreSQL restart) stops the consumer on the message at hand, which is tried again with
back-off: no retry is counted. A lost connection is reopened with back-off.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Collection

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractExchange, AbstractIncomingMessage
from django.conf import settings
from django.db import close_old_connections

from app.cqrs import apply as cqrs
from app.cqrs.apply import Verdict
from app.cqrs.ordering import InstanceOrder, Key, instance_key
from relays.database_thread import DatabaseThread
from relays.periodic import backoff_s

logger = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 10.0
RECONNECT_BASE_S = 1.0


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
        self.retrying: set[asyncio.Task[None]] = set()
        self.order: InstanceOrder[AbstractIncomingMessage] = InstanceOrder()
        self._db = DatabaseThread("cqrs-consumer")

    async def run(self) -> None:
        """Consume until cancelled; never returns."""
        if not self.queue_name or not self.url:
            raise RuntimeError("the CQRS consumer needs CQRS_QUEUE and AMQP_URL")
        failures = 0
        try:
            while True:
                try:
                    await self._session()
                    failures = 0  # the connection ended after working: reconnect at once
                    logger.warning("CQRS consumer: the RabbitMQ channel closed, reconnecting")
                except asyncio.CancelledError:
                    raise
                except (OSError, TimeoutError, aio_pika.exceptions.AMQPError) as exc:
                    failures += 1
                    logger.warning("CQRS consumer: RabbitMQ unavailable (%d in a row): %r", failures, exc)
                except Exception:
                    failures += 1
                    logger.exception("CQRS consumer failed (%d in a row)", failures)
                await asyncio.sleep(backoff_s(RECONNECT_BASE_S, failures))
        finally:
            await self._db.close()

    async def _session(self) -> None:
        """One connection: declare the layout, consume until the channel closes."""
        connection = await aio_pika.connect(self.url, timeout=CONNECT_TIMEOUT_S)
        try:
            channel = await connection.channel(publisher_confirms=True)
            await channel.set_qos(prefetch_count=settings.CQRS_PREFETCH_COUNT)
            exchange = await declare(channel, self.queue_name, self.cqrs_ids)
            queue = await channel.get_queue(self.queue_name, ensure=False)
            async with queue.iterator() as messages:
                if self.on_ready is not None:
                    self.on_ready()
                    self.on_ready = None
                async for message in messages:
                    await self._handle(channel, exchange, message)
        finally:
            await self._close(connection)

    async def _handle(
        self, channel: AbstractChannel, exchange: AbstractExchange, message: AbstractIncomingMessage
    ) -> None:
        # Parsed on the database thread, as the message itself is: a large body would stall the loop.
        key = await self._db.call(instance_key, message.body)
        if self.order.busy(key):
            assert key is not None
            self.order.hold(key, message)
            return
        verdict = await self._decide(message.body, message.routing_key or "")
        if verdict.action == "retry":
            self.order.block(key)
            task = asyncio.create_task(self._settle_in_order(channel, key, message, verdict))
            self.retrying.add(task)
            task.add_done_callback(self.retrying.discard)
        else:
            await self._settle(channel, message, verdict)

    async def _decide(self, body: bytes, routing_key: str) -> Verdict:
        """``receive`` on the database thread; while the database is unavailable the same message
        is tried again with back-off (unacked: an outage of any length loses and dead-letters
        nothing; a longer one than RabbitMQ's ack timeout redelivers it with a new channel)."""
        failures = 0
        while True:
            try:
                return await self._db.call(_fresh_receive, body, routing_key, self.queue_name)
            except cqrs.DatabaseUnavailable as exc:
                failures += 1
                logger.warning("CQRS consumer: the database is unavailable (%d in a row): %s", failures, exc)
                await asyncio.sleep(backoff_s(RECONNECT_BASE_S, failures))

    async def _settle_in_order(
        self, channel: AbstractChannel, key: Key | None, message: AbstractIncomingMessage, verdict: Verdict
    ) -> None:
        """Retry ``message`` (unacked meanwhile, so a crash loses nothing) until it is applied or
        dead-lettered, then handle the messages of its instance held behind it, in order."""
        current: AbstractIncomingMessage | None = message
        try:
            while current is not None:
                while verdict.action == "retry":
                    assert verdict.payload is not None
                    await asyncio.sleep(verdict.delay_s)
                    verdict = await self._decide(cqrs.wire(verdict.payload), current.routing_key or "")
                await self._settle(channel, current, verdict)
                current = self.order.next(key)
                if current is not None:
                    verdict = await self._decide(current.body, current.routing_key or "")
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            # Back to the queue, the unsettled message first, so RabbitMQ redelivers them in order.
            logger.warning("CQRS consumer: could not settle a retried message, requeued: %r", exc)
            for unsettled in ([current] if current is not None else []) + self.order.abandon(key):
                with contextlib.suppress(Exception):
                    await unsettled.nack(requeue=True)

    async def _settle(
        self, channel: AbstractChannel, message: AbstractIncomingMessage, verdict: Verdict
    ) -> None:
        if verdict.action == "ack":
            await message.ack()
            return
        # Straight to the queue through the default exchange: a body with no valid cqrs_id has
        # no binding, and a payload lands in the same queue django-cqrs's binding would take it to.
        body = message.body if verdict.payload is None else cqrs.wire(verdict.payload)
        ttl = settings.CQRS_DEAD_MESSAGE_TTL_S
        await channel.default_exchange.publish(
            _message(body, expiration=ttl if ttl > 0 else None), cqrs.dead_letter_queue(self.queue_name)
        )
        await message.ack()

    async def _close(self, connection: AbstractConnection) -> None:
        for task in list(self.retrying):
            task.cancel()
        if self.retrying:
            await asyncio.wait(self.retrying)
        self.order = InstanceOrder()  # the held deliveries come back with the next channel
        with contextlib.suppress(Exception):
            await asyncio.wait_for(asyncio.shield(connection.close()), CONNECT_TIMEOUT_S)


def _fresh_receive(body: bytes, routing_key: str, queue: str) -> Verdict:
    # As django-cqrs before each message: drop a connection the database closed (a restart).
    close_old_connections()
    return cqrs.receive(body, routing_key, queue)


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


def _message(body: bytes, expiration: int | None = None) -> aio_pika.Message:
    # As django-cqrs publishes: persistent, content type text/plain, expiration in milliseconds.
    return aio_pika.Message(
        body, content_type="text/plain", delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        expiration=expiration,
    )


async def cqrs_consumer_loop(**options: object) -> None:
    await CqrsConsumer(**options).run()  # type: ignore[arg-type]


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
            await exchange.publish(_message(again[1]), again[0])
            write(again[1].decode())
            await message.ack()
        for message in held:  # back to the queue, in order, once all were read
            await message.nack(requeue=True)
    finally:
        await connection.close()
