"""Plain decisions of a Pulsar-path handshake: query parameters, topic refusals, and the first
delivery's ``redeliveryCount`` (docs/architecture.md 18.2)."""

from __future__ import annotations

import json
from http import HTTPStatus

import pytest
from pydantic import ValidationError

from app.broker.hub import Delivered
from app.broker.permissions import Rights
from app.broker.policy import StorePolicy
from app.broker.topics import TopicView
from app.pulsar.handshake import Need, topic_refusal
from app.pulsar.params import QueryParams, params_problem


class Sample(QueryParams):
    size: int = 1000
    pull: bool = False


def view(*, produce: bool = False, consume: bool = False) -> TopicView:
    return TopicView(id=1, slug="t", policy=StorePolicy.CACHE, is_response_topic=False, source_slug=None,
                     supports_dasf=False, rights=Rights(produce=produce, consume=consume, view_status=False))


def test_query_values_read_in_pulsars_spellings() -> None:
    """Numbers and booleans arrive as strings and are read as such."""
    assert Sample.from_query(b"size=5&pull=true") == Sample(size=5, pull=True)


def test_unknown_query_parameters_ignored() -> None:
    """A parameter Switchyard does not know is ignored, as Pulsar ignores it."""
    assert Sample.from_query(b"token=abc&compressionType=LZ4") == Sample()


def test_last_repeated_value_wins() -> None:
    """A name given twice takes its last value."""
    assert Sample.from_query(b"size=1&size=2").size == 2


def test_unreadable_value_refused_with_its_name() -> None:
    """A malformed number is a ValidationError whose summary names the parameter."""
    with pytest.raises(ValidationError) as caught:
        Sample.from_query(b"size=lots")
    assert params_problem(caught.value).startswith("bad query parameters: size:")


def test_missing_topic_is_404() -> None:
    """No topic: 404."""
    refusal = topic_refusal("t", None, Need.CONSUME, None)
    assert refusal is not None and refusal.status is HTTPStatus.NOT_FOUND


def test_no_right_is_403() -> None:
    """A principal without the right: 403."""
    refusal = topic_refusal("t", view(produce=True), Need.CONSUME, None)
    assert refusal is not None and refusal.status is HTTPStatus.FORBIDDEN


def test_bad_token_without_anonymous_right_is_401() -> None:
    """A bad token where the anonymous principal lacks the right: 401."""
    refusal = topic_refusal("t", view(consume=True), Need.PRODUCE, "invalid or disabled token")
    assert refusal is not None and refusal.status is HTTPStatus.UNAUTHORIZED


def test_right_held_is_accepted() -> None:
    """The right needed is held (by the anonymous principal, even with a bad token): accepted."""
    assert topic_refusal("t", view(produce=True), Need.PRODUCE, "invalid or disabled token") is None


def test_first_delivery_text_adds_a_zero_count() -> None:
    """The Pulsar paths' first delivery is the shared frame plus redeliveryCount 0, built once."""
    item = Delivered('{"payload":"","messageId":"m"}', "m", 1)
    text = item.first_delivery_text()
    assert json.loads(text) == {"payload": "", "messageId": "m", "redeliveryCount": 0}
    assert item.first_delivery_text() is text
