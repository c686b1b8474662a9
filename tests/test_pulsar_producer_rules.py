"""The plain decisions behind Pulsar producers (docs/architecture.md 18.2, 18.4): delayed delivery
in publish frames, producer parameters, producerName lease names, and what a handshake naming a
missing topic gets."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from app.pulsar.autocreation import MissingTopic, missing_topic
from app.pulsar.frames import DELAY_NOT_STORED, delivery_time, publish_frame_error
from app.pulsar.handshake import Need
from app.pulsar.producers import ProducerParams, producer_lease_name

NOW = datetime(2030, 1, 1, tzinfo=UTC)


def frame(**fields: object) -> dict[str, object]:
    return {"payload": "", **fields}


def test_delay_accepted_on_storing_topic() -> None:
    """Integer deliverAt / deliverAfterMs pass on a topic that stores."""
    assert publish_frame_error(frame(deliverAt=1, deliverAfterMs=5), stores=True) is None


def test_delay_refused_on_disabled_topic() -> None:
    """A positive delay on a topic that stores nothing is code 8."""
    assert publish_frame_error(frame(deliverAfterMs=5), stores=False) is DELAY_NOT_STORED


def test_zero_delay_allowed_on_disabled_topic() -> None:
    """0 or less asks for no delay, so a disabled topic takes it."""
    assert publish_frame_error(frame(deliverAt=0, deliverAfterMs=-1), stores=False) is None


@pytest.mark.parametrize("value", ["1", 1.0, True, None, [1], -(2**63) - 1],
                         ids=["string", "float", "bool", "null", "list", "under-long"])
def test_non_integer_delay_is_code_3(value: object) -> None:
    """A delay that is no Java long is a deserialisation error (code 3) naming the field."""
    error = publish_frame_error(frame(deliverAt=value))
    assert error is not None and error.code == 3 and "deliverAt" in error.message


def test_deliver_after_ms_counts_from_now() -> None:
    """deliverAfterMs is that many milliseconds after now."""
    assert delivery_time(frame(deliverAfterMs=1500), NOW) == NOW + timedelta(milliseconds=1500)


def test_deliver_at_is_epoch_ms() -> None:
    """deliverAt is epoch milliseconds."""
    assert delivery_time(frame(deliverAt=1_000), NOW) == datetime(1970, 1, 1, 0, 0, 1, tzinfo=UTC)


def test_deliver_after_ms_wins_over_deliver_at() -> None:
    """With both, deliverAfterMs decides."""
    assert delivery_time(frame(deliverAt=1_000, deliverAfterMs=10), NOW) == NOW + timedelta(milliseconds=10)


def test_no_delay_is_none() -> None:
    """Neither field, or values of 0 or less: delivered at once (None)."""
    assert delivery_time(frame(), NOW) is None
    assert delivery_time(frame(deliverAt=0, deliverAfterMs=-5), NOW) is None


def test_huge_delay_held_until_year_9999() -> None:
    """A time beyond what a datetime holds is clamped to the end of year 9999."""
    latest = datetime(9999, 12, 31, tzinfo=UTC)
    assert delivery_time(frame(deliverAfterMs=2**63 - 1), NOW) == latest
    assert delivery_time(frame(deliverAt=2**63 - 1), NOW) == latest


def test_producer_parameters_in_pulsars_spellings() -> None:
    """Pulsar's producer parameters are read from their query strings."""
    params = ProducerParams.from_query(b"producerName=p&batchingEnabled=true&compressionType=ZSTD&initialSequenceId=-3")
    assert (params.producerName, params.batchingEnabled, params.compressionType, params.initialSequenceId) == (
        "p", True, "ZSTD", -3)


def test_empty_producer_name_is_no_name() -> None:
    """producerName= (empty) names no producer."""
    assert ProducerParams.from_query(b"producerName=").producerName is None


def test_unknown_compression_refused() -> None:
    """A compressionType Pulsar does not know is a ValidationError."""
    with pytest.raises(ValidationError):
        ProducerParams.from_query(b"compressionType=BROTLI")


def test_lease_name_plain_when_it_fits() -> None:
    """A short name gives producer:<topic id>:<name>."""
    assert producer_lease_name(42, "alpha") == "producer:42:alpha"


@pytest.mark.parametrize("name", ["x" * 200, "#abc"], ids=["long", "hash-prefixed"])
def test_lease_name_digested_when_long_or_ambiguous(name: str) -> None:
    """A name that would not fit the lease column (or starts with #) is replaced by a digest, still per topic."""
    lease = producer_lease_name(42, name)
    assert lease.startswith("producer:42:#") and len(lease) <= 64
    assert lease != producer_lease_name(43, name) and lease != producer_lease_name(42, name + "y")


@pytest.mark.parametrize(("need", "allow_auto", "may_add", "expected"), [
    (Need.PRODUCE, True, False, MissingTopic.CREATE),
    (Need.CONSUME, True, False, MissingTopic.CREATE),
    (Need.PRODUCE, False, True, MissingTopic.ON_FIRST_MESSAGE),
    (Need.PRODUCE, False, False, MissingTopic.REFUSE),
    (Need.CONSUME, False, True, MissingTopic.REFUSE),
])
def test_missing_topic_decision(need: Need, allow_auto: bool, may_add: bool, expected: MissingTopic) -> None:
    """Auto-creation creates; otherwise only a producer whose first message may create the topic is accepted."""
    assert missing_topic(need, allow_auto=allow_auto, may_add_topics=may_add) is expected


@pytest.mark.parametrize(("need", "allow_auto", "expected"), [
    (Need.PRODUCE, True, MissingTopic.ON_FIRST_MESSAGE),
    (Need.PRODUCE, False, MissingTopic.ON_FIRST_MESSAGE),
    (Need.CONSUME, True, MissingTopic.REFUSE),
])
def test_response_shaped_names_never_auto_created(need: Need, allow_auto: bool, expected: MissingTopic) -> None:
    """A missing name shaped like a response topic of an existing topic is never auto-created (its request makes it)."""
    assert missing_topic(need, allow_auto=allow_auto, may_add_topics=False, response_shaped=True) is expected


def test_producer_name_with_nul_refused() -> None:
    """A producerName holding NUL is a ValidationError (its lease row could not be stored on PostgreSQL)."""
    with pytest.raises(ValidationError, match="NUL"):
        ProducerParams.from_query(b"producerName=a%00b")
