"""Limits on topic creation: topics and response topics per principal, response topics per
connection, and the length of topic names (URLs, auto-create, response and event topics)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
import websockets
from django.contrib.auth.models import Permission

from app.broker.models import Topic
from app.outbox.emit import emit
from app.outbox.models import OutboxEvent, Status
from tests.bad_input import assert_error, closed_with
from tests.outbox import clear_outbox
from tests.protocol import OPEN, auth, connect, eventually, make_token, make_topic, make_user, publish, unique
from tests.servers import ServerProcess, start_server

NAME_CHARS = 40


@pytest.fixture(scope="module")
def limited_server(_migrated: None) -> Iterator[ServerProcess]:
    """Small limits, and an outbox relay publishing to the server's own topics."""
    proc = start_server(
        os.environ["DATABASE_URL"], TOPICS_PER_PRINCIPAL="2", RESPONSE_TOPICS_PER_CONNECTION="2",
        RESPONSE_TOPICS_PER_PRINCIPAL="3", TOPIC_NAME_MAX_CHARS=str(NAME_CHARS),
        OUTBOX_RELAY_TASKS="1", OUTBOX_TARGET="topic", OUTBOX_POLL_INTERVAL_S="0.2",
    )
    yield proc
    proc.stop()


def topic_adder() -> str:
    """A token of a new user with the add_topic right."""
    user = make_user()
    user.user_permissions.add(Permission.objects.get(codename="add_topic"))
    return make_token(user)


def request(response_topic: str, context: int) -> dict[str, object]:
    return {"payload": "", "context": context,
            "properties": {"response_topic": response_topic, "requestContext": context, "messageType": "request"}}


async def test_topics_per_principal(limited_server: ServerProcess) -> None:
    """A user who created TOPICS_PER_PRINCIPAL topics gets an error ack for the next one."""
    key = topic_adder()
    for _ in range(2):
        assert (await publish(await connect(limited_server.ws + unique(), auth(key))))["result"] == "ok"
    slug = unique()
    ack = await publish(await connect(limited_server.ws + slug, auth(key)), context=5)
    assert_error(ack, "topic limit reached", "2 topics")
    assert ack["context"] == 5
    assert not Topic.objects.filter(slug=slug).exists()


async def test_response_topics_per_connection(limited_server: ServerProcess) -> None:
    """A connection that created RESPONSE_TOPICS_PER_CONNECTION response topics gets an error ack for the next."""
    source = make_topic()
    producer = await connect(limited_server.ws + source, auth(make_token(make_user())))
    for context in range(2):
        assert (await publish(producer, **request(f"{source}_{unique('r')}", context)))["result"] == "ok"
    refused = f"{source}_{unique('r')}"
    ack = await publish(producer, **request(refused, 9))
    assert_error(ack, "response topic limit reached", "this connection")
    assert ack["context"] == 9
    assert not Topic.objects.filter(slug=refused).exists()


async def test_known_response_topic_needs_no_room(limited_server: ServerProcess) -> None:
    """At its limit a connection may still name a response topic it created before."""
    source = make_topic()
    producer = await connect(limited_server.ws + source, auth(make_token(make_user())))
    names = [f"{source}_{unique('r')}" for _ in range(2)]
    for context, name in enumerate(names):
        assert (await publish(producer, **request(name, context)))["result"] == "ok"
    assert (await publish(producer, **request(names[0], 2)))["result"] == "ok"


async def test_response_topics_per_principal(limited_server: ServerProcess) -> None:
    """A principal with RESPONSE_TOPICS_PER_PRINCIPAL response topics gets an error ack on any connection."""
    source = make_topic()
    key = make_token(make_user())
    first = await connect(limited_server.ws + source, auth(key))
    for context in range(2):
        assert (await publish(first, **request(f"{source}_{unique('r')}", context)))["result"] == "ok"
    second = await connect(limited_server.ws + source, auth(key))
    assert (await publish(second, **request(f"{source}_{unique('r')}", 2)))["result"] == "ok"
    refused = f"{source}_{unique('r')}"
    ack = await publish(second, **request(refused, 3))
    assert_error(ack, "response topic limit reached", "3 response topics")
    assert ack["context"] == 3
    assert not Topic.objects.filter(slug=refused).exists()


async def test_long_name_on_producer_url(limited_server: ServerProcess) -> None:
    """Publishing to a name longer than TOPIC_NAME_MAX_CHARS gets an error ack and creates nothing."""
    slug = "p" * (NAME_CHARS + 1)
    producer = await connect(limited_server.ws + slug, auth(topic_adder()))
    ack = await publish(producer, context=4)
    assert_error(ack, f"longer than {NAME_CHARS} characters")
    assert ack["context"] == 4
    assert not Topic.objects.filter(slug=slug).exists()


async def test_long_name_on_consumer_url(limited_server: ServerProcess) -> None:
    """A consumer of a name longer than TOPIC_NAME_MAX_CHARS gets an error frame and 4404, not a wait."""
    consumer = await connect(f"{limited_server.ws}{'c' * (NAME_CHARS + 1)}/sub")
    frames, code = await closed_with(consumer)
    assert code == 4404 and len(frames) == 1, frames
    assert_error(frames[0], f"longer than {NAME_CHARS} characters")


async def test_long_response_topic_name(limited_server: ServerProcess) -> None:
    """A response topic name longer than TOPIC_NAME_MAX_CHARS gets an error ack and creates nothing."""
    source = make_topic()
    name = f"{source}_{'r' * NAME_CHARS}"
    ack = await publish(await connect(limited_server.ws + source), **request(name, 6))
    assert_error(ack, "response topic", f"longer than {NAME_CHARS} characters")
    assert ack["context"] == 6
    assert not Topic.objects.filter(slug=name).exists()


async def test_long_event_topic_name(limited_server: ServerProcess) -> None:
    """An event for a topic name longer than TOPIC_NAME_MAX_CHARS is refused until it is a dead letter."""
    clear_outbox()
    slug = "e" * (NAME_CHARS + 1)
    row = emit("com.example.shipped", "/tests/limits", None, key="k", target="topic", destination=slug)
    OutboxEvent.objects.filter(pk=row.pk).update(attempts=9)  # one attempt left with the defaults
    await eventually(lambda: OutboxEvent.objects.get(pk=row.pk).status == Status.FAILED, 30)
    assert f"longer than {NAME_CHARS} characters" in OutboxEvent.objects.get(pk=row.pk).last_error
    assert not Topic.objects.filter(slug=slug).exists()


async def anonymous_from(server: ServerProcess, slug: str, address: str) -> websockets.ClientConnection:
    """An anonymous producer connecting from ``address`` (any 127.x.y.z is this machine)."""
    ws = await websockets.connect(server.ws + slug, local_addr=(address, 0), max_size=None)
    OPEN.append(ws)
    return ws


async def test_anonymous_response_topics_counted_per_address(limited_server: ServerProcess) -> None:
    """Anonymous clients are one principal, but their response topics count per client address:
    one anonymous client at its limit does not block another."""
    source = make_topic()
    for n in range(2):  # two connections: the per-connection limit is 2, the per-principal one 3
        producer = await anonymous_from(limited_server, source, "127.0.0.3")
        for context in range(2 if n == 0 else 1):
            assert (await publish(producer, **request(f"{source}_{unique('r')}", context)))["result"] == "ok"
    late = await anonymous_from(limited_server, source, "127.0.0.3")
    assert_error(await publish(late, **request(f"{source}_{unique('r')}", 7)), "response topic limit reached")
    other = await anonymous_from(limited_server, source, "127.0.0.4")
    assert (await publish(other, **request(f"{source}_{unique('r')}", 8)))["result"] == "ok"


async def test_response_topic_of_another_requester_is_refused(limited_server: ServerProcess) -> None:
    """A request may not name a response topic another requester created (it would send its
    responses into their topic)."""
    source = make_topic()
    bob = await connect(limited_server.ws + source, auth(make_token(make_user())))
    alice = await connect(limited_server.ws + source, auth(make_token(make_user())))
    taken = f"{source}_{unique('r')}"
    assert (await publish(bob, **request(taken, 1)))["result"] == "ok"
    ack = await publish(alice, **request(taken, 2))
    assert_error(ack, "belongs to another requester")
