"""The CQRS replica consumer (relays/cqrs_consumer.py) on a real RabbitMQ in django-cqrs's layout:
applying, dead letters, retries in order per instance, outages and the server's own consumer."""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta

import pytest

from tests.apps.cqrs_replica.models import Author, Book
from tests.cqrs_replica import Broker, author, hook_calls, new_pk, open_broker, wire
from tests.protocol import eventually, unique
from tests.servers import ConsumerProcess, run_sql, start_server


@pytest.fixture
async def broker() -> AsyncIterator[Broker]:
    async with open_broker() as box:
        yield box


@pytest.fixture
def consumer(broker: Broker) -> Iterator[ConsumerProcess]:
    proc = ConsumerProcess(os.environ["DATABASE_URL"], broker.env)
    proc.start()
    yield proc
    proc.stop()


# --- the consumer on RabbitMQ -----------------------------------------------------------------------


async def test_django_cqrs_payloads_are_applied(broker: Broker, consumer: ConsumerProcess) -> None:
    """SAVE and DELETE payloads in django-cqrs's layout (routing key = cqrs_id) are applied in order."""
    kept, deleted = new_pk(), new_pk()
    await broker.publish(wire("test_author", kept, 0, name="a"), "test_author")
    await broker.publish(wire("test_author", deleted, 0, name="b"), "test_author")
    await broker.publish(wire("test_author", kept, 1, name="a2"), "test_author")
    await broker.publish(wire("test_author", deleted, 1, signal="DELETE"), "test_author")
    await broker.publish(wire("test_book", kept, 0, title="t"), "test_book")
    await eventually(lambda: Book.objects.filter(pk=kept).exists(), message="the last payload applied")
    assert (author(kept), author(deleted)) == (("a2", 1), None)


async def test_direct_sync_routing_key_is_consumed(broker: Broker, consumer: ConsumerProcess) -> None:
    """A SYNC sent to this replica alone (cqrs.<queue>.<cqrs_id>) is applied."""
    pk = new_pk()
    await broker.publish(wire("test_author", pk, 9, signal="SYNC", name="synced"), f"cqrs.{broker.queue}.test_author")
    await eventually(lambda: author(pk) == ("synced", 9))


async def test_malformed_body_is_dead_lettered(broker: Broker, consumer: ConsumerProcess) -> None:
    """A body that is not JSON lands unchanged in dead_letter_<queue>; the next payload is applied."""
    pk = new_pk()
    await broker.publish(b"{not json", "test_author")
    await broker.publish(wire("test_author", pk, 0, name="after"), "test_author")
    [dead] = await broker.dead_letters(1)
    assert dead.body == b"{not json"
    assert dead.delivery_mode.value == 2
    await eventually(lambda: author(pk) == ("after", 0))


@pytest.mark.server_errors(r"CQRS SAVE failed after 2 retries")
async def test_failing_payload_is_retried_then_dead_lettered(broker: Broker, consumer: ConsumerProcess) -> None:
    """A payload whose apply keeps failing is retried CQRS_MAX_RETRIES times, then dead-lettered
    with its retries count and django-cqrs's TTL."""
    key = unique("fail")
    await broker.publish(wire("test_event", new_pk(), 0, key=key, fail=True), "test_event")
    [dead] = await broker.dead_letters(1)
    body = json.loads(dead.body)
    assert (body["instance_data"]["key"], body["retries"], dead.expiration) == (key, 2, 864000.0)
    await eventually(lambda: sum("CQRS SAVE failed (retry" in line for line in consumer.output) == 2,
                     message="two retries logged")



async def test_retried_save_is_not_overtaken_by_a_later_delete(broker: Broker, consumer: ConsumerProcess) -> None:
    """A SAVE that fails once, then a DELETE of the same instance: the DELETE waits for the retry and ends it."""
    key, pk = unique("order"), new_pk()
    await broker.publish(wire("test_event", pk, 0, key=key, fail_once=True), "test_event")
    await broker.publish(wire("test_event", pk, 1, signal="DELETE", key=key), "test_event")
    await eventually(lambda: len(hook_calls(key)) == 3, message="the failure, the retry and the delete")
    assert hook_calls(key) == [("FAILED", 0), ("SAVE", 0), ("DELETE", 1)]


async def test_retried_sync_is_not_overtaken_by_a_later_save(broker: Broker, consumer: ConsumerProcess) -> None:
    """A SYNC that fails once, then a newer SAVE of the same instance: the SAVE is applied last."""
    key, pk = unique("order"), new_pk()
    await broker.publish(wire("test_event", pk, 1, signal="SYNC", key=key, fail_once=True), "test_event")
    await broker.publish(wire("test_event", pk, 2, key=key), "test_event")
    await eventually(lambda: len(hook_calls(key)) == 3, message="the failure, the retried sync and the save")
    assert hook_calls(key) == [("FAILED", 1), ("SYNC", 1), ("SAVE", 2)]


def database_backends(database_url: str, application_name: str) -> int:
    import psycopg

    with psycopg.connect(database_url, autocommit=True) as conn:
        row = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name = %s",
                           (application_name,)).fetchone()
    return int(row[0]) if row else 0


@pytest.mark.skipif(not os.environ.get("DATABASE_URL", "").startswith("postgres"),
                    reason="kills the consumer's PostgreSQL backends")
async def test_database_restart_loses_and_dead_letters_nothing(broker: Broker) -> None:
    """The consumer's database connection killed mid-stream: every change is applied afterwards, none dead-lettered."""
    database_url, name = os.environ["DATABASE_URL"], unique("cqrs-consumer")
    # A short reconnection back-off: the consumer tries its database more often during the outage, and
    # its first try after it comes sooner.
    proc = ConsumerProcess(database_url, broker.env | {"PGAPPNAME": name, "CQRS_RECONNECT_BASE_S": "0.25"})
    proc.start()
    try:
        pks = [new_pk() for _ in range(100)]

        async def publish_all() -> None:
            for pk in pks:
                await broker.publish(wire("test_author", pk, 0, name="kept"), "test_author")

        publishing = asyncio.create_task(publish_all())
        await eventually(lambda: Author.objects.filter(pk__in=pks).exists(), message="some applied")
        assert database_backends(database_url, name) > 0
        # An outage of two seconds: every connection the consumer opens meanwhile is killed at once.
        outage_end = asyncio.get_running_loop().time() + 2.0
        while asyncio.get_running_loop().time() < outage_end:
            await asyncio.to_thread(run_sql, database_url, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                                    f" WHERE application_name = '{name}'")
            await asyncio.sleep(0.02)  # bounded-poll: the outage's own pace
        await publishing
        await eventually(lambda: Author.objects.filter(pk__in=pks).count() == len(pks), timeout=60,
                         message="every change applied after the reconnect")
        dead = await broker.channel.declare_queue(f"dead_letter_{broker.queue}", durable=True)
        assert dead.declaration_result.message_count == 0
        assert not [line for line in proc.output if "CQRS SAVE failed" in line], "an outage counted as a retry"
    finally:
        proc.stop()


async def test_expired_payload_is_dead_lettered_unapplied(broker: Broker, consumer: ConsumerProcess) -> None:
    """A payload past its expires goes to the dead letter queue and is not applied."""
    pk = new_pk()
    expired = (datetime.now(UTC) - timedelta(seconds=1)).replace(microsecond=0).isoformat()
    await broker.publish(wire("test_author", pk, 0, name="late") | {"expires": expired}, "test_author")
    [dead] = await broker.dead_letters(1)
    assert json.loads(dead.body)["instance_pk"] == pk
    assert author(pk) is None


async def test_killed_consumer_loses_nothing(broker: Broker, consumer: ConsumerProcess) -> None:
    """After a SIGKILL mid-stream (a part applied) and a restart, every instance ends at its last revision."""
    pks = [new_pk() for _ in range(60)]

    def finished() -> int:
        return Author.objects.filter(pk__in=pks, cqrs_revision=4).count()

    async def publish_all() -> None:
        for revision in range(5):
            for pk in pks:
                await broker.publish(wire("test_author", pk, revision, name=f"r{revision}"), "test_author")

    publishing = asyncio.create_task(publish_all())
    await eventually(lambda: Author.objects.filter(pk__in=pks).exists(), message="some applied")
    consumer.kill()
    await publishing
    assert finished() < len(pks), "killed after everything was applied: the test proves nothing"
    consumer.start()
    await eventually(lambda: [author(pk) for pk in pks] == [("r4", 4)] * len(pks), timeout=60,
                     message="every instance at revision 4")


async def test_server_consumes_when_cqrs_queue_is_set(broker: Broker) -> None:
    """``manage.py serve`` with CQRS_QUEUE runs the consumer beside the server."""
    server = start_server(os.environ["DATABASE_URL"], **broker.env)
    try:
        pk = new_pk()
        await broker.publish(wire("test_author", pk, 0, name="served"), "test_author")
        await eventually(lambda: author(pk) == ("served", 0))
    finally:
        server.stop()


async def test_server_leaves_the_queue_to_cqrs_consume_when_told(broker: Broker) -> None:
    """With CQRS_CONSUME_IN_SERVER=false a server with CQRS_QUEUE consumes nothing: a change waits for
    ``cqrs_consume``, the queue's only consumer."""
    server = start_server(os.environ["DATABASE_URL"], **broker.env, CQRS_CONSUME_IN_SERVER="false")
    try:
        pk = new_pk()
        # Queued before any consumer: the server had all of cqrs_consume's start to take it.
        queue = await broker.channel.declare_queue(broker.queue, durable=True)
        await queue.bind(broker.exchange, "test_author")
        await broker.publish(wire("test_author", pk, 0, name="waited"), "test_author")
        proc = ConsumerProcess(os.environ["DATABASE_URL"], broker.env)
        proc.start()
        try:
            await eventually(lambda: author(pk) == ("waited", 0), message="applied by cqrs_consume")
            queue = await broker.channel.declare_queue(broker.queue, durable=True, passive=True)
            assert queue.declaration_result.consumer_count == 1, "the server consumes the queue too"
        finally:
            proc.stop()
    finally:
        server.stop()


def test_an_ack_on_a_channel_the_broker_closed_is_an_outage() -> None:
    """An ack failing on a channel RabbitMQ's shutdown closed is logged as unavailable (WARNING), not a failure."""
    import aio_pika

    from relays.cqrs_consumer import _unavailable

    trouble = _unavailable(aio_pika.exceptions.ChannelInvalidStateError())
    assert trouble is not None and trouble.level == logging.WARNING
