"""CQRS master side: MasterMixin changes into the outbox as django-cqrs payloads, in the
transaction, and on RabbitMQ in django-cqrs's own layout."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

import orjson
import pytest
from django.db import transaction
from django.db.models import F
from django.test import override_settings
from django.utils import timezone

from app.cqrs.events import CONTENT_TYPE
from app.outbox.models import OutboxEvent, Status
from tests.apps.cqrs_master.models import Author, Book, Counter, Draft, Shelf
from tests.outbox import AmqpInbox, clear_outbox, running_relays
from tests.protocol import eventually
from tests.services import require_rabbitmq

# django-cqrs's TransportPayload.to_dict() keys, all always present.
PAYLOAD_KEYS = {"signal_type", "cqrs_id", "instance_data", "previous_data", "instance_pk", "correlation_id",
                "retries", "expires", "meta"}


class Boom(Exception):
    """Raised to roll a transaction back."""


@pytest.fixture(autouse=True)
def _clean_outbox(_db_access: None) -> Iterator[None]:
    clear_outbox()
    yield


def payloads(cqrs_id: str | None = None) -> list[dict[str, Any]]:
    """The CQRS payloads in the outbox, in emission order."""
    rows = OutboxEvent.objects.filter(datacontenttype=CONTENT_TYPE).order_by("id")
    found = [orjson.loads(row.data) for row in rows]
    return [p for p in found if cqrs_id is None or p["cqrs_id"] == cqrs_id]


def django_cqrs_roundtrip(body: bytes) -> dict[str, Any]:
    """What django-cqrs's ``TransportPayload.from_message(json).to_dict()`` gives for a body
    (dataclasses.py: the same nine keys; expires parsed and written back without microseconds)."""
    dct = json.loads(body)
    expires = dct["expires"] and datetime.fromisoformat(dct["expires"]).replace(microsecond=0).isoformat()
    return {
        "signal_type": dct["signal_type"], "cqrs_id": dct["cqrs_id"], "instance_data": dct["instance_data"],
        "previous_data": dct.get("previous_data"), "instance_pk": dct.get("instance_pk"),
        "correlation_id": dct.get("correlation_id"), "retries": dct.get("retries") or 0, "expires": expires,
        "meta": dct.get("meta"),
    }


def test_create_emits_save_with_django_cqrs_payload() -> None:
    """A created instance emits SAVE: every field, revision 0, its updated time, expiry a day on."""
    before = timezone.now()
    author = Author.objects.create(name="Ursula", born=date(1929, 10, 21))
    [payload] = payloads()
    assert set(payload) == PAYLOAD_KEYS
    assert payload["signal_type"] == "SAVE" and payload["cqrs_id"] == "test_author"
    assert payload["instance_pk"] == author.pk
    assert payload["instance_data"] == {
        "id": author.pk, "name": "Ursula", "born": "1929-10-21", "cqrs_revision": 0,
        "cqrs_updated": str(author.cqrs_updated),
    }
    assert (payload["previous_data"], payload["correlation_id"], payload["retries"], payload["meta"]) == (
        None, None, 0, {})
    expires = datetime.fromisoformat(payload["expires"])
    assert before.replace(microsecond=0) + timedelta(days=1) <= expires <= timezone.now() + timedelta(days=1)


def test_event_is_typed_keyed_and_marked_as_cqrs() -> None:
    """The outbox event: type cqrs.<id>.save, key <id>:<pk>, django-cqrs data content type."""
    author = Author.objects.create(name="Le Guin")
    row = OutboxEvent.objects.get()
    assert (row.type, row.key, row.datacontenttype, row.subject) == (
        "cqrs.test_author.save", f"test_author:{author.pk}", CONTENT_TYPE, str(author.pk))


def test_update_increments_revision_and_updated_time() -> None:
    """Each save emits SAVE with the next revision and a later cqrs_updated."""
    author = Author.objects.create(name="A")
    author.name = "B"
    author.save()
    author.name = "C"
    author.save()
    revisions = [(p["instance_data"]["cqrs_revision"], p["instance_data"]["name"]) for p in payloads()]
    assert revisions == [(0, "A"), (1, "B"), (2, "C")]
    updated = [p["instance_data"]["cqrs_updated"] for p in payloads()]
    assert updated == sorted(updated) and len(set(updated)) == 3
    author.refresh_from_db()
    assert author.cqrs_revision == 2


def test_delete_emits_delete_with_next_revision() -> None:
    """Deleting emits DELETE with the pk as id and the revision after the last one."""
    author = Author.objects.create(name="gone")
    pk = author.pk
    author.delete()
    delete = payloads()[-1]
    assert delete["signal_type"] == "DELETE" and delete["instance_pk"] == pk
    assert set(delete["instance_data"]) == {"id", "cqrs_revision", "cqrs_updated"}
    assert (delete["instance_data"]["id"], delete["instance_data"]["cqrs_revision"]) == (pk, 1)


def test_queryset_delete_emits_delete_per_row() -> None:
    """A queryset delete (cascading to books too) emits DELETE for every row it removes."""
    author = Author.objects.create(name="cascade")
    Book.objects.create(title="one", author=author)
    Author.objects.filter(pk=author.pk).delete()
    assert sorted((p["cqrs_id"], p["signal_type"]) for p in payloads() if p["signal_type"] == "DELETE") == [
        ("test_author", "DELETE"), ("test_book", "DELETE")]


def test_rolled_back_changes_emit_nothing() -> None:
    """Create, update and delete in a rolled-back transaction leave no event."""
    with pytest.raises(Boom), transaction.atomic():
        author = Author.objects.create(name="never")
        author.name = "seen"
        author.save()
        author.delete()
        assert len(payloads()) == 3  # emitted inside the transaction
        raise Boom
    assert payloads() == []


def test_tracked_fields_send_previous_values() -> None:
    """CQRS_TRACKED_FIELDS: creation reports them as previously null (a foreign key by its column, as
    django-cqrs 3.1), an update their old values (a foreign key by its field name), untracked changes nothing."""
    first, second = Author.objects.create(name="first"), Author.objects.create(name="second")
    book = Book.objects.create(title="Draft title", author=first)
    book.title = "Final title"
    book.save()
    book = Book.objects.get(pk=book.pk)
    book.author = second
    book.pages = 300
    book.save()
    book.pages = 301
    book.save()
    previous = [p["previous_data"] for p in payloads("test_book")]
    assert previous == [{"title": None, "author_id": None}, {"title": "Draft title"}, {"author": first.pk}, {}]


def test_cqrs_fields_limit_instance_data() -> None:
    """CQRS_FIELDS: only those fields, plus the revision and updated time."""
    author = Author.objects.create(name="a")
    book = Book.objects.create(title="t", author=author, pages=12)
    [payload] = payloads("test_book")
    assert payload["instance_data"] == {"id": book.pk, "title": "t", "author": author.pk, "cqrs_revision": 0,
                                        "cqrs_updated": str(book.cqrs_updated)}


def test_serializer_builds_instance_data() -> None:
    """CQRS_SERIALIZER: its .data is instance_data, with the revision and updated time added."""
    shelf = Shelf.objects.create(label="sci-fi")
    [payload] = payloads("test_shelf")
    assert payload["instance_data"] == {"id": shelf.pk, "label": "SCI-FI", "cqrs_revision": 0,
                                        "cqrs_updated": str(shelf.cqrs_updated)}


def test_produce_false_emits_nothing() -> None:
    """CQRS_PRODUCE = False: saves and deletes emit nothing, the revision still counts."""
    draft = Draft.objects.create(text="x")
    draft.save()
    draft.delete()
    assert payloads() == []


def test_save_of_some_fields_is_not_replicated() -> None:
    """save(update_fields=...) neither bumps the revision nor emits, unless update_cqrs_fields=True."""
    author = Author.objects.create(name="a")
    author.name = "b"
    author.save(update_fields=["name"])
    assert len(payloads()) == 1
    author.name = "c"
    author.save(update_fields=["name"], update_cqrs_fields=True)
    assert [(p["instance_data"]["name"], p["instance_data"]["cqrs_revision"]) for p in payloads()] == [
        ("a", 0), ("c", 1)]


def test_cqrs_sync_emits_sync_of_stored_state() -> None:
    """cqrs_sync() emits SYNC with the stored row; an unsaved instance cannot be synced."""
    author = Author.objects.create(name="stored")
    Author.objects.filter(pk=author.pk).update(name="changed behind")
    assert author.cqrs_sync() is True
    sync = payloads()[-1]
    assert sync["signal_type"] == "SYNC" and sync["instance_data"]["name"] == "changed behind"
    assert OutboxEvent.objects.order_by("id").last().type == "cqrs.test_author.sync"  # type: ignore[union-attr]
    assert Author(name="unsaved").cqrs_sync() is False


def test_bulk_create_emits_save_per_row() -> None:
    """Model.cqrs.bulk_create emits one SAVE per created row, with tracked fields as new."""
    author = Author.objects.create(name="bulk")
    books = Book.cqrs.bulk_create([Book(title=f"b{n}", author=author) for n in range(3)])
    saved = payloads("test_book")
    assert [p["instance_pk"] for p in saved] == [b.pk for b in books]
    assert {p["instance_data"]["cqrs_revision"] for p in saved} == {0}
    assert [p["previous_data"] for p in saved] == [{"title": None, "author_id": None}] * 3


def test_bulk_update_bumps_revisions_and_emits_per_row() -> None:
    """Model.cqrs.bulk_update increments each row's revision and emits its SAVE, with the tracked
    values before (by column, as django-cqrs)."""
    author = Author.objects.create(name="bulk")
    books = Book.cqrs.bulk_create([Book(title=f"b{n}", author=author) for n in range(2)])
    clear_outbox()
    count = Book.cqrs.bulk_update(Book.objects.filter(title__startswith="b", author=author), title="renamed")
    assert count == 2
    saved = payloads("test_book")
    assert [(p["instance_pk"], p["instance_data"]["title"], p["instance_data"]["cqrs_revision"]) for p in saved] == [
        (b.pk, "renamed", 1) for b in books]
    assert [p["previous_data"] for p in saved] == [{"title": f"b{n}", "author_id": author.pk} for n in range(2)]


def test_bulk_helpers_roll_back_with_the_transaction() -> None:
    """Rows and events of the bulk helpers go with the caller's transaction."""
    author = Author.objects.create(name="bulk")
    clear_outbox()
    with pytest.raises(Boom), transaction.atomic():
        Book.cqrs.bulk_create([Book(title="x", author=author)])
        Book.cqrs.bulk_update(Book.objects.filter(author=author), title="y")
        raise Boom
    assert payloads() == [] and not Book.objects.filter(author=author).exists()


def test_save_with_f_expression_sends_the_stored_value() -> None:
    """A save of ``F("views") + 1`` sends the value it stored, and the instance holds it after."""
    counter = Counter.objects.create(views=4)
    clear_outbox()
    counter.views = F("views") + 1
    counter.save()
    assert payloads()[0]["instance_data"]["views"] == 5
    assert counter.views == 5


def test_tracked_field_saved_with_f_expression_is_tracked_by_value() -> None:
    """A tracked field outside CQRS_FIELDS saved as an expression is refreshed: the next save
    reports its previous value, not the expression."""
    counter = Counter.objects.create(hits=1)
    counter.hits = F("hits") + 1
    counter.save()
    clear_outbox()
    counter.hits = 10
    counter.save()
    assert payloads()[0]["previous_data"] == {"hits": 2}


def test_decimal_is_a_json_number() -> None:
    """A Decimal goes as a JSON number, as django-cqrs's ujson writes it (Decimal("1.50") -> 1.5)."""
    Counter.objects.create(price=Decimal("1.50"))
    [row] = OutboxEvent.objects.filter(datacontenttype=CONTENT_TYPE)
    assert json.loads(row.data)["instance_data"]["price"] == 1.5


@override_settings(CQRS_MESSAGE_TTL_S=0)
def test_ttl_zero_never_expires() -> None:
    """CQRS_MESSAGE_TTL_S=0: expires is null."""
    Author.objects.create(name="forever")
    assert payloads()[0]["expires"] is None


@override_settings(CQRS_CORRELATION_FUNCTION="tests.test_cqrs_master.correlate")
def test_correlation_function_sets_correlation_id() -> None:
    """CQRS_CORRELATION_FUNCTION is called as django-cqrs's correlation_function."""
    author = Author.objects.create(name="c")
    assert payloads()[0]["correlation_id"] == f"SAVE/test_author/{author.pk}/None"


def correlate(signal_type: str, cqrs_id: str, instance_pk: Any, queue: str | None) -> str:
    return f"{signal_type}/{cqrs_id}/{instance_pk}/{queue}"


# --- RabbitMQ: django-cqrs's RabbitMQTransport layout -----------------------------------------


@pytest.fixture
def cqrs_amqp(_db_access: None) -> Iterator[str]:
    """RabbitMQ as the outbox target, with a CQRS exchange of the test's own."""
    url = require_rabbitmq()
    with override_settings(AMQP_URL=url, OUTBOX_TARGET="rabbitmq", CQRS_EXCHANGE=f"test.cqrs.{uuid.uuid4().hex[:8]}",
                           OUTBOX_POLL_INTERVAL_S=0.2):
        yield url


@pytest.fixture
async def replica_queue(cqrs_amqp: str) -> AsyncIterator[AmqpInbox]:
    """A queue bound as a django-cqrs replica binds it: routing key = the cqrs_id."""
    from django.conf import settings

    async with AmqpInbox(cqrs_amqp, settings.CQRS_EXCHANGE, binding="test_author") as box:
        await box.consume()
        yield box


async def test_rabbitmq_message_is_django_cqrs_layout(replica_queue: AmqpInbox) -> None:
    """On RabbitMQ a SAVE is the payload JSON, text/plain, persistent, routed by cqrs_id, no CloudEvents headers."""
    author = Author.objects.create(name="wire")
    expected = payloads()[0]
    async with running_relays():
        [message] = await replica_queue.until(1)
    assert message.routing_key == "test_author" and message.exchange == replica_queue.exchange_name
    assert message.content_type == "text/plain" and message.delivery_mode.value == 2
    assert not any(name.startswith("cloudEvents:") for name in message.headers)
    assert json.loads(message.body) == django_cqrs_roundtrip(message.body) == expected
    assert expected["instance_pk"] == author.pk


async def test_rabbitmq_instance_events_arrive_in_order(replica_queue: AmqpInbox) -> None:
    """One instance's SAVE, SAVEs and DELETE arrive in the order they were made."""
    author = Author.objects.create(name="v0")
    for n in range(1, 5):
        author.name = f"v{n}"
        author.save()
    author.delete()
    async with running_relays(count=2):
        messages = await replica_queue.until(6)
    got = [(json.loads(m.body)["signal_type"], json.loads(m.body)["instance_data"]["cqrs_revision"]) for m in messages]
    assert got == [("SAVE", 0), ("SAVE", 1), ("SAVE", 2), ("SAVE", 3), ("SAVE", 4), ("DELETE", 5)]


@override_settings(OUTBOX_AMQP_MANDATORY=True)
async def test_change_no_replica_is_bound_to_is_published(cqrs_amqp: str) -> None:
    """With no queue bound to its cqrs_id, a change is dropped by RabbitMQ and settled as published
    (as django-cqrs), so the instance's later changes are not held behind it."""
    author = Author.objects.create(name="nobody listens")
    author.name = "still nobody"
    author.save()
    async with running_relays():
        await eventually(
            lambda: set(OutboxEvent.objects.values_list("status", flat=True)) == {Status.PUBLISHED}, 15,
            "both changes published")
