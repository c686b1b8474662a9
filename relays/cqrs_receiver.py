"""The half of the CQRS replica consumer that does not depend on where payloads come from, shared by
its RabbitMQ source (relays/cqrs_consumer.py) and its topic source (relays/cqrs_topic_consumer.py).

A source hands each delivery, in arrival order, to ``CqrsReceiver.take`` together with its session's
``Settler``: how to ack a delivery, dead-letter it, or give deliveries back on that connection.
Decisions are app/cqrs/apply.py's ``receive`` (run on the receiver's own database thread); here is
only what happens around them:

- a failed apply keeps its delivery unacked and is tried again in place after the verdict's delay,
  with ``retries`` + 1, until it is applied or dead-lettered (a crash meanwhile loses nothing);
- while it waits, later deliveries of the same instance are held behind it (app/cqrs/ordering.py)
  and handled in order once it is settled; other instances go on. Dead-lettering is settling too,
  and may take a while (the topic source's last negative ack): it runs in a task of its own, the
  instance held meanwhile, so that the source goes on reading;
- an unavailable database (a PostgreSQL restart) is no failure of the payload: the delivery at hand
  is tried again with back-off, no retry counted, nothing dead-lettered;
- should settling a retried delivery fail (its connection is gone), it and those held behind it are
  given back to the source, in order.

``reconnecting`` is the sources' outer loop: a session per connection, reopened with back-off.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Generic, NoReturn, Protocol, TypeVar

from django.conf import settings
from django.db import close_old_connections

from app.cqrs import apply as cqrs
from app.cqrs.apply import Verdict
from app.cqrs.ordering import InstanceOrder, Key, instance_key
from relays.database_thread import DatabaseThread
from relays.periodic import backoff_s

logger = logging.getLogger(__name__)

class Delivery(Protocol):
    """What a source received: a payload's JSON body, and its routing key where the transport has one."""

    @property
    def body(self) -> bytes: ...

    @property
    def routing_key(self) -> str | None: ...


D = TypeVar("D", bound=Delivery)
D_contra = TypeVar("D_contra", bound=Delivery, contravariant=True)


class Settler(Protocol[D_contra]):
    """A source's session: settles its deliveries on the connection they came with."""

    async def ack(self, delivery: D_contra) -> None: ...

    async def dead_letter(self, delivery: D_contra, verdict: Verdict) -> None:
        """Returns once the delivery is gone for good (the later ones of its instance wait until then)."""

    async def give_back(self, deliveries: Sequence[D_contra]) -> None:
        """Return unsettled deliveries to the broker (best effort), so they come again in order."""


class CqrsReceiver(Generic[D]):
    def __init__(self, name: str, queue: str) -> None:
        self.queue = queue  # the replica's queue or subscription: a SYNC routed to it alone is direct
        self.order: InstanceOrder[D] = InstanceOrder()
        self.retrying: set[asyncio.Task[None]] = set()
        self._db = DatabaseThread(name)

    async def take(self, delivery: D, settler: Settler[D]) -> None:
        """Handle one delivery (the next in arrival order): applied and acked, or held behind its
        instance's retry or dead letter, or retried or dead-lettered by a task of the receiver's own."""
        # Parsed on the database thread, as the message itself is: a large body would stall the loop.
        key = await self._db.call(instance_key, delivery.body)
        if self.order.busy(key):
            assert key is not None
            self.order.hold(key, delivery)
            return
        verdict = await self._decide(delivery.body, delivery.routing_key or "")
        if verdict.action != "ack":
            self.order.block(key)
            task = asyncio.create_task(self._settle_in_order(settler, key, delivery, verdict))
            self.retrying.add(task)
            task.add_done_callback(self.retrying.discard)
        else:
            await settle(settler, delivery, verdict)

    async def _decide(self, body: bytes, routing_key: str) -> Verdict:
        """``receive`` on the database thread; while the database is unavailable the same body is
        tried again with back-off (unacked: an outage of any length loses and dead-letters nothing)."""
        failures = 0
        while True:
            try:
                return await self._db.call(_fresh_receive, body, routing_key, self.queue)
            except cqrs.DatabaseUnavailable as exc:
                failures += 1
                logger.warning("CQRS consumer: the database is unavailable (%d in a row): %s", failures, exc)
                await asyncio.sleep(backoff_s(settings.CQRS_RECONNECT_BASE_S, failures))

    async def _settle_in_order(self, settler: Settler[D], key: Key | None, delivery: D, verdict: Verdict) -> None:
        """Retry ``delivery`` (unacked meanwhile, so a crash loses nothing) until it is applied or
        dead-lettered, then handle the deliveries of its instance held behind it, in order."""
        current: D | None = delivery
        try:
            while current is not None:
                while verdict.action == "retry":
                    assert verdict.payload is not None
                    await asyncio.sleep(verdict.delay_s)
                    verdict = await self._decide(cqrs.wire(verdict.payload), current.routing_key or "")
                await settle(settler, current, verdict)
                current = self.order.next(key)
                if current is not None:
                    verdict = await self._decide(current.body, current.routing_key or "")
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            logger.warning("CQRS consumer: could not settle a retried message, given back: %r", exc)
            with contextlib.suppress(Exception):
                await settler.give_back(([current] if current is not None else []) + self.order.abandon(key))

    async def end_session(self) -> None:
        """The source's connection is over: retries and unfinished dead letters stop (their deliveries
        come back with the next connection, the held ones behind them)."""
        for task in list(self.retrying):
            task.cancel()
        if self.retrying:
            await asyncio.wait(self.retrying)
        self.order = InstanceOrder()

    async def close(self) -> None:
        await self._db.close()


async def settle(settler: Settler[D], delivery: D, verdict: Verdict) -> None:
    if verdict.action == "ack":
        await settler.ack(delivery)
    else:
        await settler.dead_letter(delivery, verdict)


def _fresh_receive(body: bytes, routing_key: str, queue: str) -> Verdict:
    # As django-cqrs before each message: drop a connection the database closed (a restart).
    close_old_connections()
    return cqrs.receive(body, routing_key, queue)


@dataclass(frozen=True, slots=True)
class Ended:
    """How a session that worked ended: why (logged), and whether it received anything."""

    reason: str
    received: bool


@dataclass(frozen=True, slots=True)
class Unavailable:
    """What a failure of the transport means (the broker is away, refused us, closed on us)."""

    reason: str
    level: int = logging.WARNING


async def reconnecting(session: Callable[[], Awaitable[Ended]],
                       unavailable: Callable[[BaseException], Unavailable | None]) -> NoReturn:
    """Run ``session`` again and again until cancelled, with back-off. A session that returns worked
    and ended (its connection closed): why is logged as a WARNING. ``unavailable`` says what a failure
    of the transport means; other exceptions are logged with their traceback. The back-off starts
    again from the shortest only after a session that received something or lasted
    ``CQRS_RECONNECT_STABLE_S``: one closed at once (an evicted consumer, a server shutting down)
    counts as a failure, else it would reconnect every second with a WARNING each time."""
    failures = 0
    while True:
        started = time.monotonic()
        try:
            ended = await session()
            stable = ended.received or time.monotonic() - started >= settings.CQRS_RECONNECT_STABLE_S
            failures = 0 if stable else failures + 1
            logger.warning("CQRS consumer: %s, reconnecting%s", ended.reason,
                           "" if stable else f" ({failures} in a row)")
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if time.monotonic() - started >= settings.CQRS_RECONNECT_STABLE_S:
                failures = 0
            failures += 1
            trouble = unavailable(exc)
            if trouble is None:
                logger.exception("CQRS consumer failed (%d in a row)", failures)
            else:
                logger.log(trouble.level, "CQRS consumer: %s (%d in a row)", trouble.reason, failures)
        await asyncio.sleep(backoff_s(settings.CQRS_RECONNECT_BASE_S, failures))
