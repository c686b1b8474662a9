"""Outbox rules without a database: back-off, failure outcome, publish groups, CloudEvents encoding."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from django.test import override_settings
from pydantic import ValidationError

from app.outbox.cloudevents import EventIn, Outbound, encode_data
from app.outbox.dispatch import ordered_groups
from app.outbox.models import Status
from app.outbox.retries import after_failure, backoff_s

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
BASE, CAP = 2.0, 60.0


def full(attempts: int) -> float:
    """The back-off with no jitter taken off."""
    return backoff_s(attempts, BASE, CAP, rand=lambda: 1.0)


def outbound(pk: int, key: str | None = None, **fields: Any) -> Outbound:
    values: dict[str, Any] = {
        "pk": pk, "id": f"ev-{pk}", "source": "/orders", "type": "com.example.order.created", "time": NOW,
        "datacontenttype": None, "dataschema": None, "subject": None, "data": None, "key": key,
        "target": "topic", "destination": "",
    }
    values.update(fields)
    return Outbound(**values)


# --- retries.backoff_s ---------------------------------------------------------------------------


def test_backoff_doubles_per_attempt() -> None:
    """Without jitter the delay is base, 2 x base, 4 x base ... for attempts 1, 2, 3 ..."""
    assert [full(n) for n in (1, 2, 3, 4)] == [BASE, 2 * BASE, 4 * BASE, 8 * BASE]


def test_backoff_is_capped() -> None:
    """However many attempts, the delay never exceeds the maximum."""
    assert full(30) == CAP
    assert backoff_s(30, BASE, CAP) <= CAP


def test_backoff_jitter_takes_off_at_most_half() -> None:
    """rand() = 0 halves the delay, rand() = 1 keeps it whole, real randomness stays in between."""
    assert backoff_s(3, BASE, CAP, rand=lambda: 0.0) == 2 * BASE
    assert backoff_s(3, BASE, CAP, rand=lambda: 1.0) == 4 * BASE
    assert all(2 * BASE <= backoff_s(3, BASE, CAP) <= 4 * BASE for _ in range(200))


def test_backoff_deterministic_with_rand() -> None:
    """The same rand gives the same delay."""
    assert backoff_s(5, BASE, CAP, rand=lambda: 0.25) == backoff_s(5, BASE, CAP, rand=lambda: 0.25) == 20.0


# --- retries.after_failure -----------------------------------------------------------------------


def test_failure_before_last_attempt_retries_later() -> None:
    """A failure with attempts left is a retry, due after the back-off."""
    status, due = after_failure(2, NOW, max_attempts=3, base_s=BASE, max_s=CAP, rand=lambda: 0.5)
    assert status == Status.RETRY
    assert due == NOW + timedelta(seconds=backoff_s(2, BASE, CAP, rand=lambda: 0.5))
    assert due > NOW


def test_failure_at_max_attempts_is_final() -> None:
    """The max_attempts-th failure (or later) leaves the event failed."""
    for attempts in (3, 4):
        assert after_failure(attempts, NOW, max_attempts=3, base_s=BASE, max_s=CAP) == (Status.FAILED, NOW)


# --- dispatch.ordered_groups ---------------------------------------------------------------------


def test_groups_per_key_in_pk_order() -> None:
    """Events of one key form one list in pk order, whatever order they came in."""
    events = [outbound(5, "a"), outbound(2, "b"), outbound(1, "a"), outbound(4, "b"), outbound(3, "a")]
    groups = [[e.pk for e in group] for group in ordered_groups(events)]
    assert groups == [[1, 3, 5], [2, 4]]


def test_keyless_events_go_alone() -> None:
    """Each event without a key is a group of its own."""
    events = [outbound(3), outbound(1, "a"), outbound(2)]
    groups = [[e.pk for e in group] for group in ordered_groups(events)]
    assert sorted(groups) == [[1], [2], [3]]


# --- cloudevents.encode_data ---------------------------------------------------------------------


def test_json_is_the_default() -> None:
    """Data without a content type is encoded as JSON and labelled application/json."""
    encoded, content_type = encode_data({"id": 7, "ok": True}, None)
    assert content_type == "application/json"
    assert orjson.loads(encoded or b"") == {"id": 7, "ok": True}


def test_json_suffix_types_are_json() -> None:
    """A +json content type is JSON-encoded and kept as given."""
    assert encode_data(["x"], "application/vnd.example+json") == (b'["x"]', "application/vnd.example+json")


def test_no_data_stays_absent() -> None:
    """None is no data, not JSON null."""
    assert encode_data(None, None) == (None, None)


def test_bytes_are_octet_stream() -> None:
    """Bytes without a content type are sent as they are, as application/octet-stream."""
    assert encode_data(b"\x00\xff", None) == (b"\x00\xff", "application/octet-stream")


def test_bytes_labelled_json_must_be_json() -> None:
    """Bytes under a JSON content type are taken as they are only when they are JSON."""
    assert encode_data(b'{"a": 1}', "application/json") == (b'{"a": 1}', "application/json")
    with pytest.raises(ValueError, match="not JSON"):
        encode_data(b"\x00\xff", "application/json")


def test_text_with_text_type() -> None:
    """A str with a text/* content type is sent as UTF-8, not as a JSON string."""
    assert encode_data("grüße", "text/plain") == ("grüße".encode(), "text/plain")


def test_dict_with_non_json_type_refused() -> None:
    """Structured data under a non-JSON content type is refused."""
    with pytest.raises(ValueError, match="must be bytes or str"):
        encode_data({"a": 1}, "text/plain")


def test_non_serialisable_refused() -> None:
    """Data JSON cannot represent is refused as a ValueError."""
    with pytest.raises(ValueError, match="not JSON-serialisable"):
        encode_data({"when": object()}, None)


@override_settings(OUTBOX_MAX_DATA_BYTES=8)
def test_size_cap() -> None:
    """Data up to OUTBOX_MAX_DATA_BYTES is taken, one byte more is refused."""
    assert encode_data(b"12345678", None)[0] == b"12345678"
    with pytest.raises(ValueError, match="OUTBOX_MAX_DATA_BYTES=8"):
        encode_data(b"123456789", None)


# --- cloudevents.EventIn -------------------------------------------------------------------------


def event(**fields: Any) -> EventIn:
    return EventIn(**{"type": "com.example.thing", "source": "/things", **fields})


@pytest.mark.parametrize("name", ["a", "traceparent0", "x" * 20, "123"])
def test_extension_names_accepted(name: str) -> None:
    """Extension names of 1-20 lower-case letters or digits are taken."""
    assert event(extensions={name: "v"}).extensions == {name: "v"}


@pytest.mark.parametrize("name", ["", "Trace", "trace-id", "trace_id", "x" * 21, "ümlaut"])
def test_extension_names_refused(name: str) -> None:
    """Extension names with other characters, or too long, are refused."""
    with pytest.raises(ValidationError, match="lower-case letters or digits"):
        event(extensions={name: "v"})


@pytest.mark.parametrize("name", ["id", "source", "data", "specversion", "datacontenttype", "partitionkey"])
def test_reserved_extension_names_refused(name: str) -> None:
    """Core attribute names and partitionkey (set from the key) cannot be extensions."""
    with pytest.raises(ValidationError, match="reserved"):
        event(extensions={name: "v"})


@pytest.mark.parametrize("value", [-(2**31), 2**31 - 1, True])
def test_int32_extensions_accepted(value: int) -> None:
    """Integers within 32 bits (and booleans) are valid extension values."""
    assert event(extensions={"n": value}).extensions["n"] == value


@pytest.mark.parametrize("value", [-(2**31) - 1, 2**31])
def test_int_extensions_beyond_32_bits_refused(value: int) -> None:
    """Integers outside the signed 32-bit range are refused."""
    with pytest.raises(ValidationError, match="32 bits"):
        event(extensions={"n": value})


def test_naive_time_refused() -> None:
    """A time without an offset is refused; an aware one is kept."""
    assert event(time=NOW).time == NOW
    with pytest.raises(ValidationError, match="timezone-aware"):
        event(time=NOW.replace(tzinfo=None))


def test_empty_type_refused() -> None:
    """The type attribute must not be empty."""
    with pytest.raises(ValidationError, match="type"):
        event(type="")


def test_unknown_field_refused() -> None:
    """A field EventIn does not know is refused rather than dropped."""
    with pytest.raises(ValidationError, match="colour"):
        event(colour="red")


def test_undecodable_data_refused_on_validation() -> None:
    """Data its content type cannot carry is refused when the event is built."""
    with pytest.raises(ValidationError, match="must be bytes or str"):
        event(data={"a": 1}, datacontenttype="text/csv")


# --- cloudevents.Outbound ------------------------------------------------------------------------


def test_attributes_carry_key_as_partitionkey() -> None:
    """The ordering key travels as the partitionkey extension; absent attributes are left out."""
    attrs = outbound(1, "order-7", datacontenttype="application/json").attributes()
    assert attrs == {
        "specversion": "1.0", "id": "ev-1", "source": "/orders", "type": "com.example.order.created",
        "time": "2026-11-23T12:00:00Z", "datacontenttype": "application/json", "partitionkey": "order-7",
    }


def test_string_attributes_canonical() -> None:
    """Booleans become "true"/"false" and integers their decimal text."""
    attrs = outbound(1, extensions={"flag": True, "off": False, "n": 42}).string_attributes()
    assert (attrs["flag"], attrs["off"], attrs["n"]) == ("true", "false", "42")
    assert "partitionkey" not in attrs


def test_structured_embeds_json_data() -> None:
    """JSON data is embedded in the structured event as JSON, not as a string."""
    document = orjson.loads(outbound(1, data=b'{"id": 7}', datacontenttype="application/json").structured())
    assert document["data"] == {"id": 7}
    assert "data_base64" not in document


def test_structured_text_data_is_a_string() -> None:
    """Text data is embedded as a JSON string."""
    document = orjson.loads(outbound(1, data="grüße".encode(), datacontenttype="text/plain").structured())
    assert document["data"] == "grüße"


def test_structured_binary_data_is_base64() -> None:
    """Binary data (and text that is not UTF-8) goes in data_base64."""
    for data, content_type in ((b"\x00\xff", "application/octet-stream"), (b"\xff\xfe", "text/plain")):
        document = orjson.loads(outbound(1, data=data, datacontenttype=content_type).structured())
        assert base64.b64decode(document["data_base64"]) == data
        assert "data" not in document


def test_message_id_per_source_and_id() -> None:
    """The message id depends on source and id only: the same event always gets the same one."""
    first = outbound(1, "a").message_id
    assert outbound(2, "b", id="ev-1", type="other").message_id == first
    assert outbound(1, "a", id="ev-other").message_id != first
    assert outbound(1, "a", source="/elsewhere").message_id != first


def test_extensions_are_capped_below_a_header_frame() -> None:
    """Extensions above MAX_EXTENSIONS_CHARS in all are refused (they travel as AMQP headers)."""
    from app.outbox.cloudevents import MAX_EXTENSIONS_CHARS

    with pytest.raises(ValidationError, match="extensions hold more than"):
        EventIn(type="t", source="/s", extensions={"big": "x" * MAX_EXTENSIONS_CHARS})
