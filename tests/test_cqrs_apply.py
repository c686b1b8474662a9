"""CQRS replica side without a broker: django-cqrs payloads applied to replica models (app/cqrs/apply.py,
replica.py), the per-instance order (ordering.py) and the RabbitMQ bindings."""

from __future__ import annotations

import json
from typing import Any

import pytest

from app.cqrs.apply import Outcome, apply, bindings, parse, receive
from app.cqrs.ordering import InstanceOrder, instance_key
from tests.apps.cqrs_replica.models import Book, Event, HookCall, Person
from tests.cqrs_replica import author, new_pk, payload, wire
from tests.protocol import unique


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


