"""``perf consume``: consumers of one subscription per topic, every message acked; rate, throughput and,
for messages that carry ``perf_sent_ns`` (``perf produce`` on the same machine, or any producer that
sets it to ``time.time_ns()``), end-to-end latency from send to receipt."""

from __future__ import annotations

import argparse
import asyncio
import time

from switchyard_client import ClientClosed, ConnectionRefused, Consumer, Message
from switchyard_client.perf import outcome
from switchyard_client.perf.produce import SENT_NS
from switchyard_client.perf.report import Side
from switchyard_client.perf.runner import Session
from switchyard_client.perf.tally import Tally


def latency_us(sent_ns: object, now_ns: int) -> int | None:
    """Microseconds from a ``perf_sent_ns`` property to ``now_ns``; None when it is no integer. A
    negative span (another machine's clock) is returned as is: the histogram counts it as saturated."""
    if not isinstance(sent_ns, str | int) or isinstance(sent_ns, bool):
        return None
    try:
        sent = int(sent_ns)
    except ValueError:
        return None
    return (now_ns - sent) // 1000


class Receiver:
    """Takes every message from ``consumers``, acks it and counts it, until stopped or ``count``
    messages (0: no limit) were received. With ``run`` set, only messages whose ``perf_run`` property
    is ``run`` count; one carrying ``perf_warmup`` sets ``warmed`` instead."""

    def __init__(self, consumers: list[Consumer], tally: Tally, *, count: int = 0, run: str | None = None) -> None:
        self.tally = tally
        self.finished = asyncio.Event()
        self.warmed = asyncio.Event()
        self.progress = asyncio.Event()
        self._consumers = consumers
        self._count = count
        self._run = run
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._take(consumer)) for consumer in self._consumers]

    async def stop(self) -> None:
        """Take no more messages; count the error frames the consumers got."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for consumer in self._consumers:
            for _ in consumer.errors:
                self.tally.error(outcome.SERVER_ERROR)

    async def _take(self, consumer: Consumer) -> None:
        try:
            while True:
                message = await consumer.receive()
                now_ns, now = time.time_ns(), time.monotonic()
                if self._count and self.tally.messages >= self._count:
                    # Left unacked: the subscription keeps it for its next consumer.
                    self.finished.set()
                    return
                await message.ack()
                self._count_one(message, now_ns, now)
        except ConnectionRefused as refused:
            self.tally.error(outcome.kind_of(refused))
        except ClientClosed:
            pass
        finally:
            if all(task.done() or task is asyncio.current_task() for task in self._tasks):
                self.finished.set()

    def _count_one(self, message: Message, now_ns: int, now: float) -> None:
        properties = message.properties
        if self._run is not None:
            if properties.get("perf_run") != self._run:
                return
            if "perf_warmup" in properties:
                self.warmed.set()
                return
        self.tally.done(len(message.data), latency_us(properties.get(SENT_NS), now_ns), now)
        self.progress.set()
        if self._count and self.tally.messages >= self._count:
            self.finished.set()


async def run(args: argparse.Namespace, topics: list[str]) -> int:
    config = {"topics": topics, "subscription": args.subscription, "consumers_per_topic": args.consumers,
              "subscription_type": args.type, "receiver_queue_size": args.receiver_queue_size,
              "duration_s": args.duration, "count": args.count, "unsubscribe": args.unsubscribe}
    session = Session("consume", args, config)
    receiver: Receiver | None = None

    async def body() -> None:
        nonlocal receiver
        async with session.client() as client:
            consumers = [client.subscribe(topic, args.subscription, type=args.type,
                                          receiver_queue_size=args.receiver_queue_size)
                         for topic in topics for _ in range(args.consumers)]
            for consumer in consumers:
                await consumer.start()
            receiver = Receiver(consumers, Tally(session.now(), from_first=True), count=args.count)
            session.begin(f"perf consume: {describe(args, topics, len(consumers))}",
                          [Side("consumed", "send -> receive", receiver.tally)])
            receiver.start()
            await session.wait(args.duration or None, receiver.finished)
            await receiver.stop()
            if args.unsubscribe:
                await _unsubscribe(consumers, args.consumers)

    error = await session.execute(body)
    if receiver is None:
        return session.failed(error)
    return session.finish(f"perf consume: {describe(args, topics, args.consumers * len(topics))}",
                          delivered=receiver.tally.messages)


async def _unsubscribe(consumers: list[Consumer], per_topic: int) -> None:
    """Delete each topic's subscription: the broker refuses while other consumers are attached, so
    all but one close first."""
    for first in range(0, len(consumers), per_topic):
        for other in consumers[first + 1:first + per_topic]:
            await other.close()
        await consumers[first].unsubscribe()


def describe(args: argparse.Namespace, topics: list[str], consumers: int) -> str:
    where = topics[0] if len(topics) == 1 else f"{len(topics)} topics ({topics[0]} ...)"
    limits = [f"{args.duration:g} s"] if args.duration else []
    if args.count:
        limits.append(f"{args.count:,} messages")
    return (f"{where}, subscription {args.subscription} ({args.type}) x {consumers} "
            f"consumer{'s' if consumers != 1 else ''}, for {' or '.join(limits)}")
