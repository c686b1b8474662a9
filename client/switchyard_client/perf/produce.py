"""``perf produce``: messages at a target rate through producers on one or more topics; latency is
send -> ack (the broker stored the message under the topic's policy, or relayed it).

Each message carries ``perf_sent_ns`` (``time.time_ns()`` when it was sent, as text: Pulsar's
properties are strings), from which ``perf consume`` on the same machine measures end-to-end latency.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from typing import Any

from switchyard_client import ClientClosed, ConnectionRefused, Producer, SendError, SendTimeout
from switchyard_client.perf import outcome
from switchyard_client.perf.rate import Countdown, RateLimiter
from switchyard_client.perf.report import Side
from switchyard_client.perf.runner import Session
from switchyard_client.perf.tally import Tally

SENT_NS = "perf_sent_ns"
# The last pending sends get this long once a run was interrupted (otherwise: the send timeout).
INTERRUPTED_DRAIN_S = 1.0


class Sender:
    """Sends ``size``-byte messages through ``producers`` at ``rate`` messages a second in all (0: as
    fast as ``max_pending`` unacked messages per producer allow), ``count`` in all (0: no limit),
    until stopped. Each producer paces its share of the rate on the same schedule."""

    def __init__(self, producers: list[Producer], tally: Tally, *, size: int, rate: float, count: int,
                 max_pending: int, properties: dict[str, str] | None = None) -> None:
        self.tally = tally
        self.finished = asyncio.Event()
        self._producers = producers
        self._payload = os.urandom(size)
        self._rate = rate
        self._countdown = Countdown(count)
        self._max_pending = max_pending
        self._properties = properties or {}
        self._in_flight: set[asyncio.Task[None]] = set()
        self._dead: set[int] = set()
        self._issuing: asyncio.Task[Any] | None = None

    def start(self) -> None:
        self._issuing = asyncio.create_task(self._run())

    async def stop(self, drain_s: float) -> int:
        """Send no more; wait up to ``drain_s`` for the pending acks. Returns how many sends were
        still pending then (abandoned)."""
        if self._issuing is not None:
            self._issuing.cancel()
            await asyncio.gather(self._issuing, return_exceptions=True)
        if self._in_flight:
            await asyncio.wait(set(self._in_flight), timeout=drain_s)
        pending = set(self._in_flight)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        return len(pending)

    async def _run(self) -> None:
        start = asyncio.get_running_loop().time()
        share = self._rate / len(self._producers)
        try:
            await asyncio.gather(*(self._issue(index, RateLimiter(share, start))
                                   for index in range(len(self._producers))))
        finally:
            self.finished.set()

    async def _issue(self, index: int, limiter: RateLimiter) -> None:
        loop = asyncio.get_running_loop()
        producer = self._producers[index]
        slots = asyncio.Semaphore(self._max_pending)
        while index not in self._dead and self._countdown.take():
            delay = limiter.reserve(loop.time()) - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            await slots.acquire()
            if index in self._dead:
                break
            self.tally.attempted += 1
            task = asyncio.create_task(self._send(index, producer, slots))
            self._in_flight.add(task)
            task.add_done_callback(self._in_flight.discard)

    async def _send(self, index: int, producer: Producer, slots: asyncio.Semaphore) -> None:
        started = time.monotonic_ns()
        try:
            await producer.send(self._payload, properties={SENT_NS: str(time.time_ns()), **self._properties})
        except (SendError, SendTimeout) as error:
            self.tally.error(outcome.kind_of(error))
        except (ConnectionRefused, ClientClosed) as error:
            # The producer ended for good (its topic was deleted, its right revoked): it sends no more.
            self.tally.error(outcome.kind_of(error))
            self._dead.add(index)
        else:
            done = time.monotonic_ns()
            self.tally.done(len(self._payload), (done - started) // 1000, done / 1e9)
        finally:
            slots.release()


def describe_load(args: argparse.Namespace, topics: list[str], producers: int) -> str:
    rate = "as fast as possible" if args.rate == 0 else f"{args.rate:,g} msg/s"
    limits = [f"{args.duration:g} s"] if args.duration else []
    if args.count:
        limits.append(f"{args.count:,} messages")
    return (f"{_topics(topics)} x {producers} producer{'s' if producers != 1 else ''}, {rate}, "
            f"{args.size:,} B messages, for {' or '.join(limits)}")


def drain_s(session: Session) -> float:
    return INTERRUPTED_DRAIN_S if session.interrupted else session.args.send_timeout + 1.0


def _topics(topics: list[str]) -> str:
    return topics[0] if len(topics) == 1 else f"{len(topics)} topics ({topics[0]} ...)"


async def run(args: argparse.Namespace, topics: list[str]) -> int:
    config = {"topics": topics, "producers_per_topic": args.producers, "rate": args.rate, "size": args.size,
              "duration_s": args.duration, "count": args.count, "max_pending": args.max_pending,
              "send_timeout_s": args.send_timeout}
    session = Session("produce", args, config)
    sender: Sender | None = None
    unsettled = 0

    async def body() -> None:
        nonlocal sender, unsettled
        async with session.client() as client:
            producers = [await client.producer(topic) for topic in topics for _ in range(args.producers)]
            tally = Tally(session.now())
            sender = Sender(producers, tally, size=args.size, rate=args.rate, count=args.count,
                            max_pending=args.max_pending)
            session.begin(f"perf produce: {describe_load(args, topics, len(producers))}",
                          [Side("produced", "send -> ack", tally)])
            sender.start()
            await session.wait(args.duration or None, sender.finished)
            unsettled = await sender.stop(drain_s(session))

    error = await session.execute(body)
    if sender is None:
        return session.failed(error)
    title = f"perf produce: {describe_load(args, topics, args.producers * len(topics))}"
    return session.finish(title, delivered=sender.tally.messages, unsettled=unsettled)
