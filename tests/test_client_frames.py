"""The client SDK's reading of what a broker sends, with crafted frames and no socket: a delivery or an
ack of an unexpected shape (another Pulsar-compatible broker's, or a broken one's) is read as far as
it makes sense, never raised into the connection (which would drop it, and the broker would send the
same frame again on the next one, for ever)."""

from __future__ import annotations

import asyncio
import base64
from typing import Any

import pytest

from switchyard_client import codec
from switchyard_client.consumer import Consumer
from switchyard_client.dasf import MAX_PAYLOAD_BYTES, fragments
from switchyard_client.errors import SendError
from switchyard_client.link import Dialer
from switchyard_client.message import Message
from switchyard_client.producer import Outgoing, Producer

pytestmark = pytest.mark.database_agnostic

URL = "ws://127.0.0.1:9/ws/v2/consumer/persistent/public/default/t/s"


async def _nothing(_: Message) -> None:
    return None


def _consumer() -> Consumer:
    return Consumer(Dialer({}), URL, "t", "s", pull=False, receiver_queue_size=10)


@pytest.mark.parametrize("fields", [
    {"publishTime": 1700000000000},
    {"publishTime": "not a time"},
    {"redeliveryCount": "many"},
    {"redeliveryCount": None, "properties": ["a"], "key": 5},
    {"payload": 12},
    {"payload": "%%% not base64"},
])
async def test_a_delivery_with_odd_fields_is_still_handed_over(fields: dict[str, Any]) -> None:
    """A delivery whose fields have unexpected types reaches the application with defaults for them."""
    consumer = _consumer()
    await consumer._frame({"messageId": "m-1", "publishTime": "2024-01-01T00:00:00Z", "payload": "aGk=", **fields})
    message = consumer._queue.get_nowait()
    assert isinstance(message, Message) and message.id == "m-1"
    assert isinstance(message.properties, dict) and isinstance(message.redelivery_count, int)


def test_message_of_reads_pulsars_delivery() -> None:
    """A delivery as Apache Pulsar sends it gives every field."""
    message = Message.of({"messageId": "CAAQAw==", "payload": "aGk=", "properties": {"a": "1"},
                          "publishTime": "2017-08-02T18:39:16.163Z", "redeliveryCount": 2, "key": "k"},
                         _nothing, _nothing)
    assert (message.id, message.data, message.properties, message.key, message.redelivery_count) == \
        ("CAAQAw==", b"hi", {"a": "1"}, "k", 2)
    assert message.publish_time is not None and message.publish_time.year == 2017


@pytest.mark.parametrize("frame", [[1, 2], "text", 7, None, {"messageId": 5, "publishTime": "x"}, {"result": 3}])
async def test_frames_that_are_no_delivery_are_ignored(frame: Any) -> None:
    """JSON that is no object, or an object that is no delivery nor error, changes nothing."""
    consumer = _consumer()
    await consumer._frame(frame)
    assert consumer._queue.empty() and not consumer.errors


def _producer() -> Producer:
    return Producer(Dialer({}), "ws://127.0.0.1:9/ws/v2/producer/persistent/public/default/t", "t", 5.0)


async def test_pulsars_error_ack_without_message_id_fails_the_send() -> None:
    """Apache Pulsar leaves messageId out of an error ack and echoes context as a string: the send
    it answers raises SendError with its result."""
    producer = _producer()
    entry = producer._submit(Outgoing(b"x"))
    context = next(iter(producer._acks.pending))
    await producer._frame({"result": "send-error:7", "errorMsg": "Invalid payload encoding", "context": str(context)})
    with pytest.raises(SendError) as raised:
        entry.future.result()
    assert raised.value.result == "send-error:7"


async def test_an_ok_ack_with_a_string_context_resolves_the_send_with_the_brokers_id() -> None:
    """Apache Pulsar echoes the context as a string (its type there) and names the message itself: the
    send returns that id, the one consumers get."""
    producer = _producer()
    entry = producer._submit(Outgoing(b"x"))
    context = next(iter(producer._acks.pending))
    await producer._frame({"result": "ok", "messageId": "CAAQAw==", "context": str(context)})
    assert entry.future.result() == "CAAQAw=="


@pytest.mark.parametrize("frame", [{"result": None}, {"result": "ok", "context": {"a": 1}}, {"result": "ok"},
                                   {"result": "ok", "messageId": 7, "context": 99}, [1], "ok"])
async def test_odd_acks_are_dropped(frame: Any) -> None:
    """An ack of an unexpected shape, or for no pending send, is dropped without an error."""
    producer = _producer()
    entry = producer._submit(Outgoing(b"x"))
    await producer._frame(frame)
    assert not entry.future.done()
    producer._acks.fail_all(asyncio.CancelledError())


def test_a_large_response_is_cut_as_demessaging_cuts_it() -> None:
    """Above 500 KiB a response goes as numbered pieces of its base64 text, each sent as exactly that text."""
    payload = bytes(range(256)) * 5000
    pieces = fragments(payload, {"status": "success"})
    texts = [codec.encode_payload(piece.data) for piece in pieces]
    assert [len(text) for text in texts[:-1]] == [MAX_PAYLOAD_BYTES] * (len(pieces) - 1)
    assert [(p.properties or {})["fragment"] for p in pieces] == list(range(len(pieces)))
    assert {(p.properties or {})["num_fragments"] for p in pieces} == {len(pieces)}
    assert base64.b64decode("".join(texts)) == payload
    assert fragments(b"small", {}) == [Outgoing(b"small", {})]
