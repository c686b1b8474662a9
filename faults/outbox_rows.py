"""Outbox row: RabbitMQ restarted (``rabbitmqctl stop_app`` / ``start_app``) while outbox events and
CQRS changes flow, all through real processes on PostgreSQL.

Events are emitted over HTTP (POST /api/v1/outbox/events on a server) and CQRS master changes are
committed by a master application (faults/master_writer.py), continuously, before, during and after
the outage; ``manage.py outbox_relay`` publishes both to RabbitMQ and ``manage.py cqrs_consume``
applies the changes to the replica. Counted from the outside: an event is emitted once its 201 came
back and published once it is in a durable queue bound before any traffic (duplicates: its repeats
there); a change is committed once the writer printed it, and arrived when the replica's final state
holds it (its row at the master's last revision, or gone after a delete). Recovery: from ``start_app``
returning (the broker accepting connections again) until both an event reached the queue and a
change reached the replica.
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections.abc import Awaitable, Callable
from typing import Any

from faults.outbox_traffic import POLL_S, Emitter, MasterWriter, Wire, drop_database, provision, superuser_key
from faults.row import Counts, Row
from faults.scenario import Profile, Scenario
from faults.services import rabbitmq_down
from tests.databases import query
from tests.outbox import header
from tests.servers import QUIET, ConsumerProcess, RelayProcess, ServerProcess
from tests.services import require_postgres, require_rabbitmq

SCENARIO = "RabbitMQ restart (outbox + CQRS)"
BACKEND = "postgres+rabbitmq"
FIRST_ARRIVAL_S = 60.0
# What the relay's and the consumer's AMQP client (aiormq) logs at ERROR, or as a WARNING with a
# traceback, while the broker shuts their connections and refuses new ones; Switchyard's own records
# of the outage are WARNINGs.
EXPECTED_ERRORS = (
    r"ERROR aiormq\.connection: Unexpected connection close from remote .*CONNECTION_FORCED - broker forced "
    r"connection closure with reason 'shutdown'",
    r"ERROR aiormq\.connection: error when creating transport: <AMQPConnectionError: \(111, 'Connection refused'\)>",
    r"WARNING aiormq\.connection: Cancelling cause reader exited abnormally\n(?s:.*)aiormq\.exceptions\."
    r"ConnectionClosed: \[Errno 320\] CONNECTION_FORCED - broker forced connection closure with reason 'shutdown'",
)


def count(url: str, sql: str) -> int:
    [(n,)] = query(url, sql)
    return int(str(n))


def authors(url: str, side: str) -> dict[int, tuple[str, int]]:
    """``side``'s (cqrs_master or cqrs_replica) authors: pk -> (name, revision)."""
    rows = query(url, f"SELECT id, name, cqrs_revision FROM {side}_author")
    return {int(str(pk)): (str(name), int(str(revision))) for pk, name, revision in rows}


async def replica_of(url: str) -> dict[int, tuple[str, int]]:
    return await asyncio.to_thread(authors, url, "cqrs_replica")


async def settled(url: str) -> bool:
    """Every event published and the replica at the master's state (only a wait: counts come from the
    queue and the replica's rows)."""
    def check() -> bool:
        return (count(url, "SELECT count(*) FROM outbox_outboxevent WHERE status <> 'published'") == 0
                and authors(url, "cqrs_master") == authors(url, "cqrs_replica"))
    return await asyncio.to_thread(check)


async def first_change(probe: Callable[[], Awaitable[Any]], timeout_s: float = FIRST_ARRIVAL_S) -> float:
    """Seconds until ``probe()`` first returns something other than what it returned first."""
    began = time.monotonic()
    before = await probe()
    while await probe() == before:
        if time.monotonic() - began >= timeout_s:
            raise TimeoutError(f"nothing new in {timeout_s} s")
        await asyncio.sleep(POLL_S)  # bounded-poll
    return time.monotonic() - began


async def until(check: Callable[[], Awaitable[bool]], timeout_s: float) -> bool:
    """Whether ``check()`` came true within ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not await check():
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(0.1)  # bounded-poll
    return True


def change_ids(changes: list[tuple[str, int, int]]) -> list[str]:
    return [f"cqrs:{pk}:{'delete' if op == 'delete' else revision}" for op, pk, revision in changes]


def replica_arrivals(changes: list[tuple[str, int, int]], master: dict[int, tuple[str, int]],
                     replica: dict[int, tuple[str, int]]) -> list[str]:
    """The committed changes the replica's final state holds: every revision up to its own for a row
    that matches the master's at that revision, and a delete as the row gone with all it had."""
    arrived: list[str] = []
    for pk in {pk for _, pk, _ in changes}:
        revisions = [revision for op, p, revision in changes if p == pk and op != "delete"]
        deleted = any(op == "delete" and p == pk for op, p, _ in changes)
        if deleted and pk not in master and pk not in replica:
            arrived += [f"cqrs:{pk}:{r}" for r in revisions] + [f"cqrs:{pk}:delete"]
        elif pk in replica:
            name, revision = replica[pk]
            # At the master's revision, a name of another revision's is a change lost (or garbled).
            garbled = pk in master and master[pk][1] == revision and master[pk][0] != name
            top = revision - 1 if garbled else revision
            arrived += [f"cqrs:{pk}:{r}" for r in revisions if r <= top]
    return arrived


def out_of_order(messages: list[Any]) -> list[str]:
    """Keys whose events reached the queue out of emission order (first arrivals; repeats allowed)."""
    firsts: dict[str, list[int]] = {}
    seen: set[str] = set()
    for message in messages:
        if message.message_id in seen:
            continue
        seen.add(message.message_id)
        firsts.setdefault(header(message, "partitionkey"), []).append(json.loads(message.body)["n"])
    return [key for key, numbers in firsts.items() if numbers != sorted(numbers)]


def start_all(*procs: ServerProcess) -> Awaitable[list[None]]:
    """Started side by side: each is a Python and Django start-up of a second or more."""
    return asyncio.gather(*(asyncio.to_thread(proc.start) for proc in procs))


def stop_all(procs: list[ServerProcess]) -> Awaitable[list[None]]:
    return asyncio.gather(*(asyncio.to_thread(proc.stop) for proc in procs))


async def rabbitmq_restart(profile: Profile) -> Row:
    require_postgres()
    wire = Wire(require_rabbitmq())
    rate = profile.size(20, 100)
    began = time.monotonic()

    def phase(name: str) -> None:
        phases.append(f"{name} {time.monotonic() - began:.1f}")

    phases: list[str] = []
    url = provision(profile)
    env = wire.env()
    # Quick: the consumer's back-off from 0.1 s, not 1 s: doubling over the ~10 s rabbitmqctl takes, the
    # default made its last wait up to 8 s of CI's run. The relay's back-off is not configurable.
    consumer = ConsumerProcess(url, {**env, "CQRS_QUEUE": wire.replica,
                                     **({"CQRS_RECONNECT_BASE_S": "0.1"} if profile.quick else {})})
    relay = RelayProcess(url, {**env, "OUTBOX_POLL_INTERVAL_S": "0.2"}, tasks=2)
    server = ServerProcess(url, {**QUIET, **env})
    writer = MasterWriter(url, env, rate=rate)
    procs: list[ServerProcess] = [consumer, relay, server, writer]
    emitter_task: asyncio.Task[None] | None = None
    try:
        key, *_ = await asyncio.gather(asyncio.to_thread(superuser_key, url), start_all(*procs))
        # The replica's queue (the consumer is ready) and the inbox are bound before anything is published.
        async with wire.box(keep=True):
            pass
        phase("started")
        assert writer.proc is not None
        writer.proc.send_signal(signal.SIGUSR1)
        emitter = Emitter(server, key, rate, lanes=profile.size(2, 4))
        emitter_task = asyncio.create_task(emitter.run())

        # Flowing before the fault: events in the queue, changes at the replica. The phases are times
        # (events and changes flow meanwhile), not counts: a loaded machine emits less, not later.
        async with wire.depth() as depth:
            if not await until(lambda: _positive(depth()), FIRST_ARRIVAL_S):
                raise RuntimeError(f"no event reached the queue in {FIRST_ARRIVAL_S} s before the fault")
        if not await until(lambda: _nonempty(replica_of(url)), FIRST_ARRIVAL_S):
            raise RuntimeError(f"no change reached the replica in {FIRST_ARRIVAL_S} s before the fault")
        await asyncio.sleep(profile.size(1, 10))
        phase("flowing")
        async with rabbitmq_down():
            phase("stopped")
            during = len(emitter.emitted)
            # The outage's length (rabbitmqctl's own seconds come on top).
            await asyncio.sleep(profile.size(1, 5))
        during = len(emitter.emitted) - during
        if during == 0:  # the outage met no traffic: the row would prove nothing
            raise RuntimeError("no event was emitted while RabbitMQ was down")
        phase("started again")
        async with wire.depth() as depth:
            recovery_event, recovery_change = await asyncio.gather(
                first_change(depth), first_change(lambda: replica_of(url)))
        await asyncio.sleep(profile.size(1, 10))
        if emitter_task.done():  # it stopped before it was told to: its failure is the row's
            emitter_task.result()
        emitter_task.cancel()
        await asyncio.gather(emitter_task, return_exceptions=True)
        await asyncio.to_thread(writer.stop)
        writer.drain(5)
        phase("traffic stopped")
        in_time = await until(lambda: settled(url), profile.size(30, 60))
        phase("settled")
        async with wire.box(keep=False) as box:
            messages = await box.drain()
        master, replica = authors(url, "cqrs_master"), authors(url, "cqrs_replica")
        attempted = count(url, "SELECT count(*) FROM outbox_outboxevent WHERE attempts > 0")
    finally:
        if emitter_task is not None:
            emitter_task.cancel()
        await stop_all(procs)
        try:
            await wire.drop()
        finally:
            drop_database(url)

    changes = writer.changes()
    arrivals = replica_arrivals(changes, master, replica)
    event_counts = Counts.of(emitter.emitted, [m.message_id for m in messages])
    change_counts = Counts.of(change_ids(changes), arrivals)
    both = Counts.of(emitter.emitted + change_ids(changes), [m.message_id for m in messages] + arrivals)
    repeats = sum("Received duplicate CQRS data" in line for line in consumer.output)
    disordered = out_of_order(messages)
    notes = [f"API events {event_counts.cell()} ({during} emitted while RabbitMQ was down)",
             f"CQRS changes committed / at the replica / - / lost {change_counts.cell()} (the replica "
             f"applies by revision: repeats do not show; its consumer logged {repeats} skipped)",
             f"first event in the queue {recovery_event:.2f} s, first change at the replica "
             f"{recovery_change:.2f} s after start_app returned",
             "s from the start: " + ", ".join(phases)]
    if profile.quick:
        notes.append("quick: the consumer's CQRS_RECONNECT_BASE_S is 0.1 (default 1)")
    notes += [f"refused: {line}" for line in emitter.refused[:5]]
    if not in_time:
        notes.append("not settled in time: events unpublished or the replica behind the master")
    if disordered or attempted:
        # The outage must neither reorder a key's events nor count attempts toward failing them.
        raise AssertionError(f"keys out of order: {disordered}; events with attempts counted: {attempted}; "
                             + "; ".join(notes))
    return Row(SCENARIO, BACKEND, events=both, recovery_s=max(recovery_event, recovery_change),
               refused=len(emitter.refused), notes=notes)


async def _positive(value: Awaitable[int]) -> bool:
    return await value > 0


async def _nonempty(value: Awaitable[dict[int, Any]]) -> bool:
    return bool(await value)


SCENARIOS: tuple[Scenario, ...] = (
    Scenario(SCENARIO, BACKEND, rabbitmq_restart, expected_errors=EXPECTED_ERRORS, restarts_services=True),
)
