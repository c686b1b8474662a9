"""Frames nested deeper than the codec can write get a clear error and log nothing; a frame that trips
an internal error logs one traceback per connection, not one per frame."""

from __future__ import annotations

import json
import re

import pytest

from tests.bad_input import Sockets, assert_error, assert_flows, assert_publishes, recv
from tests.protocol import auth, make_topic, publish, send_json, unique
from tests.servers import ServerProcess, manage, run_sql

# app.codec.MAX_DEPTH: orjson writes at most 254 levels (and reads at most 1024).
MAX_DEPTH = 254
DEPTHS = [MAX_DEPTH + 1, 1024]
# Deeper than orjson reads: such frames cannot be parsed at all.
UNREADABLE_DEPTHS = [1025, 100_000]
TOO_DEEP = f"frame nests too deeply (more than {MAX_DEPTH} levels)"


def nested(depth: int) -> str:
    """JSON text of ``depth`` nested lists."""
    return "[" * depth + "]" * depth


def new_output(server: ServerProcess, mark: int) -> str:
    return "".join(server.output[mark:])


def assert_quiet(server: ServerProcess, mark: int) -> None:
    """Nothing logged at ERROR and no traceback since ``mark``."""
    logged = new_output(server, mark)
    assert " ERROR " not in logged and "Traceback" not in logged, logged


@pytest.mark.parametrize("depth", DEPTHS)
async def test_producer_frame_nested_too_deeply(server: ServerProcess, sockets: Sockets, depth: int) -> None:
    """A producer frame nested too deeply gets an error ack with its context, logs nothing, and publishing goes on."""
    mark = len(server.output)
    slug = make_topic()
    consumer = await sockets.subscribe(server.ws, slug)
    producer = await sockets.connect(server.ws + slug)
    # The frame itself is level 1: the value of "deep" adds ``depth - 1`` levels.
    await producer.send(f'{{"payload": "", "properties": {{}}, "context": 7, "deep": {nested(depth - 1)}}}')
    ack = await recv(producer)
    assert_error(ack, "nests too deeply")
    assert ack["context"] == 7, ack
    await assert_flows(consumer, producer)
    assert_quiet(server, mark)


async def test_producer_context_nested_too_deeply(server: ServerProcess, sockets: Sockets) -> None:
    """A context nested too deeply is refused and left out of the ack (it could not be written back)."""
    mark = len(server.output)
    producer = await sockets.connect(server.ws + make_topic())
    await producer.send(f'{{"payload": "", "properties": {{}}, "context": {nested(MAX_DEPTH)}}}')
    ack = await recv(producer)
    assert_error(ack, "nests too deeply")
    assert "context" not in ack, ack
    await assert_publishes(producer)
    assert_quiet(server, mark)


@pytest.mark.parametrize("depth", DEPTHS)
async def test_consumer_frame_nested_too_deeply(server: ServerProcess, sockets: Sockets, depth: int) -> None:
    """A consumer frame nested too deeply gets an error frame, logs nothing, and the socket keeps delivering."""
    mark = len(server.output)
    slug = make_topic()
    consumer = await sockets.subscribe(server.ws, slug)
    producer = await sockets.connect(server.ws + slug)
    for field in ("messageId", "other"):
        await consumer.send(f'{{"{field}": {nested(depth - 1)}}}')
        assert_error(await recv(consumer), "nests too deeply")
    await assert_flows(consumer, producer)
    assert_quiet(server, mark)


@pytest.mark.parametrize("depth", UNREADABLE_DEPTHS)
async def test_producer_frame_too_deep_to_parse(server: ServerProcess, sockets: Sockets, depth: int) -> None:
    """A producer frame deeper than the parser reads gets the depth error (without context), and publishing goes on."""
    mark = len(server.output)
    producer = await sockets.connect(server.ws + make_topic())
    await producer.send(f'{{"payload": "", "properties": {{}}, "context": 7, "deep": {nested(depth - 1)}}}')
    ack = await recv(producer)
    assert_error(ack, TOO_DEEP)
    assert "context" not in ack, ack  # the frame could not be read, its context neither
    await assert_publishes(producer)
    assert_quiet(server, mark)


@pytest.mark.parametrize("depth", UNREADABLE_DEPTHS)
async def test_consumer_frame_too_deep_to_parse(server: ServerProcess, sockets: Sockets, depth: int) -> None:
    """A consumer frame deeper than the parser reads gets the depth error, and the socket keeps delivering."""
    mark = len(server.output)
    slug = make_topic()
    consumer = await sockets.subscribe(server.ws, slug)
    producer = await sockets.connect(server.ws + slug)
    await consumer.send(f'{{"messageId": {nested(depth - 1)}}}')
    assert_error(await recv(consumer), TOO_DEEP)
    await assert_flows(consumer, producer)
    assert_quiet(server, mark)


async def test_frame_at_the_depth_limit_is_relayed(server: ServerProcess, sockets: Sockets) -> None:
    """A frame exactly MAX_DEPTH levels deep is published and delivered as sent (the limit is not off by one)."""
    slug = make_topic()
    consumer = await sockets.subscribe(server.ws, slug)
    producer = await sockets.connect(server.ws + slug)
    deep = json.loads(nested(MAX_DEPTH - 1))
    ack = await publish(producer, context="edge", deep=deep)
    assert ack["result"] == "ok", ack
    delivered = await recv(consumer)
    assert delivered["messageId"] == ack["messageId"] and delivered["deep"] == deep


def break_topic_table(database_url: str) -> None:
    """Rename the topic table under the running server: every topic lookup fails from now on."""
    run_sql(database_url, "ALTER TABLE broker_topic RENAME TO broker_topic_gone")


@pytest.mark.server_errors(r"ERROR consumers\.base: handling a frame failed \(1 on this connection\)")
async def test_internal_errors_log_one_traceback_per_connection(breakable_server: ServerProcess,
                                                                  sockets: Sockets) -> None:
    """Frames that each fail inside the server get an error ack each, but only the first logs a traceback."""
    server = breakable_server
    # Authenticated: its frames to a missing topic look the topic up again (an anonymous
    # producer's are answered from the server's directory of topic names, without a query).
    key = manage(server.database_url, "createtoken", unique("u"), "--create-user")
    producer = await sockets.connect(server.ws + unique("later"), auth(key))
    # Answered (the topic does not exist, and this user may not create it): the socket is set up.
    assert_error(await publish(producer, context="first"), "create")
    mark = len(server.output)
    break_topic_table(server.database_url)
    for n in range(5):
        await send_json(producer, {"payload": "", "properties": {}, "context": n})
        ack = await recv(producer)
        assert_error(ack, "internal error")
        assert ack["context"] == n, ack
    # One log record (its traceback lines carry no timestamp): the later failures went to DEBUG.
    records = [line for line in server.output[mark:] if re.match(r"\d{4}-\d\d-\d\d ", line)]
    assert len(records) == 1 and " ERROR " in records[0] and "handling a frame failed" in records[0], records
