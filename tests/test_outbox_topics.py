"""Outbox to Switchyard's own topics: a server's relay delivers events to websocket consumers."""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Iterator

import pytest
from django.utils import timezone

from app.broker.models import Message, Topic
from app.outbox.cloudevents import Outbound
from app.outbox.emit import emit
from app.outbox.models import OutboxEvent, Status
from app.outbox.targets.topics import TopicTarget
from tests.outbox import clear_outbox
from tests.protocol import auth, eventually, make_token, make_topic, make_user, recv_json, send_json, subscribe, unique
from tests.servers import ServerProcess, start_server


@pytest.fixture(scope="module")
def relaying_server(_migrated: None) -> Iterator[ServerProcess]:
    """A server on the session database whose relay publishes to its own topics."""
    proc = start_server(
        os.environ["DATABASE_URL"], OUTBOX_RELAY_TASKS="1", OUTBOX_TARGET="topic", OUTBOX_POLL_INTERVAL_S="0.2"
    )
    yield proc
    proc.stop()


@pytest.fixture(autouse=True)
def _clean(_db_access: None) -> None:
    clear_outbox()


def _consumer_of(policy: str) -> tuple[str, str]:
    """A private, non-DASF topic with the given policy and a token that may consume it."""
    user = make_user()
    return make_topic(public=False, anonymous=False, dasf=False, policy=policy, consumers=(user,)), make_token(user)


def _emit(slug: str, data: object = None) -> OutboxEvent:
    return emit("com.example.shipped", "/tests/topics", data, key="k", subject="s-1", target="topic",
                destination=slug)


def _cloudevent(frame: dict[str, object]) -> dict[str, object]:
    payload = frame["payload"]
    assert isinstance(payload, str)
    document = json.loads(base64.b64decode(payload))
    assert isinstance(document, dict)
    return document


async def test_event_reaches_a_connected_consumer(relaying_server: ServerProcess) -> None:
    """A committed event arrives as a delivery: base64 structured CloudEvent, ce_ properties."""
    slug, key = _consumer_of("cache")
    ws = await subscribe(relaying_server.ws, slug, headers=auth(key), probe=False)
    row = _emit(slug, {"parcel": 3})
    frame = await recv_json(ws, timeout=30)
    document = _cloudevent(frame)
    assert (document["id"], document["type"], document["data"]) == (row.event_id, "com.example.shipped", {"parcel": 3})
    properties = frame["properties"]
    assert isinstance(properties, dict)
    assert properties["ce_id"] == row.event_id and properties["ce_partitionkey"] == "k"
    assert properties["content_type"] == "application/cloudevents+json"
    await send_json(ws, {"messageId": frame["messageId"]})
    await eventually(lambda: OutboxEvent.objects.get(pk=row.pk).status == Status.PUBLISHED)


async def test_stored_event_is_replayed_to_a_late_consumer(relaying_server: ServerProcess) -> None:
    """Under a storing policy an event published before the consumer connects is replayed."""
    slug, key = _consumer_of("store")
    row = _emit(slug, "late")
    await eventually(lambda: OutboxEvent.objects.get(pk=row.pk).status == Status.PUBLISHED, 30)
    ws = await subscribe(relaying_server.ws, slug, headers=auth(key), probe=False)
    frame = await recv_json(ws, timeout=30)
    assert _cloudevent(frame)["data"] == "late"


async def test_events_of_a_key_arrive_in_order(relaying_server: ServerProcess) -> None:
    """Events of one key reach the consumer in emission order."""
    slug, key = _consumer_of("cache")
    ws = await subscribe(relaying_server.ws, slug, headers=auth(key), probe=False)
    for n in range(20):
        _emit(slug, n)
    received = [_cloudevent(await recv_json(ws, timeout=30))["data"] for _ in range(20)]
    assert received == list(range(20))


async def test_missing_topic_is_created_private(relaying_server: ServerProcess) -> None:
    """An event for a topic that does not exist creates it, private and not a DASF module."""
    slug = unique("events")
    row = _emit(slug)
    await eventually(lambda: OutboxEvent.objects.get(pk=row.pk).status == Status.PUBLISHED, 30)
    topic = Topic.objects.get(slug=slug)
    assert (topic.is_public, topic.supports_dasf) == (False, False)


async def test_invalid_topic_name_dead_letters_the_event(relaying_server: ServerProcess) -> None:
    """A destination that cannot be a topic name is refused until the event is failed."""
    row = _emit("not a topic name!")
    OutboxEvent.objects.filter(pk=row.pk).update(attempts=9)  # one attempt left with the defaults
    await eventually(lambda: OutboxEvent.objects.get(pk=row.pk).status == Status.FAILED, 30)
    assert "invalid topic name" in OutboxEvent.objects.get(pk=row.pk).last_error


async def test_event_published_twice_is_stored_once() -> None:
    """A repeated publish (relay died before settling) stores the message only once."""
    from app.broker.runtime import stop_runtime

    slug = make_topic(public=False, anonymous=False, dasf=False, policy="store")
    # An event as a relay holds it (no outbox row: a server relay in this module would take it).
    event = Outbound(
        pk=0, id=unique("event"), source="/tests/topics", type="com.example.twice", time=timezone.now(),
        datacontenttype=None, dataschema=None, subject=None, data=None, key=None, target="topic", destination=slug,
    )
    target = TopicTarget()
    await target.connect()
    try:
        await target.publish(event)
        await target.publish(event)
    finally:
        await target.close()
        await stop_runtime()
    assert Message.objects.filter(topic__slug=slug, message_id=event.message_id).count() == 1
