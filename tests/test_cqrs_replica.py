"""CQRS replica side: django-cqrs payloads applied to replica models (app/cqrs), and the consumer
(relays/cqrs_consumer.py) on a real RabbitMQ in django-cqrs's layout."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import random
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from app.cqrs.apply import Outcome, apply, bindings, parse, receive
from app.cqrs.ordering import InstanceOrder, instance_key
from app.cqrs.payload import SignalType, TransportPayload
from tests.apps.cqrs_replica.models import Author, Book, Event, HookCall, Person
from tests.protocol import eventually, unique
from tests.servers import ConsumerProcess, run_sql, start_server
from tests.services import require_rabbitmq

_ids = itertools.count(random.randrange(10**8, 2 * 10**9, 10**6))
UPDATED = "2025-01-02T03:04:05+00:00"


def new_pk() -> int:
    """A primary key no other test (nor an earlier run on a kept database) uses."""
    return next(_ids)


def payload(cqrs_id: str, pk: int, revision: int, signal: str = "SAVE", **data: Any) -> TransportPayload:
    return TransportPayload(
        signal_type=SignalType(signal), cqrs_id=cqrs_id, instance_pk=pk,
        instance_data={"id": pk, "cqrs_revision": revision, "cqrs_updated": UPDATED, **data},
    )


def wire(cqrs_id: str, pk: int, revision: int, signal: str = "SAVE", **data: Any) -> dict[str, Any]:
    """The dict a django-cqrs master puts on the wire (``TransportPayload.to_dict``)."""
    return {
        "signal_type": signal, "cqrs_id": cqrs_id, "instance_pk": pk, "previous_data": None,
        "instance_data": {"id": pk, "cqrs_revision": revision, "cqrs_updated": UPDATED, **data},
        "correlation_id": None, "retries": 0, "expires": None, "meta": None,
    }


def author(pk: int) -> tuple[str, int] | None:
    row = Author.objects.filter(pk=pk).first()
    return None if row is None else (row.name, row.cqrs_revision)


# --- applying payloads (no broker) ----------------------------------------------------------------


def test_save_creates_the_replica() -> None:
    """A SAVE for an unknown pk creates the row with its revision."""
    pk = new_pk()
    assert apply(payload("test_author", pk, 0, name="Ann")) is Outcome.APPLIED
    assert author(pk) == ("Ann", 0)


def test_newer_save_updates() -> None:
    """A SAVE with the next revision updates the row."""
    pk = new_pk()
    apply(payload("test_author", pk, 0, name="Ann"))
    apply(payload("test_author", pk, 1, name="Bea"))
    assert author(pk) == ("Bea", 1)


def test_older_revision_is_a_no_op() -> None:
    """A SAVE older than the stored revision changes nothing (and is not a failure)."""
    pk = new_pk()
    apply(payload("test_author", pk, 3, name="new"))
    assert apply(payload("test_author", pk, 2, name="old")) is Outcome.APPLIED
    assert author(pk) == ("new", 3)


def test_duplicate_revision_is_a_no_op() -> None:
    """A SAVE with the stored revision (a redelivery) changes nothing."""
    pk = new_pk()
    apply(payload("test_author", pk, 1, name="first"))
    apply(payload("test_author", pk, 1, name="second"))
    assert author(pk) == ("first", 1)


def test_out_of_order_sequence_ends_at_the_newest() -> None:
    """Revisions applied shuffled, with duplicates, leave the newest one's data."""
    pk = new_pk()
    revisions = [3, 0, 5, 1, 5, 4, 2, 0]
    for revision in revisions:
        apply(payload("test_author", pk, revision, name=f"rev {revision}"))
    assert author(pk) == ("rev 5", 5)


def test_sync_applies_even_an_older_revision() -> None:
    """A SYNC is applied whatever its revision (django-cqrs: the master's state wins)."""
    pk = new_pk()
    apply(payload("test_author", pk, 4, name="drifted"))
    apply(payload("test_author", pk, 2, signal="SYNC", name="master's"))
    assert author(pk) == ("master's", 2)


def test_delete_removes_the_replica() -> None:
    """A DELETE removes the row; deleting it again is still success."""
    pk = new_pk()
    apply(payload("test_author", pk, 0, name="gone"))
    assert apply(payload("test_author", pk, 1, signal="DELETE")) is Outcome.APPLIED
    assert author(pk) is None
    assert apply(payload("test_author", pk, 1, signal="DELETE")) is Outcome.APPLIED


def test_mapping_renames_fields_and_drops_the_rest() -> None:
    """CQRS_MAPPING stores the master's title as name; unmapped master fields are ignored."""
    pk = new_pk()
    apply(payload("test_book", pk, 0, title="Dune", isbn="x"))
    book = Book.objects.get(pk=pk)
    assert (book.name, book.cqrs_revision) == ("Dune", 0)


def test_missing_required_field_fails() -> None:
    """A SAVE lacking a required replica field is a failure (retried by the consumer)."""
    assert apply(payload("test_author", new_pk(), 0)) is Outcome.FAILED


def test_custom_serialization_uses_the_models_hooks() -> None:
    """CQRS_CUSTOM_SERIALIZATION hands the whole master data to cqrs_create / cqrs_update."""
    pk = new_pk()
    apply(payload("test_person", pk, 0, first="Ada", last="Lovelace"))
    apply(payload("test_person", pk, 1, first="Ada", last="King"))
    assert Person.objects.get(pk=pk).full_name == "Ada King"


def test_no_db_operations_calls_the_hooks_with_meta() -> None:
    """CQRS_NO_DB_OPERATIONS models get cqrs_save / cqrs_delete calls (with meta for CQRS_META)."""
    key = unique("hook")
    save = payload("test_event", new_pk(), 7, key=key).model_copy(update={"meta": {"tenant": "t1"}})
    apply(save)
    apply(payload("test_event", new_pk(), 8, signal="DELETE", key=key))
    calls = list(HookCall.objects.filter(key=key).order_by("id").values_list("signal", "revision", "meta"))
    assert calls == [("SAVE", 7, {"tenant": "t1"}), ("DELETE", 8, None)]


def test_receive_dead_letters_an_expired_payload() -> None:
    """An expired payload is dead-lettered without being applied."""
    pk = new_pk()
    body = wire("test_author", pk, 0, name="late") | {"expires": "2020-01-01T00:00:00+00:00"}
    verdict = receive(json.dumps(body).encode())
    assert (verdict.action, verdict.reason, author(pk)) == ("dead_letter", "expired", None)


def test_receive_takes_a_naive_expires_as_utc() -> None:
    """A naive ``expires`` (a master with USE_TZ=False) is UTC: a past one is dead-lettered, not a crash."""
    pk = new_pk()
    body = wire("test_author", pk, 0, name="late") | {"expires": "2020-01-01T00:00:00"}
    verdict = receive(json.dumps(body).encode())
    assert (verdict.action, verdict.reason, author(pk)) == ("dead_letter", "expired", None)


def test_receive_dead_letters_on_an_unexpected_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """A model's should_retry_cqrs override that raises dead-letters the message instead of looping."""
    def refuse(current_retry: int, exception: BaseException | None = None) -> bool:
        raise ValueError("broken override")

    monkeypatch.setattr(Event, "should_retry_cqrs", staticmethod(refuse))
    verdict = receive(json.dumps(wire("test_event", new_pk(), 0, key=unique("odd"), fail=True)).encode())
    assert (verdict.action, verdict.reason) == ("dead_letter", "unexpected error: ValueError('broken override')")


def test_instance_order_holds_later_messages_of_a_retried_instance() -> None:
    """While an instance waits for a retry its later messages are held, in order; other instances are not."""
    order: InstanceOrder[str] = InstanceOrder()
    first = instance_key(json.dumps(wire("test_author", 1, 0)).encode())
    same = instance_key(json.dumps(wire("test_author", 1, 1, signal="DELETE")).encode())
    other = instance_key(json.dumps(wire("test_author", 2, 0)).encode())
    assert first == same and first is not None and not order.busy(first)
    order.block(first)
    assert order.busy(same) and not order.busy(other)
    order.hold(first, "delete")
    order.hold(first, "save")
    assert (order.next(first), order.busy(first), order.next(first), order.busy(first)) == ("delete", True,
                                                                                          "save", True)
    assert order.next(first) is None and not order.busy(first)


def test_instance_order_gives_back_held_messages_in_order() -> None:
    """When a retry cannot be settled, its instance's held messages are given back in order and the key freed."""
    order: InstanceOrder[str] = InstanceOrder()
    key = ("test_author", "1")
    order.block(key)
    for message in ("a", "b", "c"):
        order.hold(key, message)
    assert (order.abandon(key), order.busy(key), len(order)) == (["a", "b", "c"], False, 0)


def test_receive_retries_with_growing_delays_then_dead_letters(settings: Any) -> None:
    """A failing payload is retried with doubling delays up to CQRS_MAX_RETRIES, then dead-lettered."""
    settings.CQRS_MAX_RETRIES, settings.CQRS_RETRY_DELAY_S, settings.CQRS_RETRY_DELAY_MAX_S = 3, 1.0, 3.0
    body = json.dumps(wire("test_event", new_pk(), 0, key=unique("fail"), fail=True)).encode()
    verdicts = []
    for _ in range(4):
        verdict = receive(body)
        verdicts.append((verdict.action, verdict.delay_s))
        if verdict.payload is not None:
            body = verdict.payload.model_dump_json().encode()
    assert verdicts == [("retry", 1.0), ("retry", 2.0), ("retry", 3.0), ("dead_letter", 0.0)]


@pytest.mark.parametrize("body", [b"not json", b"[1]", json.dumps({"signal_type": "SAVE"}).encode(),
                                  json.dumps(wire("no_such_model", 1, 0)).encode(),
                                  json.dumps(wire("test_author", 1, 0, signal="PATCH")).encode()])
def test_malformed_bodies_are_refused(body: bytes) -> None:
    """Bodies that are not a payload of a known replica model are refused with a reason."""
    assert isinstance(parse(body), str)


def test_any_replica_models_payload_is_taken() -> None:
    """As django-cqrs: a --cqrs-id filter narrows the bindings only; any replica model's payload is taken."""
    assert not isinstance(parse(json.dumps(wire("test_book", 1, 0, title="x")).encode()), str)


def test_bindings_follow_django_cqrs() -> None:
    """The queue gets each cqrs_id and cqrs.<queue>.<id>; the dead letter queue its own key."""
    pairs = bindings("svc", {"test_author"})
    assert pairs == [("svc", "test_author"), ("svc", "cqrs.svc.test_author"),
                     ("dead_letter_svc", "cqrs.dead_letter_svc.test_author")]


# --- the consumer on RabbitMQ -----------------------------------------------------------------------


@dataclass
class Broker:
    url: str
    exchange: str
    queue: str
    channel: Any = None

    @property
    def env(self) -> dict[str, str]:
        return {"AMQP_URL": self.url, "CQRS_EXCHANGE": self.exchange, "CQRS_QUEUE": self.queue,
                "CQRS_RETRY_DELAY_S": "0.05", "CQRS_MAX_RETRIES": "2"}

    async def publish(self, body: dict[str, Any] | bytes, routing_key: str) -> None:
        """Publish as a django-cqrs master does, once the consumer's binding routes it."""
        import aio_pika

        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        exchange = await self.channel.get_exchange(self.exchange)
        message = aio_pika.Message(raw, content_type="text/plain", delivery_mode=aio_pika.DeliveryMode.PERSISTENT)
        async with asyncio.timeout(30):
            while True:
                try:
                    await exchange.publish(message, routing_key, mandatory=True)
                    return
                except aio_pika.exceptions.PublishError:  # not bound yet (a server's consumer starting)
                    await asyncio.sleep(0.05)  # bounded-poll

    async def dead_letters(self, count: int) -> list[Any]:
        """The first ``count`` messages of dead_letter_<queue>."""
        queue = await self.channel.declare_queue(f"dead_letter_{self.queue}", durable=True)
        got: list[Any] = []
        async with asyncio.timeout(30):
            while len(got) < count:
                message = await queue.get(no_ack=True, fail=False)
                if message is None:
                    await asyncio.sleep(0.05)  # bounded-poll
                else:
                    got.append(message)
        return got


@pytest.fixture
async def broker() -> AsyncIterator[Broker]:
    import aio_pika

    url = require_rabbitmq()
    box = Broker(url, unique("test.cqrs"), unique("replica"))
    connection = await aio_pika.connect(url, timeout=10)
    box.channel = await connection.channel(on_return_raises=True)
    await box.channel.declare_exchange(box.exchange, "topic", durable=True)
    try:
        yield box
    finally:
        for name in (box.queue, f"dead_letter_{box.queue}"):
            await box.channel.queue_delete(name)
        await box.channel.exchange_delete(box.exchange)
        await connection.close()


@pytest.fixture
def consumer(broker: Broker) -> Iterator[ConsumerProcess]:
    proc = ConsumerProcess(os.environ["DATABASE_URL"], broker.env)
    proc.start()
    yield proc
    proc.stop()


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


def hook_calls(key: str) -> list[tuple[str, int]]:
    return list(HookCall.objects.filter(key=key).order_by("id").values_list("signal", "revision"))


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
    proc = ConsumerProcess(database_url, broker.env | {"PGAPPNAME": name})
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
