"""Bad input on consumer and status-ping sockets: an error frame or a documented close code, and the
socket (and server) keep going (docs/architecture.md section 15, docs/dasf-protocol.md sections 4 and 6)."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from websockets.exceptions import InvalidStatus

from app.broker.models import Topic
from tests.bad_input import (
    Sockets,
    assert_error,
    assert_flows,
    assert_publishes,
    closed_with,
    last_pong,
    pong,
    recv,
    send_raw,
    stored,
)
from tests.protocol import (
    auth,
    connect,
    make_token,
    make_topic,
    make_user,
    send_json,
    unique,
)
from tests.servers import ServerProcess

# --- consumer socket --------------------------------------------------------------------------

pytestmark = pytest.mark.usefixtures("no_server_crash")


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


async def test_consumer_of_status_ping(server: ServerProcess, sockets: Sockets) -> None:
    """status-ping is reserved: a consumer socket on it gets an error frame, then close code 4404."""
    consumer = await sockets.connect(server.ws + "status-ping/sub")
    frames, code = await closed_with(consumer)
    assert code == 4404, frames
    assert len(frames) == 1, frames
    assert_error(frames[0], "status-ping", "reserved")


async def test_pulsar_consumer_of_status_ping(server: ServerProcess) -> None:
    """status-ping is reserved: a /ws/v2/ consumer handshake on it is refused with HTTP 404 saying so."""
    with pytest.raises(InvalidStatus) as refused:
        await connect(server.ws + "v2/consumer/persistent/public/default/status-ping/sub")
    assert refused.value.response.status_code == 404
    assert b"reserved" in refused.value.response.body


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


