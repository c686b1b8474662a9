"""Bad input on producer sockets: every bad frame gets an error ack (``send-error``, ``errorMsg``, the
producer's context) and the socket keeps publishing (docs/architecture.md section 15,
docs/dasf-protocol.md section 3)."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest

from app.broker.models import Topic
from tests.bad_input import (
    HARD_LIMIT_BYTES,
    SMALL_FRAME_BYTES,
    Sockets,
    assert_error,
    assert_publishes,
    closed_with,
    frame,
    recv,
    send_raw,
    stored,
)
from tests.protocol import (
    auth,
    b64,
    make_token,
    make_topic,
    make_user,
    publish,
    send_json,
    unique,
)
from tests.servers import ServerProcess

# --- producer socket --------------------------------------------------------------------------

pytestmark = pytest.mark.usefixtures("no_server_crash")


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




@pytest.mark.parametrize(("field", "value"), [
    ("payload", "a\x00b"),
    ("properties", {"note": "x\x00"}),
    ("properties", {"nested": [{"\x00key": 1}]}),
    ("context", "c\x00"),
], ids=["payload", "property-value", "nested-key", "context"])
async def test_producer_nul_on_storing_topic(server: ServerProcess, sockets: Sockets, field: str, value: Any) -> None:
    """A message to be stored holding a NUL character (PostgreSQL cannot store it) gets an error ack
    naming the field on every backend; nothing is stored and the producer keeps publishing."""
    slug = make_topic(policy="store")
    producer = await sockets.connect(server.ws + slug)
    assert_error(await send_raw(producer, json.dumps(frame(6) | {field: value})), field, "NUL")
    assert stored(slug) == []
    await assert_publishes(producer)
