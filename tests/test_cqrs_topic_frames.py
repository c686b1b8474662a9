"""The CQRS replica's topic source without a socket (app/cqrs/topic.py): what a frame from the server
is, the consumer's frames and URL, the dead letter nacks, and the settings that choose the source."""

from __future__ import annotations

import base64
import json
import logging
import re
from datetime import UTC, datetime
from typing import Any

import pytest

from app.cqrs.events import CONTENT_TYPE, event_type
from app.cqrs.payload import SignalType
from app.cqrs.topic import (
    Change,
    DeadLetterNacks,
    Notice,
    Reject,
    Skip,
    ack_frame,
    change_type,
    consumer_url,
    dead_letter_topic,
    nack_frame,
    read_frame,
    redeliveries_left,
    refusal_level,
    refusal_reason,
    token_in_clear,
)
from app.outbox.cloudevents import Outbound
from app.outbox.targets.topics import delivery_fields
from settings.cqrs import replica_source, topic_names_problem

pytestmark = pytest.mark.database_agnostic

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def payload(cqrs_id: str = "test_author", signal: str = "SAVE", pk: int = 7) -> dict[str, Any]:
    return {"signal_type": signal, "cqrs_id": cqrs_id, "instance_pk": pk, "previous_data": None,
            "instance_data": {"id": pk, "name": "Ursula", "cqrs_revision": 3, "cqrs_updated": NOW.isoformat()},
            "correlation_id": None, "retries": 0, "expires": None, "meta": None}


def published(type_: str, data: Any, content_type: str | None = CONTENT_TYPE, redeliveries: int | None = None) -> str:
    """A delivery frame exactly as the ``topic`` outbox target and the server put it on the wire."""
    encoded = data if isinstance(data, bytes) or data is None else json.dumps(data).encode()
    event = Outbound(pk=1, id="ev-1", source="/cqrs", type=type_, time=NOW, datacontenttype=content_type,
                     dataschema=None, subject="7", data=encoded, key="test_author:7", target="topic", destination="")
    frame: dict[str, Any] = delivery_fields(event, NOW.isoformat())
    if redeliveries is not None:
        frame["redeliveryCount"] = redeliveries
    return json.dumps(frame)


def raw_delivery(payload_text: str, message_id: str = "m-1") -> str:
    return json.dumps({"messageId": message_id, "publishTime": NOW.isoformat(), "payload": payload_text,
                       "redeliveryCount": 0})


# --- read_frame ----------------------------------------------------------------------------------------


def test_change_of_a_replica_model_carries_its_payload() -> None:
    """A ``cqrs.<id>.save`` event of a replica model here is a Change whose body is the payload."""
    frame = published(event_type("test_author", SignalType.SAVE), payload(), redeliveries=2)
    got = read_frame(frame)
    assert isinstance(got, Change)
    assert (json.loads(got.body), got.redelivery_count, got.routing_key) == (payload(), 2, None)
    assert got.message_id == json.loads(frame)["messageId"]


def test_delete_and_sync_types_are_changes_too() -> None:
    """DELETE and SYNC events are read as changes, whatever the case of the payload's signal."""
    for signal in (SignalType.DELETE, SignalType.SYNC):
        got = read_frame(published(event_type("test_book", signal), payload("test_book", signal.value)))
        assert isinstance(got, Change), got


def test_other_services_events_are_skipped_quietly() -> None:
    """An event that is no CQRS change is skipped (acked) at DEBUG: a topic is shared."""
    got = read_frame(published("com.example.order.created", {"order": 1}, content_type="application/json"))
    assert isinstance(got, Skip) and got.level == logging.DEBUG and "no CQRS change" in got.reason


def test_changes_of_models_not_replicated_here_are_skipped_quietly() -> None:
    """A change of a cqrs_id no replica model here has is skipped at DEBUG (another replica's model)."""
    got = read_frame(published("cqrs.someone_elses.save", payload("someone_elses")))
    assert isinstance(got, Skip) and got.level == logging.DEBUG and "someone_elses" in got.reason


@pytest.mark.parametrize("type_", ["cqrs.test_author", "cqrs.test_author.update", "cqrs..save", "cqrs.save"])
def test_cqrs_prefixed_types_that_name_no_change_are_skipped(type_: str) -> None:
    """``cqrs.`` types without a cqrs_id and a save/delete/sync signal are no change: skipped."""
    got = read_frame(published(type_, payload()))
    assert isinstance(got, Skip) and got.level == logging.DEBUG


def test_change_type_keeps_dots_in_the_cqrs_id() -> None:
    """The signal is the last part of the type; the cqrs_id may hold dots."""
    assert change_type("cqrs.shop.order.delete") == ("shop.order", SignalType.DELETE)
    assert change_type("com.example.cqrs.x.save") is None


@pytest.mark.parametrize("text", ["not base64!", base64.b64encode(b"{broken").decode(),
                                  base64.b64encode(b"[1, 2]").decode(), base64.b64encode(b'{"id": "x"}').decode()])
def test_deliveries_holding_no_cloudevent_are_skipped_quietly(text: str) -> None:
    """A payload that is no base64 structured CloudEvent (another client's, on a shared topic) is skipped
    at DEBUG, never dead-lettered."""
    got = read_frame(raw_delivery(text))
    assert isinstance(got, Skip) and got.level == logging.DEBUG and "no structured CloudEvent" in got.reason


def test_delivery_without_payload_is_skipped_with_a_warning() -> None:
    """A frame with a messageId but no payload is acked and skipped with a WARNING."""
    got = read_frame(json.dumps({"messageId": "m-2", "publishTime": "t", "redeliveryCount": 1}))
    assert isinstance(got, Skip) and (got.message_id, got.redelivery_count, got.level) == ("m-2", 1, logging.WARNING)


def test_change_in_another_content_type_is_rejected() -> None:
    """A change of a replica model here in another data content type is dead-lettered."""
    got = read_frame(published("cqrs.test_author.save", payload(), content_type="application/json"))
    assert isinstance(got, Reject) and "datacontenttype 'application/json'" in got.reason


def test_change_whose_data_is_no_object_is_rejected() -> None:
    """A change of a replica model here whose data is no JSON object is dead-lettered."""
    got = read_frame(published("cqrs.test_author.save", [1, 2]))
    assert isinstance(got, Reject) and "not a JSON object" in got.reason


@pytest.mark.parametrize("data", [payload("test_book"), payload(signal="DELETE")])
def test_change_whose_payload_contradicts_its_type_is_rejected(data: dict[str, Any]) -> None:
    """A payload of another cqrs_id or signal than its event type names is dead-lettered."""
    got = read_frame(published("cqrs.test_author.save", data))
    assert isinstance(got, Reject) and "not what its type says" in got.reason


def test_malformed_payload_of_the_right_type_goes_on_to_receive() -> None:
    """A change whose payload misses keys is handed on: app/cqrs/apply.py dead-letters it with the reason."""
    data = {"signal_type": "SAVE", "cqrs_id": "test_author"}
    got = read_frame(published("cqrs.test_author.save", data))
    assert isinstance(got, Change) and json.loads(got.body) == data


@pytest.mark.parametrize("text", ['{"result": "error", "errorMsg": "unknown messageId x"}', '{"endOfTopic": false}',
                                  "not json", '{"messageId": 5, "payload": ""}'])
def test_frames_that_are_no_delivery_are_notices(text: str) -> None:
    """Error frames and anything without a usable messageId are notices: nothing to settle."""
    assert isinstance(read_frame(text), Notice)


def test_long_frames_are_cut_in_what_is_logged() -> None:
    """A notice quotes at most 200 characters of the frame."""
    got = read_frame("x" * 10_000)
    assert isinstance(got, Notice) and len(got.text) < 300


# --- frames, URL, refusals ------------------------------------------------------------------------------


def test_ack_and_nack_frames_are_pulsars() -> None:
    """The ack is ``{"messageId"}``; the nack names its type."""
    assert json.loads(ack_frame("m-1")) == {"messageId": "m-1"}
    assert json.loads(nack_frame("m-1")) == {"type": "negativeAcknowledge", "messageId": "m-1"}


def test_consumer_url_asks_for_an_exclusive_subscription_with_dead_letters() -> None:
    """The URL names the topic and subscription under the base (a path prefix kept) and the consumer's terms."""
    url = consumer_url("wss://broker.example/switchyard/", "cqrs", "shop_replica", receiver_queue_size=50,
                       max_redeliver_count=100)
    assert url.startswith("wss://broker.example/switchyard/ws/v2/consumer/persistent/public/default/cqrs/shop_replica?")
    query = url.split("?", 1)[1].split("&")
    assert {"subscriptionType=Exclusive", "receiverQueueSize=50", "maxRedeliverCount=100",
            "negativeAckRedeliveryDelay=0"} <= set(query)


def test_dead_letter_topic_is_pulsars_default_name() -> None:
    """The server's default dead letter topic: ``<topic>-<subscription>-DLQ``."""
    assert dead_letter_topic("cqrs", "shop") == "cqrs-shop-DLQ"


def test_refusal_reason_is_the_servers_error() -> None:
    """A refused handshake's reason is its JSON body's ``error``, else the body as text."""
    assert refusal_reason(b'{"error": "not allowed to consume this topic"}') == "not allowed to consume this topic"
    assert refusal_reason(b"Bad Gateway") == "'Bad Gateway'"
    assert refusal_reason(b"") == "no reason given"


# --- DeadLetterNacks -----------------------------------------------------------------------------------


def test_dead_lettered_delivery_is_nacked_until_the_nack_that_moves_it() -> None:
    """Condemned at count 0 with maxRedeliverCount 2: nacked again at 1 and 2, the nack at 2 the last (forgotten)."""
    nacks = DeadLetterNacks(2)
    assert nacks.condemn("m", 0) is False
    assert nacks.again("m")
    assert nacks.condemn("m", 1) is False
    assert nacks.again("m")
    assert nacks.condemn("m", 2) is True  # redelivery 3 > 2: the server moves it
    assert not nacks.again("m") and len(nacks) == 0


def test_delivery_condemned_past_the_count_is_not_kept() -> None:
    """A delivery already redelivered maxRedeliverCount times goes with its first nack, the last: nothing is kept."""
    nacks = DeadLetterNacks(3)
    assert nacks.condemn("m", 5) is True
    assert not nacks.again("m") and len(nacks) == 0


# --- what is logged ------------------------------------------------------------------------------------


def test_redeliveries_left_are_told_from_half_the_count_on() -> None:
    """Below half maxRedeliverCount nothing is said; from half on, the redeliveries left before the move."""
    assert [redeliveries_left(count, 100) for count in (0, 49, 50, 99, 100, 130)] == [None, None, 50, 1, 0, 0]
    assert redeliveries_left(1, 1) == 0 and redeliveries_left(0, 1) is None


def test_a_standbys_repeated_409_is_info() -> None:
    """A 409 (another consumer holds the subscription) is a WARNING the first time, then INFO; others: WARNING."""
    assert (refusal_level(409, again=False), refusal_level(409, again=True)) == (logging.WARNING, logging.INFO)
    assert refusal_level(403, again=True) == logging.WARNING


@pytest.mark.parametrize(("url", "token", "in_clear"), [
    ("ws://broker.example:8000", "k", True),
    ("ws://10.0.0.5", "k", True),
    ("ws://broker.example", None, False),
    ("wss://broker.example", "k", False),
    ("ws://127.0.0.1:8000", "k", False),
    ("ws://localhost:8000", "k", False),
    ("ws://[::1]:8000", "k", False),
])
def test_token_in_clear_is_one_over_ws_to_another_machine(url: str, token: str | None, in_clear: bool) -> None:
    """A token over ws:// to any host but a loopback one is sent in clear; wss:// or no token is not."""
    assert token_in_clear(url, token) is in_clear


# --- settings: exactly one source ----------------------------------------------------------------------


def source(**given: Any) -> str | None:
    values: dict[str, Any] = {"queue": None, "amqp_url": None, "topic": None, "topic_url": None, "topic_token": None,
                              "max_redeliver_count": 100, "dead_letter_queue": None}
    return replica_source(**(values | given))


def test_source_is_rabbitmq_or_topic_or_none() -> None:
    """AMQP_URL reads RabbitMQ (CQRS_QUEUE or ``--queue``); CQRS_TOPIC (even beside AMQP_URL) the topic; else none."""
    assert source() is None
    assert source(queue="q", amqp_url="amqp://x") == source(amqp_url="amqp://x") == "rabbitmq"
    assert source(queue="q", amqp_url="amqp://x", topic="cqrs", topic_url="ws://h:8000") == "topic"


@pytest.mark.parametrize(("given", "reason"), [
    ({"queue": "q"}, "AMQP_URL is not"),
    ({"topic": "cqrs", "topic_url": "ws://h"}, "CQRS_QUEUE is not"),
    ({"queue": "q", "topic": "cqrs"}, "CQRS_TOPIC_URL is not"),
    ({"queue": "q", "amqp_url": "amqp://x", "topic_url": "ws://h"}, "CQRS_TOPIC_URL set but CQRS_TOPIC is not"),
    ({"queue": "q", "amqp_url": "amqp://x", "topic_token": "k"}, "CQRS_TOPIC_TOKEN set but CQRS_TOPIC is not"),
    ({"queue": "q", "topic": "cqrs", "topic_url": "http://h"}, "ws:// or wss://"),
    ({"queue": "q", "topic": "cqrs", "topic_url": "ws://h/?token=k"}, "without query"),
    ({"queue": "a.b", "topic": "cqrs", "topic_url": "ws://h"}, "CQRS_QUEUE='a.b'"),
    ({"queue": "q", "topic": "cq/rs", "topic_url": "ws://h"}, "CQRS_TOPIC='cq/rs'"),
    ({"queue": "q", "topic": "cqrs", "topic_url": "ws://h", "max_redeliver_count": 0}, "at least 1"),
    ({"queue": "q", "topic": "cqrs", "topic_url": "ws://h", "dead_letter_queue": "dl"}, "CQRS_DEAD_LETTER_QUEUE is"),
    ({"queue": "q" * 192, "topic": "cqrs", "topic_url": "ws://h"}, "would be 201 characters"),
    ({"queue": "q", "topic": "cqrs", "topic_url": "ws://user:secret@h"}, "user:password@"),
])
def test_half_configured_sources_stop_startup(given: dict[str, Any], reason: str) -> None:
    """A source missing a part, or two sources' settings mixed, is refused with the reason."""
    with pytest.raises(ValueError, match=re.escape(reason)):
        source(**given)


def test_refused_url_is_not_echoed_with_its_credentials() -> None:
    """A CQRS_TOPIC_URL refused for its form is named without the user:password it holds."""
    with pytest.raises(ValueError, match="CQRS_TOPIC_URL") as refused:
        source(queue="q", topic="cqrs", topic_url="http://user:secret@h/?x=1")
    assert "secret" not in str(refused.value)


def test_dead_letter_topic_of_at_most_200_characters_is_taken() -> None:
    """``<topic>-<subscription>-DLQ`` of exactly 200 characters is a topic name; the checks name what was given."""
    assert topic_names_problem("cqrs", "q" * 191) is None
    assert "--queue='a.b'" in str(topic_names_problem("cqrs", "a.b", names=("CQRS_TOPIC", "--queue")))
