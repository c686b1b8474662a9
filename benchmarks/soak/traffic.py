"""The soak's broker traffic: producers -> consumers on storing topics, request/reply through a response
topic, and connection churn. Each runs at a fixed offered rate until the run's end, keeping cumulative
counts that the sampler (benchmarks/soak/run.py) reads every interval.

The clients are the benchmarks' own: throughput.py's Producer and Consumer (every delivery acked, sequence
numbers to find losses), request_reply.py's responder and reply collector.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

from websockets.exceptions import ConnectionClosed

from benchmarks import wire
from benchmarks.outbox import until as until_true
from benchmarks.request_reply import REPLY_TIMEOUT_S, AckCounter, collect_replies, respond
from benchmarks.throughput import Consumer, Producer, _drain, _wait_acks, _warm_up

WARMUP_TIMEOUT_S = 15.0
# A sender this far behind its schedule (a stall) starts a new one instead of bursting to catch up:
# the offered rate stays moderate, and the shortfall shows in the figures.
MAX_LAG_S = 1.0


class Errors:
    """Errors by kind, cumulative, and the first message of each kind."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.first: dict[str, str] = {}

    def add(self, kind: str, detail: str, count: int = 1) -> None:
        self.counts[kind] += count
        self.first.setdefault(kind, detail[:300])

    @property
    def total(self) -> int:
        return sum(self.counts.values())


async def paced(per_s: float, until: float, send: Callable[[int], Awaitable[None]], in_flight: int = 1) -> int:
    """Call ``send(n)`` ``per_s`` times a second until ``until`` (``time.monotonic()``), up to ``in_flight``
    calls at once (1: each waits for the one before); how many were started. More than one keeps the
    offered rate when each call takes longer than its share of a second."""
    start, n, shift = time.monotonic(), 0, 0
    slots = asyncio.Semaphore(in_flight)
    running: set[asyncio.Task[None]] = set()

    async def one(k: int) -> None:
        try:
            await send(k)
        finally:
            slots.release()

    while time.monotonic() < until:
        await slots.acquire()
        if in_flight == 1:
            await one(n)
        else:
            task = asyncio.create_task(one(n))
            running.add(task)
            task.add_done_callback(running.discard)
        n += 1
        delay = start + (n - shift) / per_s - time.monotonic()
        if delay < -MAX_LAG_S:
            start, shift = time.monotonic(), n
        elif delay > 0:
            await asyncio.sleep(delay)
    await asyncio.gather(*running)
    return n


class Stream:
    """One producer -> ``consumers`` consumers (subscriptions of their own) on one storing topic."""

    def __init__(self, base: str, topic: str, consumers: int, per_s: float, capacity: int, errors: Errors) -> None:
        self.base, self.topic, self.per_s, self.errors = base, topic, per_s, errors
        self.wanted, self.capacity = consumers, capacity
        self.run = uuid.uuid4().hex[:12]
        self.payload = wire.payload_of(256)
        self.consumers: list[Consumer] = []
        self.tasks: list[asyncio.Task[None]] = []

    async def open(self) -> None:
        for i in range(self.wanted):
            ws = await wire.open_socket(wire.consumer_url(self.base, self.topic, f"soak-{self.run}-{i}"))
            self.consumers.append(Consumer(ws, self.run, self.capacity))
        self.producer = Producer(await wire.open_socket(wire.producer_url(self.base, self.topic)), window=100)
        self.tasks = [asyncio.create_task(c.read()) for c in self.consumers]
        self.tasks.append(asyncio.create_task(self.producer.read_acks()))
        if not await _warm_up(self.producer, self.consumers, self.run, self.payload,
                              time.monotonic() + WARMUP_TIMEOUT_S):
            raise RuntimeError(f"{self.topic}: consumers got no warm-up message")

    async def drive(self, until: float) -> None:
        producer, now = self.producer, time.perf_counter

        async def send(seq: int) -> None:
            await producer.slots.acquire()
            frame = {"payload": self.payload, "properties": {"run": self.run, "seq": seq, "t": now()},
                     "context": seq}
            await producer.ws.send(wire.dumps(frame), text=True)
            producer.sent += 1

        try:
            # Every message needs a place in the consumers' fixed-size record of what they saw.
            await paced(self.per_s, until, lambda seq: send(seq) if seq < self.capacity else asyncio.sleep(1))
        except ConnectionClosed as exc:
            self.errors.add("stream closed", f"{self.topic} producer: {exc}")
        producer.done_sending = True
        if producer.acks >= producer.sent:
            producer.all_acked.set()

    @property
    def delivered(self) -> int:
        return sum(c.delivered for c in self.consumers)

    async def finish(self, until: float) -> dict[str, int]:
        """Wait for the last acks and deliveries (bounded); the stream's losses and what it saw go wrong."""
        await _wait_acks(self.producer, until)
        await _drain(self.consumers, self.producer, until)
        ok = self.producer.acked_ok
        lost = sum(1 for c in self.consumers for seq in ok if not c.seen[seq])
        if self.producer.errors:
            self.errors.add("ack error", str(self.producer.first_error), self.producer.errors)
        closed = [c.closed for c in self.consumers if c.closed] + ([self.producer.closed] if self.producer.closed
                                                                   else [])
        if closed:
            self.errors.add("stream closed", f"{self.topic}: close codes {closed}", len(closed))
        return {"sent": self.producer.sent, "acked_ok": len(ok), "lost": lost,
                "duplicates": sum(c.duplicates for c in self.consumers)}

    async def close(self) -> None:
        await _cancel(self.tasks)
        await asyncio.gather(*(c.ws.close() for c in self.consumers), self.producer.ws.close(),
                             return_exceptions=True)


class RequestReply:
    """DASF-style calls one at a time: a request on ``topic`` naming a response topic, the backend module's
    answer on it (request_reply.py's responder and collector); round trips timed."""

    def __init__(self, base: str, topic: str, per_s: float, errors: Errors) -> None:
        self.base, self.topic, self.per_s, self.errors = base, topic, per_s, errors
        self.run = uuid.uuid4().hex[:12]
        self.response_topic = wire.response_topic_for(topic)
        self.payload = wire.payload_of(256)
        self.rtts: list[float] = []  # seconds, in the order they completed
        self.timeouts = 0
        self.sent = 0
        self.waiting: dict[Any, asyncio.Future[float]] = {}
        self.seen: set[Any] = set()
        self.answered: set[Any] = set()
        self.counts = {"foreign": 0, "unexpected": 0}

    async def open(self) -> None:
        self.backend_in = await wire.open_socket(wire.consumer_url(self.base, self.topic, f"backend-{self.run}"))
        self.inbox = await wire.open_socket(wire.consumer_url(self.base, self.response_topic, f"caller-{self.run}"))
        self.requests = await wire.open_socket(wire.producer_url(self.base, self.topic))
        self.backend_out = await wire.open_socket(wire.producer_url(self.base, self.response_topic))
        self.request_acks, self.answer_acks = AckCounter(self.requests), AckCounter(self.backend_out)
        self.tasks = [
            asyncio.create_task(respond(self.backend_in, self.backend_out, self.run, self.seen)),
            asyncio.create_task(collect_replies(self.inbox, self.run, self.waiting, self.answered, self.counts)),
            asyncio.create_task(self.request_acks.read()),
            asyncio.create_task(self.answer_acks.read()),
        ]
        # The first call creates the response topic and attaches the waiting caller's socket.
        deadline = time.monotonic() + WARMUP_TIMEOUT_S
        n = 0
        while await self.call(f"warmup-{n}", 0.5) is None:
            n += 1
            if time.monotonic() > deadline:
                raise RuntimeError("request/reply: no answer to warm-up requests")

    async def call(self, context: Any, timeout_s: float) -> float | None:
        future: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        self.waiting[context] = future
        frame = {"payload": self.payload, "context": context,
                 "properties": {"run": self.run, "response_topic": self.response_topic, "requestContext": context,
                                "messageType": "request"}}
        t0 = time.perf_counter()
        await self.requests.send(wire.dumps(frame), text=True)
        try:
            return await asyncio.wait_for(future, timeout_s) - t0
        except TimeoutError:
            self.waiting.pop(context, None)
            return None

    async def drive(self, until: float) -> None:
        async def one(n: int) -> None:
            self.sent += 1
            rtt = await self.call(n, REPLY_TIMEOUT_S)
            if rtt is None:
                self.timeouts += 1
                self.errors.add("reply timeout", f"request {n}: no answer within {REPLY_TIMEOUT_S} s")
            else:
                self.rtts.append(rtt)

        try:
            await paced(self.per_s, until, one)
        except ConnectionClosed as exc:
            self.errors.add("request/reply closed", str(exc))

    def missing(self) -> int:
        """Requests acked "ok" that the backend never got, and answers acked "ok" the caller never got."""
        requests = {c for c in self.request_acks.ok if isinstance(c, int)} - self.seen
        answers = {int(c) for c in self.answer_acks.ok if isinstance(c, str) and c.isdigit()} - self.answered
        return len(requests) + len(answers)

    async def finish(self, until: float) -> dict[str, int]:
        await until_true(lambda: not self.missing(), until - time.monotonic())
        for acks in (self.request_acks, self.answer_acks):
            if acks.errors:
                self.errors.add("ack error", str(acks.first_error), acks.errors)
        return {"sent": self.sent, "answered": len(self.rtts), "timeouts": self.timeouts, "lost": self.missing(),
                "unexpected": self.counts["unexpected"]}

    async def close(self) -> None:
        await _cancel(self.tasks)
        await asyncio.gather(*(ws.close() for ws in (self.backend_in, self.inbox, self.requests, self.backend_out)),
                             return_exceptions=True)


class Churn:
    """Connections that each do one thing and go: a producer socket opens, publishes one message, reads
    its ack and closes (closing handshake)."""

    def __init__(self, base: str, topic: str, per_s: float, errors: Errors) -> None:
        self.base, self.topic, self.per_s, self.errors = base, topic, per_s, errors
        self.done = 0

    async def one(self, n: int) -> None:
        try:
            ws = await wire.open_socket(wire.producer_url(self.base, self.topic))
            try:
                await ws.send(wire.dumps({"payload": "Y2h1cm4=", "context": n}), text=True)
                ack = wire.loads(await asyncio.wait_for(ws.recv(decode=False), REPLY_TIMEOUT_S))
            finally:
                await ws.close()
        except Exception as exc:  # refused, reset, timed out: an error of the soak, not of the harness
            self.errors.add("churn failure", f"{type(exc).__name__}: {exc}")
            return
        if wire.is_ok(ack):
            self.done += 1
        else:
            self.errors.add("churn ack error", str(ack.get("result")))

    async def drive(self, until: float) -> None:
        await paced(self.per_s, until, self.one, in_flight=4)


async def _cancel(tasks: list[asyncio.Task[None]]) -> None:
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
