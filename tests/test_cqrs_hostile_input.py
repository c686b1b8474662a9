"""What a hostile publisher to the CQRS exchange (or a buggy master) may send a replica: bodies that are
no payload, payloads the replica cannot write back or store, and such dead letters and dump lines. Each
is refused or dead-lettered with a WARNING; the consumer goes on and later messages apply."""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from django.test import override_settings

from app.cqrs.apply import parse, receive
from app.cqrs.ordering import instance_key
from tests.apps.cqrs_replica.models import Author
from tests.cqrs_commands import run
from tests.cqrs_replica import Broker, author, hook_calls, new_pk, open_broker, wire
from tests.protocol import eventually, unique
from tests.servers import ConsumerProcess, run_sql

DEEP = b"[" * 100_000 + b"]" * 100_000  # deeper than Python's JSON parser recurses
POSTGRES = os.environ.get("DATABASE_URL", "").startswith("postgres")


def body(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload).encode()


# --- deciding on one body (no broker) --------------------------------------------------------------


def test_deeply_nested_body_is_refused_not_raised() -> None:
    """A body nested deeper than Python's parser goes is dead-lettered with a reason and has no instance."""
    verdict = receive(DEEP)
    assert (verdict.action, verdict.reason, instance_key(DEEP)) == ("dead_letter", "body nested too deeply", None)


def test_nan_is_no_json() -> None:
    """NaN, which Python's parser takes and no master writes, makes the body no JSON."""
    raw = body(wire("test_author", new_pk(), 0, name="x")).replace(b'"x"', b"NaN")
    assert parse(raw) == "body is not JSON (NaN is not JSON)"


@override_settings(CQRS_MAX_BODY_BYTES=1000)
def test_body_over_the_limit_is_refused_unparsed() -> None:
    """A body over CQRS_MAX_BODY_BYTES is refused before it is parsed, and has no instance to order."""
    big = body(wire("test_author", new_pk(), 0, name="x" * 1000))
    assert parse(big) == f"body over CQRS_MAX_BODY_BYTES ({len(big)} > 1000 bytes)"
    assert instance_key(big) is None


@pytest.mark.parametrize("value", ["\ud800", json.loads("[" * 300 + "]" * 300)], ids=["lone surrogate", "300 deep"])
def test_payload_that_cannot_be_written_back_is_refused(value: Any) -> None:
    """A payload whose retry or dead letter could not be written (lone surrogate, deep nesting) is refused."""
    reason = parse(body(wire("test_author", new_pk(), 0, name="x", extra=value)))
    assert isinstance(reason, str) and reason.startswith("payload cannot be written back as JSON")


@pytest.mark.parametrize("revision", ["7", 1.5, None, True, [1]])
def test_revision_that_is_no_integer_is_refused(revision: Any) -> None:
    """A cqrs_revision that is no integer is refused at once instead of failing on every retry."""
    verdict = receive(body(wire("test_author", new_pk(), revision, name="x")))
    assert (verdict.action, verdict.reason) == ("dead_letter", f"cqrs_revision {revision!r} is not an integer")


@pytest.mark.parametrize("updated", ["yesterday", "2020-13-45T00:00:00", 1700000000, None])
def test_update_time_that_is_no_datetime_is_refused(updated: Any) -> None:
    """A cqrs_updated the replica's column cannot read is refused at once."""
    payload = wire("test_author", new_pk(), 0, name="x")
    payload["instance_data"]["cqrs_updated"] = updated
    assert parse(body(payload)) == f"cqrs_updated {updated!r} is not a date and time"


def test_value_the_database_refuses_is_dead_lettered_at_once(caplog: pytest.LogCaptureFixture) -> None:
    """An integer beyond the column (SQLite: OverflowError, PostgreSQL: DataError) is dead-lettered on the
    first try, with a WARNING and no traceback: it would be refused again."""
    pk = new_pk()
    with caplog.at_level(logging.WARNING, logger="app.cqrs"):
        verdict = receive(body(wire("test_author", pk, 2**63, name="x")))
    assert (verdict.action, verdict.reason, author(pk)) == ("dead_letter", "refused by the database", None)
    assert [record.levelname for record in caplog.records] == ["WARNING"]
    assert caplog.records[0].exc_info is None


# --- the consumer on RabbitMQ ------------------------------------------------------------------------


@pytest.fixture
async def broker() -> AsyncIterator[Broker]:
    """A replica layout of the test's own on RabbitMQ."""
    async with open_broker("hostile") as box:
        yield box


@pytest.fixture
def consumer(broker: Broker) -> Iterator[ConsumerProcess]:
    """``cqrs_consume`` whose retries would outlast the test: a message retried holds its instance."""
    proc = ConsumerProcess(os.environ["DATABASE_URL"], broker.env | {"CQRS_RETRY_DELAY_S": "60"})
    proc.start()
    yield proc
    proc.stop()


async def test_deeply_nested_body_does_not_stop_the_consumer(broker: Broker, consumer: ConsumerProcess) -> None:
    """A body too deep to parse is dead-lettered as received; the next payload is applied."""
    pk = new_pk()
    await broker.publish(DEEP, "test_author")
    await broker.publish(wire("test_author", pk, 0, name="after"), "test_author")
    [dead] = await broker.dead_letters(1)
    assert dead.body == DEEP
    await eventually(lambda: author(pk) == ("after", 0))


async def test_payload_that_cannot_be_written_back_is_dead_lettered_as_received(
    broker: Broker, consumer: ConsumerProcess,
) -> None:
    """An expired payload with a lone surrogate goes to the dead letter queue unchanged; the consumer goes on."""
    pk = new_pk()
    raw = body(wire("test_author", pk, 0, name="\ud800") | {"expires": "2020-01-01T00:00:00+00:00"})
    await broker.publish(raw, "test_author")
    await broker.publish(wire("test_author", pk, 1, name="after"), "test_author")
    [dead] = await broker.dead_letters(1)
    assert dead.body == raw
    await eventually(lambda: author(pk) == ("after", 1))


async def test_value_refused_by_the_database_does_not_hold_its_instance(
    broker: Broker, consumer: ConsumerProcess,
) -> None:
    """A SAVE whose revision the column cannot hold is dead-lettered at once: the instance's next SAVE
    applies without waiting for retries."""
    pk = new_pk()
    await broker.publish(wire("test_author", pk, 2**63, name="refused"), "test_author")
    await broker.publish(wire("test_author", pk, 1, name="next"), "test_author")
    await eventually(lambda: author(pk) == ("next", 1), message="the next SAVE, not held behind retries")
    [dead] = await broker.dead_letters(1)
    assert json.loads(dead.body)["instance_data"]["name"] == "refused"


@pytest.mark.skipif(not POSTGRES, reason="PostgreSQL's index row size limit")
async def test_value_too_large_for_its_index_is_no_outage(broker: Broker) -> None:
    """PostgreSQL's "index row requires ... bytes" (an OperationalError) dead-letters the payload instead of
    stopping the consumer as if the database were down."""
    database_url, index = os.environ["DATABASE_URL"], unique("hostile_meta").replace("-", "_")
    run_sql(database_url, f"CREATE INDEX {index} ON cqrs_replica_hookcall (meta)")
    proc = ConsumerProcess(database_url, broker.env | {"CQRS_RETRY_DELAY_S": "60"})
    proc.start()
    try:
        key, pk = unique("index"), new_pk()
        await broker.publish(wire("test_event", pk, 0, key=key) | {"meta": {"blob": os.urandom(8000).hex()}},
                             "test_event")
        await broker.publish(wire("test_event", pk, 1, key=key), "test_event")
        await eventually(lambda: hook_calls(key) == [("SAVE", 1)], message="the next message applied")
        assert len(await broker.dead_letters(1)) == 1
    finally:
        proc.stop()
        run_sql(database_url, f"DROP INDEX {index}")


# --- dead letters and dumps by hand ------------------------------------------------------------------


async def dead_letter_retry(broker: Broker, *bodies: bytes) -> tuple[int, int]:
    """``cqrs_dead_letters retry`` over ``bodies``: (messages in the replica's queue, left dead letters)."""
    import aio_pika

    replica = await broker.channel.declare_queue(broker.queue, durable=True)
    dead = await broker.channel.declare_queue(f"dead_letter_{broker.queue}", durable=True)
    for raw in bodies:
        await broker.channel.default_exchange.publish(aio_pika.Message(raw), dead.name)
    with override_settings(AMQP_URL=broker.url, CQRS_EXCHANGE=broker.exchange, CQRS_QUEUE=broker.queue):
        await asyncio.wait_for(asyncio.to_thread(run, "cqrs_dead_letters", "retry"), 30)
    counts = []
    for queue in (replica, dead):
        declared = await broker.channel.declare_queue(queue.name, durable=True, passive=True)
        counts.append(int(declared.declaration_result.message_count or 0))
    return counts[0], counts[1]


async def test_dead_letter_of_an_unknown_cqrs_id_stays(broker: Broker) -> None:
    """retry leaves a dead letter no replica model here takes (republished, it would be routed nowhere and
    lost) and retries the others."""
    known = body(wire("test_author", new_pk(), 0, name="x"))
    unknown = body(wire("no_such_model", new_pk(), 0))
    assert await dead_letter_retry(broker, unknown, known) == (1, 1)


async def test_deeply_nested_dead_letter_stays(broker: Broker) -> None:
    """retry leaves a dead letter too deep to parse and goes on with the next one."""
    assert await dead_letter_retry(broker, DEEP, body(wire("test_author", new_pk(), 0, name="x"))) == (1, 1)


@pytest.mark.parametrize("bad", [DEEP, b'{"id": 1, "name": "\xff"}'], ids=["too deep", "no UTF-8"])
def test_bulk_load_skips_a_hostile_line(tmp_path: Path, bad: bytes) -> None:
    """A dump line too deep to parse, or not UTF-8, is reported and skipped; the lines around it load."""
    pks = [new_pk(), new_pk()]
    rows = [json.dumps({"id": pk, "name": "ok", "cqrs_revision": 0, "cqrs_updated": "2025-01-02T03:04:05+00:00"})
            for pk in pks]
    dump = tmp_path / "hostile.dump"
    dump.write_bytes(b"\n".join([b"test_author", rows[0].encode(), bad, rows[1].encode()]))
    _, err = run("cqrs_bulk_load", "-i", str(dump))
    assert err == "Dump file can't be parsed: line 3!\nDone!\n2 instance(s) loaded.\n"
    assert Author.objects.filter(pk__in=pks).count() == 2
