"""Broker rows: messages on a topic that stores them until acked (cache policy) across server kills,
service restarts, and consumers that crash or freeze. A message counts as acked when its producer got
``ok``, as delivered when a consumer sent its ack; every acked message must be delivered."""

from __future__ import annotations

import asyncio
import signal
import time
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from app.outages import Outage
from faults.row import Row
from faults.scenario import Profile, Scenario
from faults.services import postgres_down, redis_down
from faults.traffic import ConsumerProcess, Ledger, Producer, expect, until
from tests.cluster import new_topic
from tests.protocol import unique
from tests.servers import ServerProcess, manage, migrated_database_url, start_server
from tests.services import require_postgres, require_redis


def topic_args(policy: str) -> tuple[str, ...]:
    return ("--anonymous", "--no-dasf", "--store-messages", policy)

# How long every acked message has to reach the consumer once traffic stops; past it, what is
# missing is counted lost.
DELIVERY_TIMEOUT_S = 60.0
PHASE_TIMEOUT_S = 60.0

# While Redis is away channels_redis's receive task logs each failure (its own, not ours: the backplane's
# loops log the outage as a WARNING when it starts and ends, which the row requires).
REDIS_DOWN_ERRORS = (
    r"ERROR channels_redis\.pubsub: Unexpected exception in receive task(?s:.*)redis\.exceptions\.",
)
# While PostgreSQL is away the group commit (each refused publish) and the periodic loops log the outage
# as a WARNING when it starts and ends (the row requires both), no ERROR.
POSTGRES_DOWN_ERRORS: tuple[str, ...] = ()


@dataclass
class Broker:
    """The server processes of a row, their database, and a cache topic on them."""

    servers: list[ServerProcess]
    database_url: str
    slug: str

    def producer_urls(self, *order: int) -> list[str]:
        return [self.servers[i].ws + self.slug for i in order or range(len(self.servers))]

    def consumer_urls(self, *order: int) -> list[str]:
        return [f"{self.servers[i].ws}{self.slug}/sub" for i in order or range(len(self.servers))]


@asynccontextmanager
async def broker(profile: Profile, backend: str, size: int = 1, policy: str = "cache",
                 **env: str) -> AsyncIterator[Broker]:
    """``size`` server processes on a fresh database (SQLite alone, or PostgreSQL + Redis) and a topic
    of store policy ``policy``."""
    slug = unique("fault")
    if backend == "sqlite":
        url = await asyncio.to_thread(migrated_database_url, profile.workdir, "faults", "sqlite")
    else:
        require_postgres()
        redis_url = require_redis()
        url = await asyncio.to_thread(migrated_database_url, profile.workdir, "faults", "postgres")
        env = {"REDIS_URL": redis_url, **env}
    # The topic is made while the servers start: each is a Django start-up of a second or more.
    made = asyncio.create_task(asyncio.to_thread(manage, url, *new_topic(slug, *topic_args(policy))))
    outcomes = await asyncio.gather(*(asyncio.to_thread(start_server, url, **env) for _ in range(size)),
                                    return_exceptions=True)
    servers = [outcome for outcome in outcomes if isinstance(outcome, ServerProcess)]
    try:
        await made
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome
        yield Broker(servers, url, slug)
    finally:
        for server in servers:
            await asyncio.to_thread(server.stop)


@asynccontextmanager
async def flowing(producer: Producer, *consumers: ConsumerProcess,
                  delivery_timeout_s: float = DELIVERY_TIMEOUT_S) -> AsyncIterator[None]:
    """Consumers started, the producer running inside the block; on leaving, the producer stopped and
    (bounded) every acked message waited for, then the consumers stopped."""
    for consumer in consumers:
        await consumer.start()
    producing = asyncio.create_task(producer.run())
    try:
        yield
    finally:
        producer.stopping.set()
        try:
            await asyncio.wait_for(producing, PHASE_TIMEOUT_S)
            await until(lambda: not producer.ledger.missing(), delivery_timeout_s)
        finally:
            # Also when the producer failed: a consumer process left running outlives the row.
            for consumer in consumers:
                await consumer.stop()


async def acked_after(ledger: Ledger, moment: float, count: int) -> None:
    """Wait until ``count`` messages sent after ``moment`` were acked ok."""
    if not await until(lambda: ledger.acked_since(moment) >= count, PHASE_TIMEOUT_S):
        raise TimeoutError(f"{ledger.acked_since(moment)} of {count} messages acked within {PHASE_TIMEOUT_S} s; "
                           f"refusals: {ledger.refusals}")


def outage_lines(b: Broker, outage: Outage) -> list[str]:
    """The WARNING lines the servers logged about ``outage`` starting or ending (app/outages.py)."""
    return [line.strip() for server in b.servers for line in server.output
            if " WARNING " in line and (outage.value in line or outage.ended in line)]


async def expect_outage_logged(b: Broker, outage: Outage) -> str:
    """Fail the row unless the servers logged ``outage`` starting and ending: without those lines the
    refusals or delays had another cause, or the outage was logged otherwise (an ERROR per failure).
    A note of the lines: how many each logger logged as it started and as it ended."""
    await expect(lambda: all(any(text in line for line in outage_lines(b, outage))
                             for text in (outage.value, outage.ended)),
                 PHASE_TIMEOUT_S, f"the servers logging {outage.value!r}, then {outage.ended!r}, as WARNINGs")
    counts = Counter((line.split(" WARNING ")[1].split(":")[0], "ended" if outage.ended in line else "started")
                     for line in outage_lines(b, outage))
    return "outage WARNING lines: " + ", ".join(f"{logger} {moment} {n}"
                                                for (logger, moment), n in sorted(counts.items()))


def row(name: str, backend: str, ledger: Ledger, fault_at: float, *notes: str) -> Row:
    result = Row(name, backend, messages=ledger.counts(), recovery_s=ledger.recovery_after(fault_at),
                 refused=ledger.refused, notes=list(notes))
    if ledger.refusals:
        result.notes.append(f"first refusals: {ledger.refusals[:2]}")
    return result


# --- the server killed --------------------------------------------------------------------------


async def server_sigkill(profile: Profile, backend: str, policy: str) -> Row:
    """kill -9 of the server under load, restarted on the same port and database, ``kills`` times."""
    kills, batch = profile.size(1, 3), profile.size(300, 2000)
    ledger = Ledger()
    async with broker(profile, backend, policy=policy) as b:
        (server,) = b.servers
        producer = Producer(b.producer_urls(), ledger)
        consumer = ConsumerProcess(b.consumer_urls(), ledger)
        first_kill = time.monotonic()
        async with flowing(producer, consumer):
            for n in range(kills):
                await acked_after(ledger, time.monotonic(), batch)
                killed_at = time.monotonic()
                first_kill = killed_at if n == 0 else first_kill
                await asyncio.to_thread(server.kill)
                await asyncio.to_thread(server.restart)
            await acked_after(ledger, killed_at, batch)
    return row("server SIGKILL", backend, ledger, first_kill,
               f"{policy} policy; {kills} kill(s), restart on the same database; recovery: kill to the first "
               f"message sent after it delivered; connections: producer {producer.connections}, "
               f"consumer {consumer.connections}")


async def server_sigkill_sqlite(profile: Profile) -> Row:
    return await server_sigkill(profile, "sqlite", "cache")


async def server_sigkill_postgres(profile: Profile) -> Row:
    # The store policy here (kept after the ack, delivered once per subscription), cache on SQLite.
    return await server_sigkill(profile, "postgres+redis", "store")


# --- the machine's services restarted -----------------------------------------------------------


async def redis_restart(profile: Profile) -> Row:
    """Redis stopped while a producer on one process feeds a consumer on another, then started again."""
    batch, outage = profile.size(200, 2000), profile.size(400, 4000)
    ledger = Ledger()
    async with broker(profile, "postgres+redis", size=2, RESYNC_INTERVAL_S="0.5") as b:
        producer = Producer(b.producer_urls(0), ledger)
        consumer = ConsumerProcess(b.consumer_urls(1), ledger)
        async with flowing(producer, consumer):
            await acked_after(ledger, time.monotonic(), batch)
            async with redis_down():
                await acked_after(ledger, time.monotonic(), outage)
            back_at = time.monotonic()
            await acked_after(ledger, back_at, batch)
            logged = await expect_outage_logged(b, Outage.REDIS_UNREACHABLE)
    return row("Redis restart", "postgres+redis", ledger, back_at,
               f"two processes, producer on one, consumer on the other; {outage} acked while Redis was down; "
               f"recovery: Redis back to the first message sent after it delivered", logged)


async def postgres_restart(profile: Profile) -> Row:
    """PostgreSQL stopped under load (publishes refused with error acks), then started again."""
    batch = profile.size(200, 2000)
    ledger = Ledger()
    async with broker(profile, "postgres+redis") as b:
        producer = Producer(b.producer_urls(), ledger)
        consumer = ConsumerProcess(b.consumer_urls(), ledger)
        async with flowing(producer, consumer):
            await acked_after(ledger, time.monotonic(), batch)
            async with postgres_down():
                refused_before = ledger.refused
                await expect(lambda: ledger.refused > refused_before, PHASE_TIMEOUT_S,
                             "a publish refused while PostgreSQL was down")
            back_at = time.monotonic()
            await acked_after(ledger, back_at, batch)
            logged = await expect_outage_logged(b, Outage.DATABASE_UNREACHABLE)
    return row("PostgreSQL restart", "postgres+redis", ledger, back_at,
               "publishes during the outage are refused (error ack), not acked; recovery: PostgreSQL back to "
               "the first message sent after it delivered", logged)


# --- consumers that crash or freeze -------------------------------------------------------------


async def consumer_crash(profile: Profile, policy: str = "cache",
                         delivery_timeout_s: float = DELIVERY_TIMEOUT_S) -> Row:
    """A consumer process takes messages and is SIGKILLed before acking them; a new one gets them all.
    (tests/test_fault_matrix.py runs it on a topic that stores nothing too: there the row shows the loss.)"""
    batch = profile.size(200, 2000)
    ledger = Ledger()
    async with broker(profile, "sqlite", policy=policy) as b:
        producer = Producer(b.producer_urls(), ledger)
        crashing = ConsumerProcess(b.consumer_urls(), ledger, withhold=True)
        successor = ConsumerProcess(b.consumer_urls(), ledger)
        async with flowing(producer, crashing, delivery_timeout_s=delivery_timeout_s):
            if not await until(lambda: len(crashing.taken) >= batch, PHASE_TIMEOUT_S):
                raise TimeoutError(f"the consumer took {len(crashing.taken)} of {batch} messages")
            crashed_at = time.monotonic()
            await crashing.stop(signal.SIGKILL)
            try:
                await successor.start()
                await acked_after(ledger, crashed_at, batch)
            except BaseException:
                if successor.proc is not None:
                    await successor.stop()
                raise
        await successor.stop()
    taken = set(crashing.taken)
    redelivered = taken & {message_id for message_id, _ in ledger.arrivals}
    return row("consumer crash before ack", "sqlite", ledger, crashed_at,
               f"the crashed consumer took {len(taken)} without acking; {len(redelivered)} of them reached its "
               f"successor; recovery: the crash to the first message sent after it delivered")


async def consumer_sigstop(profile: Profile) -> Row:
    """A consumer process frozen with SIGSTOP while traffic goes on, then resumed (SIGCONT)."""
    batch, frozen_s = profile.size(200, 2000), profile.size(3, 20)
    ledger = Ledger()
    # A short send queue, and messages big enough to fill the socket buffers within the freeze: the frozen
    # consumer's backlog passes the queue and the server closes it (4408).
    async with broker(profile, "sqlite", SEND_QUEUE_FRAMES="200") as b:
        producer = Producer(b.producer_urls(), ledger, padding_bytes=16 * 1024)
        consumer = ConsumerProcess(b.consumer_urls(), ledger)
        async with flowing(producer, consumer):
            await acked_after(ledger, time.monotonic(), batch)
            (server,) = b.servers
            seen = len(server.output)
            consumer.send(signal.SIGSTOP)
            frozen_at = time.monotonic()
            # Frozen at least frozen_s, and until the server gave up on it (traffic goes on meanwhile).
            await expect(lambda: time.monotonic() - frozen_at >= frozen_s and closed_too_slow(server, seen),
                         PHASE_TIMEOUT_S, "the server closing the frozen consumer with 4408")
            frozen_for = time.monotonic() - frozen_at
            acked_while_frozen = ledger.acked_since(frozen_at)
            consumer.send(signal.SIGCONT)
            resumed_at = time.monotonic()
            await acked_after(ledger, resumed_at, batch)
    return row("consumer SIGSTOP", "sqlite", ledger, resumed_at,
               f"frozen {frozen_for:.1f} s while {acked_while_frozen} were acked, until the server closed it with "
               f"4408; consumer connections {consumer.connections}; recovery: SIGCONT to the first message sent "
               f"after it delivered")


def closed_too_slow(server: ServerProcess, since: int) -> bool:
    """Whether the server logged closing a connection with 4408 (consumers/base.py too_slow) after line ``since``."""
    return any(" with 4408: " in line for line in server.output[since:])


SCENARIOS: tuple[Scenario, ...] = (
    Scenario("server SIGKILL", "sqlite", server_sigkill_sqlite),
    Scenario("server SIGKILL", "postgres+redis", server_sigkill_postgres),
    Scenario("Redis restart", "postgres+redis", redis_restart, REDIS_DOWN_ERRORS, restarts_services=True),
    Scenario("PostgreSQL restart", "postgres+redis", postgres_restart, POSTGRES_DOWN_ERRORS, restarts_services=True),
    Scenario("consumer crash before ack", "sqlite", consumer_crash),
    Scenario("consumer SIGSTOP", "sqlite", consumer_sigstop),
)
