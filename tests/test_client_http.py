"""The client SDK's HTTP and status calls against a real server: topic status, the live status feed,
and outbox events emitted over HTTP."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator

import pytest
from django.contrib.auth.models import Permission

from switchyard_client import Client, HTTPError
from switchyard_client.frames import StatusFrame, StatusSyncedFrame
from tests.protocol import make_token, make_topic, make_user, unique
from tests.servers import ServerProcess, start_server

pytestmark = pytest.mark.wire_interop

TIMEOUT_S = 20


async def test_status_of_a_topic_never_pinged_is_unknown(server: ServerProcess) -> None:
    """A DASF topic that was not pinged lately reads as unknown."""
    topic = make_topic()
    async with Client(server.http) as client:
        status = await client.status(topic)
    assert (status.topic, status.status, status.last_pong) == (topic, "unknown", None)


async def test_status_of_a_missing_topic_raises_http_error(server: ServerProcess) -> None:
    """A topic that does not exist is an HTTPError 404."""
    async with Client(server.http) as client:
        with pytest.raises(HTTPError) as raised:
            await client.status(unique("missing"))
    assert raised.value.status == 404


async def test_watch_status_sends_the_topic_then_synced(server: ServerProcess) -> None:
    """Watching one topic yields its status, then the synced marker."""
    topic = make_topic()
    async with Client(server.http) as client:
        watch = client.watch_status([topic])
        first = await asyncio.wait_for(anext(watch), TIMEOUT_S)
        second = await asyncio.wait_for(anext(watch), TIMEOUT_S)
    assert isinstance(first, StatusFrame) and (first.topic, first.status) == (topic, "unknown")
    assert isinstance(second, StatusSyncedFrame) and second.topics == 1


@pytest.fixture(scope="module")
def relaying_server(_migrated: None) -> Iterator[ServerProcess]:
    """A server on the session database whose outbox relay publishes to its own topics."""
    proc = start_server(os.environ["DATABASE_URL"], OUTBOX_RELAY_TASKS="1", OUTBOX_TARGET="topic",
                        OUTBOX_POLL_INTERVAL_S="0.2")
    yield proc
    proc.stop()


async def test_emit_reaches_a_consumer_of_the_destination_topic(relaying_server: ServerProcess) -> None:
    """An event emitted over HTTP is stored, then published by the outbox relay to its topic as a
    structured CloudEvent."""
    server = relaying_server
    user = make_user()
    user.user_permissions.add(Permission.objects.get(content_type__app_label="outbox", codename="add_outboxevent"))
    topic = make_topic(public=False, anonymous=False, dasf=False, policy="store", producers=(user,), consumers=(user,))
    async with Client(server.http, token=make_token(user)) as client:
        consumer = client.subscribe(topic, "events")
        await consumer.start()
        event = await client.emit("com.example.created", "/tests/client", {"n": 1}, key="k1", target="topic",
                                  destination=topic)
        assert (event.type, event.source, event.status) == ("com.example.created", "/tests/client", "pending")
        message = await consumer.receive(timeout=TIMEOUT_S)
        assert (message.json()["id"], message.json()["data"]) == (event.id, {"n": 1})
        assert message.properties["ce_id"] == event.id


async def test_emit_without_the_right_raises_http_error(server: ServerProcess) -> None:
    """An anonymous emit is refused with an HTTPError in the 4xx range."""
    async with Client(server.http) as client:
        with pytest.raises(HTTPError) as raised:
            await client.emit("t", "/tests/client", {"n": 1})
    assert raised.value.status in (401, 403)

