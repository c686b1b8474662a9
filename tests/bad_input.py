"""Fixtures and helpers of the bad-input tests (test_bad_input_*.py); loaded as a plugin with
``-p tests.bad_input`` so the fixtures need no import. Models are imported late: plugins load
before Django is set up."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import websockets
from websockets.asyncio.client import ClientConnection

from tests.protocol import (
    TIMEOUT_S,
    b64,
    connect,
    publish,
    recv_json,
    send_json,
    subscribe,
)
from tests.servers import ServerProcess, start_server

SMALL_FRAME_BYTES = 4096
HARD_LIMIT_BYTES = 4 * SMALL_FRAME_BYTES

# --- fixtures and helpers ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def strict_server(_migrated: None) -> Iterator[ServerProcess]:
    """No topic auto-creation and a 4 KiB frame limit (hard limit 16 KiB), on the session database."""
    proc = start_server(
        os.environ["DATABASE_URL"], CREATE_TOPIC_ON_MESSAGE="false", MAX_FRAME_BYTES=str(SMALL_FRAME_BYTES)
    )
    yield proc
    proc.stop()


@pytest.fixture
def no_server_crash(request: pytest.FixtureRequest, server: ServerProcess) -> Iterator[None]:
    """Bad input must not take the process down. (A handler that crashed logs an ERROR: that fails
    every test, through tests/server_log.py.)"""
    procs = [server]
    if "strict_server" in request.fixturenames:
        procs.append(request.getfixturevalue("strict_server"))
    yield
    for proc in procs:
        assert proc.running, "server died:\n" + "".join(proc.output)


class Sockets:
    """Opens websockets for one test and closes them all at teardown."""

    def __init__(self) -> None:
        self.open: list[ClientConnection] = []

    async def connect(self, url: str, headers: dict[str, str] | None = None) -> ClientConnection:
        ws = await connect(url, headers)
        self.open.append(ws)
        return ws

    async def subscribe(self, base: str, slug: str, **kwargs: Any) -> ClientConnection:
        ws = await subscribe(base, slug, **kwargs)
        self.open.append(ws)
        return ws


@pytest.fixture
async def sockets() -> AsyncIterator[Sockets]:
    pool = Sockets()
    yield pool
    for ws in pool.open:
        await ws.close()


def assert_error(frame: dict[str, Any], *needles: str) -> None:
    """An error frame the DASF client fails fast on, whose errorMsg names the problem."""
    assert "error" in str(frame.get("result", "")), frame
    message = frame.get("errorMsg")
    assert isinstance(message, str) and message, frame
    for needle in needles:
        assert needle.lower() in message.lower(), frame


def is_broker_ping(frame: dict[str, Any]) -> bool:
    """The ping relay's probe (every PING_INTERVAL_S): not a message of the topic's producers."""
    props = frame.get("properties")
    return isinstance(props, dict) and props.get("messageType") == "ping" and props.get(
        "response_topic") == "status-ping"


async def recv(ws: ClientConnection) -> dict[str, Any]:
    """The next frame, skipping broker pings that may land on a consumer in a long session."""
    while True:
        frame = await recv_json(ws)
        if not is_broker_ping(frame):
            return frame


async def send_raw(ws: ClientConnection, frame: str | bytes) -> dict[str, Any]:
    await ws.send(frame)
    return await recv(ws)


async def assert_publishes(ws: ClientConnection, context: int | str = "after") -> dict[str, Any]:
    """The producer socket still works: a valid message is acked ok with its context."""
    ack = await publish(ws, context=context)
    assert ack["result"] == "ok" and ack["context"] == context, ack
    return ack


async def assert_flows(consumer: ClientConnection, producer: ClientConnection) -> None:
    """The consumer socket still works: a message arrives, its ack is taken silently (the next
    frame is the next message, not an error)."""
    first = await assert_publishes(producer, "flow-1")
    message = await recv(consumer)
    assert message["messageId"] == first["messageId"] and message["context"] == "flow-1", message
    await send_json(consumer, {"messageId": message["messageId"]})
    second = await assert_publishes(producer, "flow-2")
    message = await recv(consumer)
    assert message["messageId"] == second["messageId"], message


async def closed_with(ws: ClientConnection) -> tuple[list[dict[str, Any]], int | None]:
    """Read frames until the server closes; the frames and the close code received."""
    frames: list[dict[str, Any]] = []
    with pytest.raises(websockets.ConnectionClosed) as info:
        while True:
            received = json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT_S))
            if not is_broker_ping(received):
                frames.append(received)
    rcvd = info.value.rcvd
    return frames, (rcvd.code if rcvd is not None else None)


def stored(slug: str) -> list[Any]:
    from app.broker.models import Message

    return list(Message.objects.filter(topic__slug=slug).order_by("sequence"))


def frame(context: int | str = 1, **fields: Any) -> dict[str, Any]:
    value: dict[str, Any] = {"payload": b64({"n": context}), "properties": {}, "context": context}
    value.update(fields)
    return value



def pong(source: str | None, context: str = "1", **properties: Any) -> dict[str, Any]:
    props: dict[str, Any] = {"messageType": "pong", "requestContext": context, "status": "success"}
    if source is not None:
        props["source_topic"] = source
    props.update(properties)
    return {"payload": "", "properties": props, "context": context}


def last_pong(slug: str) -> Any:
    from app.broker.models import Topic

    return Topic.objects.values_list("last_pong", flat=True).get(slug=slug)

