"""W1 (1 producer -> 1 consumer) and W2 (1 -> N fan-out): pipelined publishing, every delivery acked.

The producer keeps up to ``window`` messages waiting for their ack. Each message carries its
sequence number and send time in ``properties``, so consumers measure end-to-end latency and
find lost or duplicated messages. Loss = messages acked "ok" to the producer that a consumer never
received, counted per consumer after a drain period.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from benchmarks import wire
from benchmarks.procstat import CpuMeter
from benchmarks.stats import latency_summary_ms, rate

WARMUP_TIMEOUT_S = 15.0
# After the last producer ack, consumers get this long without progress to receive the rest:
# longer than two of Switchyard's resync intervals (2 s), after which a stored message the fast
# path dropped is fetched from the database, so a repaired message is not counted as lost.
DRAIN_IDLE_S = 5.0


@dataclass
class Consumer:
    ws: ClientConnection
    run: str
    count: int
    seen: bytearray = field(init=False)
    delivered: int = 0
    duplicates: int = 0
    foreign: int = 0
    warmed: asyncio.Event = field(default_factory=asyncio.Event)
    latencies: list[float] = field(default_factory=list)
    last_delivery: float = 0.0
    closed: str | None = None

    def __post_init__(self) -> None:
        self.seen = bytearray(self.count)

    async def read(self) -> None:
        loads, ack_of, now = wire.loads, wire.ack_of, time.perf_counter
        ws, seen, run = self.ws, self.seen, self.run
        try:
            while True:
                frame = loads(await ws.recv(decode=False))
                message_id = frame.get("messageId")
                if message_id is not None:
                    # Ack first, as the DASF client does, so the broker's ack handling is measured.
                    await ws.send(ack_of(message_id), text=True)
                props = frame.get("properties") or {}
                if props.get("run") != run:
                    self.foreign += 1
                    continue
                seq = props.get("seq")
                if seq is None:
                    self.warmed.set()
                    continue
                if seen[seq]:
                    self.duplicates += 1
                    continue
                seen[seq] = 1
                self.delivered += 1
                self.last_delivery = t = now()
                self.latencies.append(t - props["t"])
        except ConnectionClosed as exc:
            self.closed = f"{exc.rcvd.code if exc.rcvd else 'no close frame'}"


@dataclass
class Producer:
    ws: ClientConnection
    window: int
    acked_ok: set[int] = field(default_factory=set)
    errors: int = 0
    first_error: str | None = None
    acks: int = 0
    last_ack: float = 0.0
    slots: asyncio.Semaphore = field(init=False)
    all_acked: asyncio.Event = field(default_factory=asyncio.Event)
    sent: int = 0
    done_sending: bool = False
    closed: str | None = None

    def __post_init__(self) -> None:
        self.slots = asyncio.Semaphore(self.window)

    async def read_acks(self) -> None:
        loads, now = wire.loads, time.perf_counter
        try:
            while True:
                ack = loads(await self.ws.recv(decode=False))
                context = ack.get("context")
                if not isinstance(context, int):  # a warm-up message's ack
                    if ack.get("result") != "ok":
                        self.first_error = self.first_error or str(ack.get("result"))[:200]
                    continue
                self.slots.release()
                self.acks += 1
                self.last_ack = now()
                if ack.get("result") == "ok":
                    self.acked_ok.add(context)
                else:
                    self.errors += 1
                    self.first_error = self.first_error or str(ack.get("result"))[:200]
                if self.done_sending and self.acks >= self.sent:
                    self.all_acked.set()
        except ConnectionClosed as exc:
            self.closed = f"{exc.rcvd.code if exc.rcvd else 'no close frame'}"
            self.all_acked.set()


async def run_fanout(
    *,
    producer_base: str,
    consumer_bases: list[str],
    topic: str,
    consumers: int,
    count: int,
    window: int,
    payload_bytes: int,
    deadline_s: float,
    server_pids: list[int],
) -> dict[str, Any]:
    started = time.monotonic()
    deadline = started + deadline_s
    run = uuid.uuid4().hex[:12]
    payload = wire.payload_of(payload_bytes)
    subs = [
        Consumer(await wire.open_socket(wire.consumer_url(consumer_bases[i % len(consumer_bases)], topic,
                                                          f"bench-{run}-{i}")),
                 run, count)
        for i in range(consumers)
    ]
    producer = Producer(await wire.open_socket(wire.producer_url(producer_base, topic)), window)
    tasks = [asyncio.create_task(c.read()) for c in subs] + [asyncio.create_task(producer.read_acks())]
    result: dict[str, Any] = {"consumers": consumers, "window": window, "payload_bytes": payload_bytes,
                              "requested": count}
    try:
        warm = await _warm_up(producer, subs, run, payload, min(deadline, time.monotonic() + WARMUP_TIMEOUT_S))
        if not warm:
            result["error"] = f"consumers got no warm-up message (ack: {producer.first_error or 'ok'})"
            return result
        meter = CpuMeter(server_pids)
        meter.start()
        t0 = time.perf_counter()
        await _publish(producer, run, payload, count, deadline)
        await _wait_acks(producer, deadline + DRAIN_IDLE_S)
        await _drain(subs, producer, deadline + 2 * DRAIN_IDLE_S)
        cpu = meter.stop()
        result.update(_summarise(producer, subs, t0, count))
        result.update(cpu)
        result["complete"] = producer.sent == count and producer.acks == producer.sent
        result["elapsed_s"] = round(time.monotonic() - started, 2)
        return result
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.gather(*(c.ws.close() for c in subs), producer.ws.close(), return_exceptions=True)


async def _warm_up(producer: Producer, subs: list[Consumer], run: str, payload: str, until: float) -> bool:
    """Publish unmeasured messages until every consumer got one: a Switchyard consumer is attached
    to its topic a moment after its handshake, and a message before that would count as lost."""
    n = 0
    while time.monotonic() < until:
        frame = {"payload": payload, "properties": {"run": run}, "context": f"warmup-{n}"}
        await producer.ws.send(wire.dumps(frame), text=True)
        n += 1
        try:
            await asyncio.wait_for(asyncio.gather(*(c.warmed.wait() for c in subs)), 0.05)
            return True
        except TimeoutError:
            continue
    return False


async def _publish(producer: Producer, run: str, payload: str, count: int, deadline: float) -> None:
    dumps, now, ws, slots = wire.dumps, time.perf_counter, producer.ws, producer.slots
    clock = time.monotonic
    try:
        for seq in range(count):
            await slots.acquire()
            if seq % 256 == 0 and clock() > deadline:
                break
            frame = {"payload": payload, "properties": {"run": run, "seq": seq, "t": now()}, "context": seq}
            await ws.send(dumps(frame), text=True)
            producer.sent += 1
    except ConnectionClosed:
        pass
    producer.done_sending = True
    if producer.acks >= producer.sent:
        producer.all_acked.set()


async def _wait_acks(producer: Producer, until: float) -> None:
    try:
        await asyncio.wait_for(producer.all_acked.wait(), max(0.0, until - time.monotonic()))
    except TimeoutError:
        pass


async def _drain(subs: list[Consumer], producer: Producer, until: float) -> None:
    """Wait until every consumer has every ok-acked message, or nothing arrived for DRAIN_IDLE_S."""
    expected = len(producer.acked_ok)
    last_total, last_progress = -1, time.monotonic()
    while time.monotonic() < until:
        total = sum(c.delivered for c in subs)
        if all(c.delivered >= expected for c in subs):
            return
        if total != last_total:
            last_total, last_progress = total, time.monotonic()
        elif time.monotonic() - last_progress > DRAIN_IDLE_S:
            return
        await asyncio.sleep(0.05)


def _summarise(producer: Producer, subs: list[Consumer], t0: float, count: int) -> dict[str, Any]:
    ok = producer.acked_ok
    lost = 0
    for c in subs:
        lost += sum(1 for seq in ok if not c.seen[seq])
    delivered = sum(c.delivered for c in subs)
    last_delivery = max((c.last_delivery for c in subs), default=0.0)
    latencies = [x for c in subs for x in c.latencies]
    closed = {f"consumer-{i}": c.closed for i, c in enumerate(subs) if c.closed}
    if producer.closed:
        closed["producer"] = producer.closed
    return {
        "sent": producer.sent,
        "acked_ok": len(ok),
        "ack_errors": producer.errors,
        "first_ack_error": producer.first_error,
        "delivered": delivered,
        "expected_deliveries": len(ok) * len(subs),
        "lost": lost,
        "duplicates": sum(c.duplicates for c in subs),
        "ack_rate": rate(producer.acks, producer.last_ack - t0),
        "delivery_rate": rate(delivered, last_delivery - t0),
        "latency_ms": latency_summary_ms(latencies),
        "closed": closed or None,
    }
