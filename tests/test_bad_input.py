"""Bad input on every socket: each bad frame gets a clear error frame (``error`` in ``result`` plus
``errorMsg``) or a documented close code; the connection, the server and everyone else keep going,
and nothing stored is lost (DESIGN.md section 10, PROTOCOL.md sections 2-3)."""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import websockets
from websockets.asyncio.client import ClientConnection

from app.broker.models import Message, Topic
from tests.helpers import (
    TIMEOUT_S,
    auth,
    b64,
    connect,
    make_token,
    make_topic,
    make_user,
    publish,
    recv_json,
    send_json,
    subscribe,
    unique,
)
from tests.servers import ServerProcess, start_server

SMALL_FRAME_BYTES = 4096
HARD_LIMIT_BYTES = 4 * SMALL_FRAME_BYTES
# What the server logs when a connection handler or one of its tasks crashed.
CRASH_MARKERS = ("Exception in ASGI application", "connection task failed", "commit callback failed")

# --- fixtures and helpers ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def strict_server(_migrated: None) -> Iterator[ServerProcess]:
    """No topic auto-creation and a 4 KiB frame limit (hard limit 16 KiB), on the session database."""
    proc = start_server(
        os.environ["DATABASE_URL"], CREATE_TOPIC_ON_MESSAGE="false", MAX_FRAME_BYTES=str(SMALL_FRAME_BYTES)
    )
    yield proc
    proc.stop()


@pytest.fixture(autouse=True)
def _no_server_crash(request: pytest.FixtureRequest, server: ServerProcess) -> Iterator[None]:
    """Bad input must not crash a handler (nothing logged as one) and the process stays up."""
    procs = [server]
    if "strict_server" in request.fixturenames:
        procs.append(request.getfixturevalue("strict_server"))
    marks = [len(p.output) for p in procs]
    yield
    for proc, mark in zip(procs, marks, strict=True):
        assert proc.proc is not None and proc.proc.poll() is None, "server died:\n" + "".join(proc.output)
        new = "".join(proc.output[mark:])
        assert not any(marker in new for marker in CRASH_MARKERS), new


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


def stored(slug: str) -> list[Message]:
    return list(Message.objects.filter(topic__slug=slug).order_by("sequence"))


def frame(context: int | str = 1, **fields: Any) -> dict[str, Any]:
    value: dict[str, Any] = {"payload": b64({"n": context}), "properties": {}, "context": context}
    value.update(fields)
    return value


# --- producer socket --------------------------------------------------------------------------


async def test_producer_non_json_text(server: ServerProcess, sockets: Sockets) -> None:
    """A text frame that is not JSON gets an error ack and the producer keeps publishing."""
    producer = await sockets.connect(server.ws + make_topic())
    assert_error(await send_raw(producer, "{not json"), "json")
    await assert_publishes(producer)


async def test_producer_binary_frame(server: ServerProcess, sockets: Sockets) -> None:
    """A binary frame (even of valid JSON) gets an error ack and the producer keeps publishing."""
    producer = await sockets.connect(server.ws + make_topic())
    assert_error(await send_raw(producer, json.dumps(frame()).encode()), "binary")
    await assert_publishes(producer)


@pytest.mark.parametrize("value", [[frame()], 42, "text", None, True], ids=["list", "number", "string",
                                                                             "null", "bool"])
async def test_producer_json_not_an_object(server: ServerProcess, sockets: Sockets, value: Any) -> None:
    """JSON that is not an object gets an error ack and the producer keeps publishing."""
    producer = await sockets.connect(server.ws + make_topic())
    assert_error(await send_raw(producer, json.dumps(value)), "object")
    await assert_publishes(producer)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("payload", 5),
        ("payload", {"a": 1}),
        ("payload", ["x"]),
        ("properties", []),
        ("properties", "x"),
        ("properties", None),
        ("context", True),
        ("context", 1.5),
        ("context", {"a": 1}),
        ("context", [1]),
    ],
    ids=lambda v: json.dumps(v),
)
async def test_producer_wrong_field_types(server: ServerProcess, sockets: Sockets, field: str, value: Any) -> None:
    """A field of the wrong type gets an error naming the field; nothing is delivered or stored."""
    slug = make_topic()
    consumer = await sockets.subscribe(server.ws, slug)
    producer = await sockets.connect(server.ws + slug)
    await send_json(producer, frame(3) | {field: value})
    ack = await recv(producer)
    assert_error(ack, field)
    if field != "context":
        assert ack["context"] == 3, ack
    assert stored(slug) == []
    marker = await assert_publishes(producer, "marker")
    assert (await recv(consumer))["messageId"] == marker["messageId"]


@pytest.mark.parametrize("value", [True, 1.5, {"a": 1}, [1]], ids=lambda v: json.dumps(v))
async def test_error_ack_echoes_context_of_wrong_type(server: ServerProcess, sockets: Sockets, value: Any) -> None:
    """An ack refusing a context of the wrong type still echoes that context verbatim."""
    producer = await sockets.connect(server.ws + make_topic())
    ack = await publish(producer, context=value)
    assert_error(ack, "context")
    assert "context" in ack and ack["context"] == value, ack


@pytest.mark.parametrize("value", ["not-a-uuid", "", "1234", 123, ["x"]], ids=lambda v: json.dumps(v))
async def test_producer_message_id_not_a_uuid(server: ServerProcess, sockets: Sockets, value: Any) -> None:
    """A messageId that is not a UUID string is refused with the context; nothing is delivered."""
    slug = make_topic()
    consumer = await sockets.subscribe(server.ws, slug)
    producer = await sockets.connect(server.ws + slug)
    ack = await publish(producer, context=4, messageId=value)
    assert_error(ack, "messageId")
    assert ack["context"] == 4
    assert stored(slug) == []
    marker = await assert_publishes(producer, "marker")
    assert (await recv(consumer))["messageId"] == marker["messageId"]


@pytest.mark.parametrize("char", ["x", "\u20ac"], ids=["ascii", "multibyte"])
async def test_producer_frame_over_max_frame_bytes(strict_server: ServerProcess, sockets: Sockets,
                                                   char: str) -> None:
    """A frame over MAX_FRAME_BYTES (counted in UTF-8 bytes) gets an error ack with its context."""
    slug = make_topic()
    consumer = await sockets.subscribe(strict_server.ws, slug)
    producer = await sockets.connect(strict_server.ws + slug)
    # Under the limit in characters when multibyte, over it in bytes either way.
    payload = char * ((SMALL_FRAME_BYTES + 600) // len(char.encode()))
    assert len(json.dumps(frame(payload=payload), ensure_ascii=False).encode()) < HARD_LIMIT_BYTES
    await producer.send(json.dumps(frame(context="big", payload=payload), ensure_ascii=False))
    ack = await recv(producer)
    assert_error(ack, str(SMALL_FRAME_BYTES))
    assert ack["context"] == "big"
    assert stored(slug) == []
    marker = await assert_publishes(producer, "marker")
    assert (await recv(consumer))["messageId"] == marker["messageId"]


async def test_producer_frame_just_under_max_frame_bytes(strict_server: ServerProcess, sockets: Sockets) -> None:
    """A frame of exactly MAX_FRAME_BYTES is accepted and delivered (the limit is not off by one)."""
    slug = make_topic()
    consumer = await sockets.subscribe(strict_server.ws, slug)
    producer = await sockets.connect(strict_server.ws + slug)
    base = json.dumps(frame(context="edge", payload=""))
    text = json.dumps(frame(context="edge", payload="y" * (SMALL_FRAME_BYTES - len(base))))
    assert len(text.encode()) == SMALL_FRAME_BYTES
    await producer.send(text)
    ack = await recv(producer)
    assert ack["result"] == "ok" and ack["context"] == "edge", ack
    assert (await recv(consumer))["messageId"] == ack["messageId"]


async def test_producer_frame_over_hard_limit(strict_server: ServerProcess, sockets: Sockets) -> None:
    """A frame over the hard limit closes that socket with 1009; other clients keep being served."""
    other = make_topic()
    other_consumer = await sockets.subscribe(strict_server.ws, other)
    other_producer = await sockets.connect(strict_server.ws + other)
    slug = make_topic()
    producer = await sockets.connect(strict_server.ws + slug)
    await producer.send(json.dumps(frame(payload="z" * (HARD_LIMIT_BYTES + 100))))
    frames, code = await closed_with(producer)
    assert code == 1009, frames
    ack = await assert_publishes(other_producer)
    assert (await recv(other_consumer))["messageId"] == ack["messageId"]
    again = await sockets.connect(strict_server.ws + slug)
    ack = await assert_publishes(again)
    assert [m.message_id for m in stored(slug)] == [uuid.UUID(ack["messageId"])]


async def test_producer_unknown_topic_without_auto_create(strict_server: ServerProcess, sockets: Sockets) -> None:
    """With auto-create off, publishing to an unknown topic says it does not exist; once it exists, it works."""
    slug = unique()
    producer = await sockets.connect(strict_server.ws + slug)
    ack = await publish(producer, context=5)
    assert_error(ack, "does not exist", slug)
    assert ack["context"] == 5
    assert not Topic.objects.filter(slug=slug).exists()
    make_topic(slug)
    await assert_publishes(producer)


async def test_producer_anonymous_may_not_create_topic(server: ServerProcess, sockets: Sockets) -> None:
    """With auto-create on, an anonymous producer may not create an unknown topic."""
    slug = unique()
    producer = await sockets.connect(server.ws + slug)
    ack = await publish(producer, context=6)
    assert_error(ack, "not allowed to create topics")
    assert ack["context"] == 6
    assert not Topic.objects.filter(slug=slug).exists()
    ack = await publish(producer, context=7)
    assert_error(ack, "not allowed to create topics")
    assert ack["context"] == 7


async def test_producer_without_produce_permission(server: ServerProcess, sockets: Sockets) -> None:
    """A user without can_produce on a private topic is refused; nothing reaches its consumers."""
    owner, stranger = make_user(), make_user()
    slug = make_topic(public=False, anonymous=False, consumers=(owner,), producers=(owner,))
    consumer = await sockets.subscribe(server.ws, slug, headers=auth(make_token(owner)))
    denied = await sockets.connect(server.ws + slug, auth(make_token(stranger)))
    for context in (8, 9):
        ack = await publish(denied, context=context)
        assert_error(ack, "not allowed to publish")
        assert ack["context"] == context
    assert stored(slug) == []
    allowed = await sockets.connect(server.ws + slug, auth(make_token(owner)))
    marker = await assert_publishes(allowed, "marker")
    assert (await recv(consumer))["messageId"] == marker["messageId"]


@pytest.mark.parametrize("header", ["Token garbage", "Bearer garbage", "Token", "garbage"])
async def test_producer_bad_token_on_private_topic(server: ServerProcess, sockets: Sockets, header: str) -> None:
    """A bad or malformed token on a private topic is refused, and the error says the token is invalid."""
    slug = make_topic(public=False, anonymous=False)
    producer = await sockets.connect(server.ws + slug, {"Authorization": header})
    ack = await publish(producer, context=10)
    assert_error(ack, "not allowed to publish", "invalid")
    assert ack["context"] == 10
    assert stored(slug) == []


async def test_producer_duplicate_message_id(server: ServerProcess, sockets: Sockets) -> None:
    """A reused producer messageId is refused; the first message is delivered once and stays stored."""
    slug = make_topic()
    consumer = await sockets.subscribe(server.ws, slug)
    producer = await sockets.connect(server.ws + slug)
    message_id = str(uuid.uuid4())
    first = await publish(producer, context=11, messageId=message_id, payload=b64("first"))
    assert first["result"] == "ok" and first["messageId"] == message_id, first
    delivered = await recv(consumer)
    assert delivered["messageId"] == message_id and delivered["payload"] == b64("first")
    second = await publish(producer, context=12, messageId=message_id, payload=b64("second"))
    assert_error(second, "duplicate")
    assert second["context"] == 12
    marker = await assert_publishes(producer, "marker")
    assert (await recv(consumer))["messageId"] == marker["messageId"]
    rows = [m for m in stored(slug) if m.message_id == uuid.UUID(message_id)]
    assert len(rows) == 1 and rows[0].payload == b64("first")


async def test_producer_duplicate_message_id_in_one_batch(server: ServerProcess, sockets: Sockets) -> None:
    """Two frames with one messageId sent back to back: the first is ok and delivered, the second refused."""
    slug = make_topic()
    consumer = await sockets.subscribe(server.ws, slug)
    producer = await sockets.connect(server.ws + slug)
    message_id = str(uuid.uuid4())
    await send_json(producer, frame(context=13, messageId=message_id, payload=b64("first")))
    await send_json(producer, frame(context=14, messageId=message_id, payload=b64("second")))
    await send_json(producer, frame(context=15))
    acks = [await recv(producer) for _ in range(3)]
    assert [a["context"] for a in acks] == [13, 14, 15], acks
    assert acks[0]["result"] == "ok" and acks[2]["result"] == "ok", acks
    assert_error(acks[1], "duplicate")
    delivered = [await recv(consumer) for _ in range(2)]
    assert [d["messageId"] for d in delivered] == [message_id, acks[2]["messageId"]]
    assert delivered[0]["payload"] == b64("first")


@pytest.mark.parametrize("response_topic", ["status-ping", "bad name!", "x" * 201, "SOURCE", "OTHER"])
async def test_producer_bad_response_topic(server: ServerProcess, sockets: Sockets, response_topic: str) -> None:
    """A request naming a reserved, invalid or foreign response topic is refused with its context."""
    slug = make_topic()
    other = make_topic()
    response_topic = {"SOURCE": slug, "OTHER": other}.get(response_topic, response_topic)
    producer = await sockets.connect(server.ws + slug)
    ack = await publish(producer, context=16, properties={"response_topic": response_topic,
                                                          "messageType": "request", "requestContext": 16})
    assert_error(ack, "response topic")
    assert ack["context"] == 16
    assert stored(slug) == []
    await assert_publishes(producer)


@pytest.mark.parametrize("context", [17, "17", 0, ""], ids=["int", "str", "zero", "empty"])
async def test_error_ack_echoes_context(strict_server: ServerProcess, sockets: Sockets, context: int | str) -> None:
    """Every kind of refusal echoes the frame's context exactly (int stays int, str stays str)."""
    private = make_topic(public=False, anonymous=False)
    public = make_topic()
    cases: list[tuple[str, dict[str, Any]]] = [
        (public, frame(context, payload=1)),
        (public, frame(context, messageId="nope")),
        (public, frame(context, payload="p" * SMALL_FRAME_BYTES)),
        (public, frame(context, properties={"response_topic": "status-ping"})),
        (private, frame(context)),
        (unique(), frame(context)),
    ]
    for slug, value in cases:
        producer = await sockets.connect(strict_server.ws + slug)
        ack = await publish(producer, **value)
        assert_error(ack)
        assert "context" in ack and ack["context"] == context and type(ack["context"]) is type(context), ack


async def test_producer_bogus_redelivery_count_does_not_poison_replay(server: ServerProcess,
                                                                      sockets: Sockets) -> None:
    """A producer-supplied redeliveryCount of the wrong type never stops stored messages from replaying."""
    slug = make_topic()
    producer = await sockets.connect(server.ws + slug)
    bogus = await publish(producer, context=18, redeliveryCount="many")
    good = await assert_publishes(producer, "good")
    consumer = await sockets.subscribe(server.ws, slug, probe=False)
    expected = [good["messageId"]]
    if bogus["result"] == "ok":
        expected.insert(0, bogus["messageId"])
    else:
        assert_error(bogus, "redeliveryCount")
    replayed = [await recv(consumer) for _ in expected]
    assert [m["messageId"] for m in replayed] == expected
    assert all(m["redeliveryCount"] == 1 for m in replayed), replayed


async def test_producer_non_canonical_message_id_can_be_acked_after_replay(server: ServerProcess,
                                                                           sockets: Sockets) -> None:
    """A stored message with an uppercase producer messageId is replayed and its ack is taken."""
    slug = make_topic()
    producer = await sockets.connect(server.ws + slug)
    message_id = str(uuid.uuid4()).upper()
    ack = await publish(producer, context=19, messageId=message_id)
    assert ack["result"] == "ok", ack
    consumer = await sockets.subscribe(server.ws, slug, probe=False)
    replayed = await recv(consumer)
    assert uuid.UUID(replayed["messageId"]) == uuid.UUID(message_id)
    await send_json(consumer, {"messageId": replayed["messageId"]})
    marker = await assert_publishes(producer, "marker")
    after = await recv(consumer)
    assert after.get("messageId") == marker["messageId"], after
    assert [m.message_id for m in stored(slug)] == [uuid.UUID(marker["messageId"])]


# --- consumer socket --------------------------------------------------------------------------


async def test_consumer_ack_without_message_id(server: ServerProcess, sockets: Sockets) -> None:
    """An ack without messageId gets an error frame naming the field; delivery goes on."""
    slug = make_topic()
    consumer = await sockets.subscribe(server.ws, slug)
    assert_error(await send_raw(consumer, json.dumps({"ack": True})), "messageId")
    await assert_flows(consumer, await sockets.connect(server.ws + slug))


@pytest.mark.parametrize("value", [123, None, ["x"], {"id": "x"}, True], ids=lambda v: json.dumps(v))
async def test_consumer_ack_message_id_wrong_type(server: ServerProcess, sockets: Sockets, value: Any) -> None:
    """An ack whose messageId is not a string gets an error frame; delivery goes on."""
    slug = make_topic()
    consumer = await sockets.subscribe(server.ws, slug)
    assert_error(await send_raw(consumer, json.dumps({"messageId": value})), "messageId")
    await assert_flows(consumer, await sockets.connect(server.ws + slug))


@pytest.mark.parametrize("value", ["UUID", "not-a-uuid", "", "x" * 10_000])
async def test_consumer_ack_unknown_message_id(server: ServerProcess, sockets: Sockets, value: str) -> None:
    """An ack of a messageId this connection was never sent gets an error frame; delivery goes on."""
    slug = make_topic()
    consumer = await sockets.subscribe(server.ws, slug)
    message_id = str(uuid.uuid4()) if value == "UUID" else value
    error = await send_raw(consumer, json.dumps({"messageId": message_id}))
    assert_error(error, "unknown messageId")
    assert len(error["errorMsg"]) < 500, "the error frame must not echo an unbounded id"
    await assert_flows(consumer, await sockets.connect(server.ws + slug))


async def test_consumer_ack_twice(server: ServerProcess, sockets: Sockets) -> None:
    """A second ack of the same message is an unknown messageId; the first ack still counts."""
    slug = make_topic()
    consumer = await sockets.subscribe(server.ws, slug)
    producer = await sockets.connect(server.ws + slug)
    ack = await assert_publishes(producer, "once")
    message = await recv(consumer)
    await send_json(consumer, {"messageId": message["messageId"]})
    assert_error(await send_raw(consumer, json.dumps({"messageId": message["messageId"]})), "unknown messageId")
    await assert_flows(consumer, producer)
    assert uuid.UUID(ack["messageId"]) not in [m.message_id for m in stored(slug)]


async def test_consumer_non_json(server: ServerProcess, sockets: Sockets) -> None:
    """A consumer's non-JSON frame gets an error frame; delivery goes on."""
    slug = make_topic()
    consumer = await sockets.subscribe(server.ws, slug)
    assert_error(await send_raw(consumer, "ack!"), "json")
    assert_error(await send_raw(consumer, "[1, 2]"), "object")
    await assert_flows(consumer, await sockets.connect(server.ws + slug))


async def test_consumer_binary_frame(server: ServerProcess, sockets: Sockets) -> None:
    """A consumer's binary frame gets an error frame; delivery goes on."""
    slug = make_topic()
    consumer = await sockets.subscribe(server.ws, slug)
    assert_error(await send_raw(consumer, b'{"messageId": "x"}'), "binary")
    await assert_flows(consumer, await sockets.connect(server.ws + slug))


@pytest.mark.parametrize("who", ["anonymous", "user", "bad token"])
async def test_consumer_without_consume_permission(server: ServerProcess, sockets: Sockets, who: str) -> None:
    """Consuming a private topic without can_consume gets an error frame, then close code 4403."""
    owner = make_user()
    slug = make_topic(public=False, anonymous=False, consumers=(owner,), producers=(owner,))
    headers = {"anonymous": None, "user": auth(make_token(make_user())), "bad token": auth("garbage")}[who]
    consumer = await sockets.subscribe(server.ws, slug, headers=headers, probe=False)
    frames, code = await closed_with(consumer)
    assert code == 4403, frames
    assert len(frames) == 1, frames
    assert_error(frames[0], "not allowed to consume", *(["invalid"] if who == "bad token" else []))
    # The owner is not affected.
    allowed = await sockets.subscribe(server.ws, slug, headers=auth(make_token(owner)))
    await assert_flows(allowed, await sockets.connect(server.ws + slug, auth(make_token(owner))))


@pytest.mark.parametrize("path", ["status-ping/sub", "v2/consumer/persistent/public/default/status-ping/sub"])
async def test_consumer_of_status_ping(server: ServerProcess, sockets: Sockets, path: str) -> None:
    """status-ping is reserved: a consumer socket on it gets an error frame, then close code 4404."""
    consumer = await sockets.connect(server.ws + path)
    frames, code = await closed_with(consumer)
    assert code == 4404, frames
    assert len(frames) == 1, frames
    assert_error(frames[0], "status-ping", "reserved")


@pytest.mark.parametrize("path", ["/nope/a/b/c", "/ws/a/b/c", "/ws/bad.topic", "/ws/", "/"])
async def test_unknown_websocket_path(server: ServerProcess, sockets: Sockets, path: str) -> None:
    """An unknown websocket path gets an error frame naming the path, then close code 4404."""
    ws = await sockets.connect(f"ws://127.0.0.1:{server.port}{path}")
    frames, code = await closed_with(ws)
    assert code == 4404, frames
    assert len(frames) == 1, frames
    assert_error(frames[0], "no websocket endpoint", path)
    slug = make_topic()
    await assert_flows(await sockets.subscribe(server.ws, slug), await sockets.connect(server.ws + slug))


# --- status-ping socket -----------------------------------------------------------------------


def pong(source: str | None, context: str = "1", **properties: Any) -> dict[str, Any]:
    props: dict[str, Any] = {"messageType": "pong", "requestContext": context, "status": "success"}
    if source is not None:
        props["source_topic"] = source
    props.update(properties)
    return {"payload": "", "properties": props, "context": context}


def last_pong(slug: str) -> Any:
    return Topic.objects.values_list("last_pong", flat=True).get(slug=slug)


async def test_status_ping_pong_without_source_topic(server: ServerProcess, sockets: Sockets) -> None:
    """A pong without source_topic gets an error ack with its context; a valid pong is then taken."""
    ping = await sockets.connect(server.ws + "status-ping")
    for bad in (pong(None, "20"), pong("", "20"), pong(None, "20", source_topic=5)):
        await send_json(ping, bad)
        ack = await recv(ping)
        assert_error(ack, "source_topic")
        assert ack["context"] == "20"
    slug = make_topic()
    await send_json(ping, pong(slug, "21"))
    ack = await recv(ping)
    assert ack["result"] == "ok" and ack["context"] == "21", ack
    assert last_pong(slug) is not None


async def test_status_ping_pong_for_missing_topic(server: ServerProcess, sockets: Sockets) -> None:
    """A pong for a topic that does not exist gets an error saying so; no topic is created."""
    ping = await sockets.connect(server.ws + "status-ping")
    missing = unique()
    await send_json(ping, pong(missing, "22"))
    ack = await recv(ping)
    assert_error(ack, "does not exist", missing)
    assert ack["context"] == "22"
    assert not Topic.objects.filter(slug=missing).exists()
    slug = make_topic()
    await send_json(ping, pong(slug, "23"))
    ack = await recv(ping)
    assert ack["result"] == "ok" and ack["context"] == "23", ack


async def test_status_ping_pong_for_topic_created_later(server: ServerProcess, sockets: Sockets) -> None:
    """A topic created after a pong for it was refused is found by the next pong on the same socket."""
    ping = await sockets.connect(server.ws + "status-ping")
    slug = unique()
    await send_json(ping, pong(slug, "30"))
    assert_error(await recv(ping), "does not exist")
    make_topic(slug)
    await send_json(ping, pong(slug, "31"))
    ack = await recv(ping)
    assert ack["result"] == "ok" and ack["context"] == "31", ack
    assert last_pong(slug) is not None


async def test_status_ping_pong_for_foreign_topic(server: ServerProcess, sockets: Sockets) -> None:
    """A pong for another user's private topic is refused and its last_pong stays unchanged."""
    owner, stranger = make_user(), make_user()
    foreign = make_topic(public=False, anonymous=False, consumers=(owner,), producers=(owner,))
    mine = make_topic(public=False, anonymous=False, consumers=(stranger,))
    before = last_pong(foreign)
    ping = await sockets.connect(server.ws + "status-ping", auth(make_token(stranger)))
    await send_json(ping, pong(foreign, "24"))
    ack = await recv(ping)
    assert_error(ack, "not allowed", foreign)
    assert ack["context"] == "24"
    api_info = {"payload": "", "context": "25", "properties": {
        "messageType": "response", "source_topic": foreign, "api_info": json.dumps({"x": 1})}}
    await send_json(ping, api_info)
    assert_error(await recv(ping), "not allowed", foreign)
    await send_json(ping, pong(mine, "26"))
    ack = await recv(ping)
    assert ack["result"] == "ok" and ack["context"] == "26", ack
    assert last_pong(mine) is not None
    topic = Topic.objects.get(slug=foreign)
    assert topic.last_pong == before and topic.api_info == {}


@pytest.mark.parametrize("api_info", ["{not json", "", 5, None])
async def test_status_ping_api_info_not_json(server: ServerProcess, sockets: Sockets, api_info: Any) -> None:
    """An api_info answer that is not a JSON string gets an error; the stored api_info is unchanged."""
    slug = make_topic()
    ping = await sockets.connect(server.ws + "status-ping")
    await send_json(ping, {"payload": "", "context": "27", "properties": {
        "messageType": "response", "source_topic": slug, "api_info": api_info}})
    ack = await recv(ping)
    assert_error(ack, "api_info" if isinstance(api_info, str) else "pong")
    assert ack["context"] == "27"
    assert Topic.objects.get(slug=slug).api_info == {}
    good = {"payload": "", "context": "28", "properties": {
        "messageType": "response", "source_topic": slug, "api_info": json.dumps({"ok": True})}}
    await send_json(ping, good)
    ack = await recv(ping)
    assert ack["result"] == "ok" and ack["context"] == "28", ack
    assert Topic.objects.get(slug=slug).api_info == {"ok": True}


async def test_status_ping_malformed_frames(server: ServerProcess, sockets: Sockets) -> None:
    """Non-JSON, binary, non-object and wrongly typed frames on status-ping get error acks."""
    ping = await sockets.connect(server.ws + "status-ping")
    assert_error(await send_raw(ping, "nope"), "json")
    assert_error(await send_raw(ping, b"{}"), "binary")
    assert_error(await send_raw(ping, "[]"), "object")
    assert_error(await send_raw(ping, json.dumps({"properties": "pong"})), "properties")
    slug = make_topic()
    await send_json(ping, pong(slug, "29"))
    ack = await recv(ping)
    assert ack["result"] == "ok" and ack["context"] == "29", ack


# --- isolation --------------------------------------------------------------------------------

BAD_FRAMES: list[str | bytes] = [
    "{nope",
    b"\x00\x01binary",
    "[]",
    "42",
    json.dumps(frame(payload=1)),
    json.dumps(frame(properties=[])),
    json.dumps(frame(context=1.5)),
    json.dumps(frame(messageId="not-a-uuid")),
    json.dumps({"messageId": 5}),
]


async def test_burst_of_bad_frames_does_not_disturb_others(server: ServerProcess, sockets: Sockets) -> None:
    """While one connection sends hundreds of bad frames, another client's publish/consume works."""
    noisy_slug, quiet_slug = make_topic(), make_topic()
    noisy = await sockets.connect(server.ws + noisy_slug)
    noisy_consumer = await sockets.subscribe(server.ws, noisy_slug)
    quiet_consumer = await sockets.subscribe(server.ws, quiet_slug)
    quiet = await sockets.connect(server.ws + quiet_slug)
    rounds = 40
    burst = BAD_FRAMES * rounds

    async def flood() -> None:
        for bad in burst:
            await noisy.send(bad)
            await noisy_consumer.send(bad)

    flooding = asyncio.create_task(flood())
    for n in range(5):
        ack = await assert_publishes(quiet, f"quiet-{n}")
        message = await recv(quiet_consumer)
        assert message["messageId"] == ack["messageId"]
        await send_json(quiet_consumer, {"messageId": message["messageId"]})
    await asyncio.wait_for(flooding, TIMEOUT_S)
    for _ in burst:
        assert_error(await recv(noisy))
        assert_error(await recv(noisy_consumer))
    assert stored(noisy_slug) == []
    await assert_flows(noisy_consumer, noisy)


async def test_topics_are_isolated(server: ServerProcess, sockets: Sockets) -> None:
    """A message published to topic A never reaches a consumer of topic B."""
    a, b = make_topic(), make_topic()
    consumer_a = await sockets.subscribe(server.ws, a)
    consumer_b = await sockets.subscribe(server.ws, b)
    producer_a = await sockets.connect(server.ws + a)
    producer_b = await sockets.connect(server.ws + b)
    on_a = await assert_publishes(producer_a, "for-a")
    # Also the Pulsar path and a shared subscription name reach only their own topic.
    pulsar_a = await sockets.connect(server.ws + f"v2/producer/persistent/public/default/{a}")
    on_a_too = await assert_publishes(pulsar_a, "for-a-too")
    marker = await assert_publishes(producer_b, "marker-b")
    first = await recv(consumer_b)
    assert first["messageId"] == marker["messageId"] and first["context"] == "marker-b", first
    got_a = [await recv(consumer_a) for _ in range(2)]
    assert [m["messageId"] for m in got_a] == [on_a["messageId"], on_a_too["messageId"]]


async def test_stored_message_survives_bad_frames(server: ServerProcess, sockets: Sockets) -> None:
    """A stored message is still delivered, intact, after bad frames on its topic's sockets."""
    slug = make_topic()
    producer = await sockets.connect(server.ws + slug)
    original = await publish(producer, context="keep", payload=b64("precious"))
    assert original["result"] == "ok", original
    for bad in BAD_FRAMES:
        assert_error(await send_raw(producer, bad))
    # A duplicate of the stored message's id must not replace it.
    assert_error(await publish(producer, context="dup", messageId=original["messageId"], payload=b64("x")))
    consumer = await sockets.subscribe(server.ws, slug, probe=False)
    for bad in [*BAD_FRAMES, json.dumps({"messageId": str(uuid.uuid4())})]:
        await consumer.send(bad)
    # The replay runs beside the receive loop, so the error answers may come before or after it.
    frames = [await recv(consumer) for _ in range(len(BAD_FRAMES) + 2)]
    [replayed] = [f for f in frames if "messageId" in f]
    assert replayed["messageId"] == original["messageId"], replayed
    assert replayed["payload"] == b64("precious") and replayed["context"] == "keep"
    for frame in frames:
        if frame is not replayed:
            assert_error(frame)
    await consumer.close()
    # Not acked: it comes back on reconnect, counted as redelivered.
    consumer = await sockets.subscribe(server.ws, slug, probe=False)
    replayed = await recv(consumer)
    assert replayed["messageId"] == original["messageId"] and replayed["redeliveryCount"] == 2, replayed
    await send_json(consumer, {"messageId": replayed["messageId"]})
    await assert_flows(consumer, producer)
