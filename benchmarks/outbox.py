"""Outbox relay benchmark on PostgreSQL + RabbitMQ (publisher confirms), against raw aio-pika.

    python -m benchmarks.outbox [--events 20000] [--keys 100] [--batch-sizes 1,10,100,500]

- throughput: events already committed in the outbox, published by one relay task at each batch
  size (and by two tasks at the largest), against raw aio-pika publishing the same number of
  messages with confirms, one sequential publisher per key (the relay's own concurrency shape);
- latency: one event per transaction at a steady rate; commit-to-arrival at a RabbitMQ consumer,
  with the relay in this process (woken by ``on_commit``) and in a process of its own (woken by
  LISTEN/NOTIFY), against the raw publish-to-arrival time.

Every figure carries its ratio to the raw baseline of the same run. Fresh database, own exchange
and queue, all dropped at the end; loopback only, bounded counts and deadlines.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks import databases, targets
from benchmarks.stats import latency_summary_ms, rate

AMQP_URL = os.environ.get("SWITCHYARD_BENCH_AMQP", "amqp://guest:guest@127.0.0.1:5672/")
ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = Path(__file__).resolve().parent / "results"
DEADLINE_S = 60.0


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


async def until(check: Callable[[], bool], deadline_s: float) -> None:
    """Wait (polling every 10 ms) until ``check()`` holds; give up at the deadline."""
    for _ in range(int(deadline_s * 100)):
        if check():
            return
        await asyncio.sleep(0.01)


class Rabbit:
    """An exchange + queue of the run's own; counts and times arrivals."""

    def __init__(self, exchange: str) -> None:
        self.exchange_name = exchange
        self.arrivals: list[tuple[float, bytes]] = []

    async def open(self) -> None:
        import aio_pika

        self.connection = await aio_pika.connect(AMQP_URL)
        self.channel = await self.connection.channel(publisher_confirms=True)
        self.exchange = await self.channel.declare_exchange(self.exchange_name, "topic", durable=True)
        self.queue = await self.channel.declare_queue(exclusive=True)
        await self.queue.bind(self.exchange, "#")

    async def listen(self) -> None:
        async def arrived(message: Any) -> None:
            self.arrivals.append((time.time(), message.body))

        await self.queue.consume(arrived, no_ack=True)

    async def close(self) -> None:
        await self.exchange.delete()
        await self.connection.close()


async def raw_throughput(rabbit: Rabbit, events: int, keys: int) -> dict[str, float]:
    """aio-pika alone: ``keys`` sequential publishers with confirms, ``events`` in all."""
    import aio_pika

    per_key = events // keys

    async def publisher(k: int) -> None:
        for n in range(per_key):
            body = json.dumps({"k": k, "n": n}).encode()
            await rabbit.exchange.publish(
                aio_pika.Message(body, delivery_mode=aio_pika.DeliveryMode.PERSISTENT), "raw", mandatory=True
            )

    started = time.perf_counter()
    await asyncio.gather(*(publisher(k) for k in range(keys)))
    elapsed = time.perf_counter() - started
    return {"events": per_key * keys, "seconds": round(elapsed, 3), "events_per_s": rate(per_key * keys, elapsed)}


def fill_outbox(events: int, keys: int) -> None:
    from django.db import transaction

    from app.outbox.cloudevents import EventIn
    from app.outbox.emit import emit_many

    for start in range(0, events, 1000):
        with transaction.atomic():
            emit_many(
                EventIn(type="bench.event", source="/bench", data={"n": n}, key=f"k{n % keys}", target="rabbitmq")
                for n in range(start, min(events, start + 1000))
            )


async def relay_throughput(events: int, keys: int, batch_size: int, tasks: int) -> dict[str, float]:
    from channels.db import database_sync_to_async

    from app.outbox.models import OutboxEvent
    from relays.outbox import OutboxRelay

    await database_sync_to_async(lambda: OutboxEvent.objects.all().delete())()
    await database_sync_to_async(fill_outbox)(events, keys)
    relays = [OutboxRelay(batch_size=batch_size, name=f"bench{i}") for i in range(tasks)]
    started = time.perf_counter()
    running = [asyncio.create_task(relay.run()) for relay in relays]
    await until(lambda: sum(r.published for r in relays) >= events, DEADLINE_S)
    elapsed = time.perf_counter() - started
    done = sum(r.published for r in relays)
    for task in running:
        task.cancel()
    await asyncio.gather(*running, return_exceptions=True)
    return {"events": done, "seconds": round(elapsed, 3), "events_per_s": rate(done, elapsed),
            "complete": done >= events}


async def paced(count: int, per_s: float, send: Callable[[int], Awaitable[None]]) -> None:
    start = time.monotonic()
    for n in range(count):
        await send(n)
        delay = start + (n + 1) / per_s - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)


async def raw_latency(rabbit: Rabbit, count: int, per_s: float) -> dict[str, Any]:
    import aio_pika

    rabbit.arrivals.clear()
    sent: dict[int, float] = {}

    async def send(n: int) -> None:
        sent[n] = time.time()
        await rabbit.exchange.publish(aio_pika.Message(json.dumps({"n": n}).encode()), "raw.latency")

    await paced(count, per_s, send)
    await until(lambda: len(rabbit.arrivals) >= count, DEADLINE_S)
    return latency_summary_ms([at - sent[json.loads(body)["n"]] for at, body in rabbit.arrivals])


async def outbox_latency(rabbit: Rabbit, count: int, per_s: float, relay_process: bool) -> dict[str, Any]:
    """Commit-to-arrival of events emitted one per transaction."""
    from channels.db import database_sync_to_async
    from django.db import transaction

    from app.outbox.emit import emit
    from app.outbox.models import OutboxEvent
    from relays.outbox import OutboxRelay

    await database_sync_to_async(lambda: OutboxEvent.objects.all().delete())()
    rabbit.arrivals.clear()
    committed: dict[int, float] = {}

    def emit_one(n: int) -> None:
        with transaction.atomic():
            emit("bench.latency", "/bench", {"n": n}, key=f"k{n % 10}", target="rabbitmq")
        committed[n] = time.time()

    async def send(n: int) -> None:
        await database_sync_to_async(emit_one)(n)

    process: asyncio.subprocess.Process | None = None
    task: asyncio.Task[None] | None = None
    if relay_process:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        process = await asyncio.create_subprocess_exec(
            sys.executable, "manage.py", "outbox_relay", cwd=ROOT, env=env, stdout=asyncio.subprocess.PIPE
        )
        assert process.stdout is not None
        await asyncio.wait_for(process.stdout.readline(), 60)  # SWITCHYARD_RELAY_READY
    else:
        task = asyncio.create_task(OutboxRelay(name="bench-latency").run())
    try:
        await paced(count, per_s, send)
        await until(lambda: len(rabbit.arrivals) >= count, DEADLINE_S)
    finally:
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        if process is not None:
            process.terminate()
            await asyncio.wait_for(process.wait(), 30)
    return latency_summary_ms([at - committed[json.loads(body)["n"]] for at, body in rabbit.arrivals])


def ratio(value: float | None, raw: float | None) -> str:
    return f"{value / raw:.2f}x" if value and raw else "-"


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    rabbit = Rabbit(os.environ["OUTBOX_AMQP_EXCHANGE"])
    await rabbit.open()
    results: dict[str, Any] = {"events": args.events, "keys": args.keys}
    try:
        log("raw aio-pika throughput")
        results["raw_throughput"] = await raw_throughput(rabbit, args.events, args.keys)
        await rabbit.queue.purge()
        sweep: dict[str, Any] = {}
        for batch_size in args.batch_sizes:
            count = min(args.events, 2_000) if batch_size == 1 else args.events
            log(f"relay throughput, batch size {batch_size}")
            sweep[f"batch {batch_size}"] = await relay_throughput(count, args.keys, batch_size, 1)
            await rabbit.queue.purge()
        largest = max(args.batch_sizes)
        log(f"relay throughput, 2 tasks, batch size {largest}")
        sweep[f"batch {largest}, 2 tasks"] = await relay_throughput(args.events, args.keys, largest, 2)
        await rabbit.queue.purge()
        results["relay_throughput"] = sweep
        await rabbit.listen()
        log("raw latency")
        results["raw_latency_ms"] = await raw_latency(rabbit, args.latency_events, args.rate)
        log("outbox latency, relay in process")
        results["in_process_latency_ms"] = await outbox_latency(rabbit, args.latency_events, args.rate, False)
        log("outbox latency, relay process (LISTEN/NOTIFY)")
        results["relay_process_latency_ms"] = await outbox_latency(rabbit, args.latency_events, args.rate, True)
    finally:
        await rabbit.close()
    return results


def print_report(results: dict[str, Any]) -> None:
    raw = results["raw_throughput"]["events_per_s"]
    print(f"\nThroughput to RabbitMQ with confirms ({results['keys']} keys)")
    print(f"{'run':<22}{'events':>8}{'events/s':>12}{'vs raw':>9}")
    print(f"{'raw aio-pika':<22}{results['raw_throughput']['events']:>8}{raw:>12}{'1.00x':>9}")
    for name, row in results["relay_throughput"].items():
        print(f"{'relay ' + name:<22}{row['events']:>8}{row['events_per_s']:>12}{ratio(row['events_per_s'], raw):>9}")
    base = results["raw_latency_ms"]
    print("\nCommit-to-publish latency (ms; raw: publish-to-arrival)")
    print(f"{'run':<28}{'p50':>8}{'p99':>8}{'p50 vs raw':>12}")
    for name, key in (("raw aio-pika", "raw_latency_ms"), ("relay in process (on_commit)", "in_process_latency_ms"),
                      ("relay process (NOTIFY)", "relay_process_latency_ms")):
        row = results[key]
        print(f"{name:<28}{row['p50']!s:>8}{row['p99']!s:>8}{ratio(row['p50'], base['p50']):>12}")
    print()
    print(targets.outbox_table(results))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--keys", type=int, default=100)
    parser.add_argument("--batch-sizes", type=lambda s: [int(x) for x in s.split(",")], default=[1, 10, 100, 500])
    parser.add_argument("--latency-events", type=int, default=1_000)
    parser.add_argument("--rate", type=float, default=200.0, help="latency run: events per second")
    args = parser.parse_args()
    if not (databases.reachable("127.0.0.1", 5432) and databases.reachable("127.0.0.1", 5672)):
        sys.exit("the outbox benchmark needs PostgreSQL on 127.0.0.1:5432 and RabbitMQ on 127.0.0.1:5672")
    with databases.fresh_postgres() as url:
        # Settings are read from the environment once, at setup: configure before it.
        os.environ.update(
            DATABASE_URL=url, AMQP_URL=AMQP_URL, DJANGO_SETTINGS_MODULE="settings.base",
            OUTBOX_AMQP_EXCHANGE=f"bench.outbox.{uuid.uuid4().hex[:8]}", OUTBOX_RELAY_TASKS="0",
        )
        import django

        django.setup()
        import uvloop
        from django.core.management import call_command

        call_command("migrate", verbosity=0)

        results = uvloop.run(measure(args))
        from django.db import connections

        connections.close_all()
    print_report(results)
    RESULTS_DIR.mkdir(exist_ok=True)
    path = RESULTS_DIR / f"outbox-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.json"
    path.write_text(json.dumps(results, indent=2))
    print(f"\nfull results: {path}")


if __name__ == "__main__":
    main()
