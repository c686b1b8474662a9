"""emit: events written in the caller's transaction, relays woken only when it commits."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime

import orjson
import pytest
from django.db import IntegrityError, connection, transaction
from django.test import override_settings
from django.test.utils import CaptureQueriesContext

from app.outbox import wakeup
from app.outbox.cloudevents import EventIn
from app.outbox.emit import TargetNotConfigured, aemit, emit, emit_many
from app.outbox.models import OutboxEvent, Status
from tests.databases import BACKEND
from tests.outbox import clear_outbox
from tests.protocol import unique

TIMEOUT_S = 10.0


class Boom(Exception):
    """Raised to roll a transaction back."""


@pytest.fixture(autouse=True)
def _clean_outbox() -> Iterator[None]:
    clear_outbox()
    yield


async def loop_turn() -> None:
    """Return once every callback already handed to this loop (call_soon_threadsafe included) has run."""
    done = asyncio.Event()
    asyncio.get_running_loop().call_soon_threadsafe(done.set)
    await asyncio.wait_for(done.wait(), TIMEOUT_S)


def test_committed_event_is_stored() -> None:
    """An event emitted in a committed transaction is stored, pending, with its attributes."""
    when = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    with transaction.atomic():
        emit(
            "com.example.order.created", "/orders", {"id": 7}, id="order-7-created", key="order-7",
            subject="7", time=when, target="topic", destination="orders", extensions={"tenant": "acme", "n": 3},
        )
    row = OutboxEvent.objects.get(source="/orders", event_id="order-7-created")
    assert (row.type, row.subject, row.time, row.key) == ("com.example.order.created", "7", when, "order-7")
    assert (row.target, row.destination, row.extensions) == ("topic", "orders", {"tenant": "acme", "n": 3})
    assert row.datacontenttype == "application/json"
    assert orjson.loads(bytes(row.data)) == {"id": 7}
    assert (row.specversion, row.status, row.attempts) == ("1.0", Status.PENDING, 0)


def test_rolled_back_event_is_not_stored() -> None:
    """An event emitted in a transaction that rolls back leaves no row behind."""
    event_id = unique("rollback")
    with pytest.raises(Boom), transaction.atomic():
        emit("com.example.thing", "/things", id=event_id, target="topic")
        raise Boom
    assert not OutboxEvent.objects.filter(event_id=event_id).exists()


async def test_relays_woken_on_commit_only() -> None:
    """Relays in this process are woken when the emitting transaction commits, not before."""
    woken = asyncio.Event()
    wakeup.register(woken)
    try:
        with transaction.atomic():
            emit("com.example.thing", "/things", target="topic")
            await loop_turn()
            assert not woken.is_set()
        await asyncio.wait_for(woken.wait(), TIMEOUT_S)
    finally:
        wakeup.unregister(woken)


async def test_rolled_back_emit_wakes_nobody() -> None:
    """A transaction that rolls back does not wake relays."""
    woken = asyncio.Event()
    wakeup.register(woken)
    try:
        with pytest.raises(Boom), transaction.atomic():
            emit("com.example.thing", "/things", target="topic")
            raise Boom
        await loop_turn()
        assert not woken.is_set()
    finally:
        wakeup.unregister(woken)


def test_duplicate_source_and_id_refused() -> None:
    """Emitting the same (source, id) twice raises IntegrityError; the first event stays."""
    event_id = unique("dup")
    emit("com.example.thing", "/things", id=event_id, target="topic")
    with pytest.raises(IntegrityError):
        emit("com.example.thing", "/things", id=event_id, target="topic")
    assert OutboxEvent.objects.filter(event_id=event_id).count() == 1


def test_same_id_from_another_source_accepted() -> None:
    """An id is unique per source only."""
    event_id = unique("shared")
    emit("com.example.thing", "/things", id=event_id, target="topic")
    emit("com.example.thing", "/other-things", id=event_id, target="topic")
    assert OutboxEvent.objects.filter(event_id=event_id).count() == 2


@override_settings(AMQP_URL=None)
def test_unconfigured_target_refused() -> None:
    """An event for a target with no connection configured is refused and not stored."""
    event_id = unique("nowhere")
    with pytest.raises(TargetNotConfigured, match="rabbitmq"):
        emit("com.example.thing", "/things", id=event_id, target="rabbitmq")
    assert not OutboxEvent.objects.filter(event_id=event_id).exists()


@pytest.mark.parametrize(
    ("target", "extra"),
    [("topic", {}), ("redis", {"OUTBOX_REDIS_URL": "redis://127.0.0.1:1/0"})],
)
def test_default_target_from_settings(target: str, extra: dict[str, str]) -> None:
    """An event that names no target goes to OUTBOX_TARGET."""
    with override_settings(OUTBOX_TARGET=target, **extra):
        row = emit("com.example.thing", "/things")
    assert OutboxEvent.objects.get(pk=row.pk).target == target


async def test_aemit_stores_the_event() -> None:
    """aemit commits the event on its own."""
    event_id = unique("async")
    row = await aemit("com.example.thing", "/things", {"n": 1}, id=event_id, target="topic")
    stored = OutboxEvent.objects.get(event_id=event_id)
    assert stored.pk == row.pk
    assert orjson.loads(bytes(stored.data)) == {"n": 1}


def test_emit_many_is_one_insert() -> None:
    """Several events go in with one INSERT and get ascending pks in the order given."""
    ids = [unique(f"many{n}") for n in range(5)]
    events = [EventIn(type="com.example.thing", source="/things", id=i, key="k", target="topic") for i in ids]
    with CaptureQueriesContext(connection) as queries:
        created = emit_many(events)
    inserts = [q["sql"] for q in queries.captured_queries if q["sql"].lstrip().upper().startswith("INSERT")]
    assert len(inserts) == 1
    pks = [row.pk for row in created]
    assert None not in pks and pks == sorted(pks) and len(set(pks)) == len(pks)
    assert list(OutboxEvent.objects.filter(pk__in=pks).order_by("pk").values_list("event_id", flat=True)) == ids


def test_emit_many_of_nothing_writes_nothing() -> None:
    """An empty batch inserts no rows and runs no query."""
    with CaptureQueriesContext(connection) as queries:
        assert emit_many([]) == []
    assert queries.captured_queries == []


@pytest.mark.skipif(BACKEND != "postgres", reason="SQLite runs one writing transaction at a time")
def test_same_key_emitter_waits_for_the_open_transaction() -> None:
    """A key's second emitter waits until the first one's transaction ends (ids follow commits)."""
    first_emitted, release = threading.Event(), threading.Event()
    pks: dict[str, int] = {}

    def first() -> None:
        with transaction.atomic():
            pks["first"] = emit("com.example.a", "/tests/emit", key="shared-key").pk
            first_emitted.set()
            release.wait(30)
        connection.close()

    def second() -> None:
        pks["second"] = emit("com.example.b", "/tests/emit", key="shared-key").pk
        connection.close()

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    threads[0].start()
    assert first_emitted.wait(30)
    threads[1].start()
    with connection.cursor() as cursor:  # the second emitter is queued on the key's lock
        for _ in range(3000):
            cursor.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted")
            if cursor.fetchone()[0]:
                break
            time.sleep(0.01)  # bounded-poll
        else:
            raise AssertionError("the second emitter never waited for the key")
    assert "second" not in pks
    release.set()
    for thread in threads:
        thread.join(30)
    assert pks["first"] < pks["second"]


@pytest.mark.skipif(BACKEND != "postgres", reason="the advisory locks are PostgreSQL's")
def test_one_transaction_emits_fifteen_thousand_keyed_events() -> None:
    """15,000 keyed events in one transaction stay within PostgreSQL's shared lock table."""
    events = [EventIn(type="com.example.bulk", source="/tests/emit", key=f"bulk-{n}") for n in range(15_000)]
    with transaction.atomic():
        created = emit_many(events)
        with connection.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()")
            held = cursor.fetchone()[0]
    assert len(created) == 15_000 and OutboxEvent.objects.filter(type="com.example.bulk").count() == 15_000
    assert held <= 1024
