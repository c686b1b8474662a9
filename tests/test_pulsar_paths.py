"""What the /ws/v2/ paths already do differently from the DASF paths (docs/architecture.md 18.1,
18.2): ``isEndOfTopic`` is answered on Pulsar consumers, and publish frames to topics that are not
``supports_dasf`` must carry a base64 payload. DASF topics keep today's behaviour on both shapes."""

from __future__ import annotations

from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection

from tests.bad_input import assert_error, recv, stored
from tests.protocol import b64, connect, make_topic, publish, send_json, subscribe
from tests.servers import ServerProcess

PULSAR_PREFIX = "v2/{kind}/persistent/public/default/"


def producer_url(server: ServerProcess, slug: str, pulsar: bool) -> str:
    return server.ws + (PULSAR_PREFIX.format(kind="producer") if pulsar else "") + slug


async def pulsar_consumer(server: ServerProcess, slug: str, *, dasf: bool) -> ClientConnection:
    """A consumer on /ws/v2/consumer/...; a DASF topic's api_info probe is read and acked first."""
    return await subscribe(server.ws + PULSAR_PREFIX.format(kind="consumer"), slug, probe=dasf)


# --- isEndOfTopic -------------------------------------------------------------------------------

@pytest.mark.parametrize("dasf", [False, True], ids=["pulsar-topic", "dasf-topic"])
async def test_is_end_of_topic_answered_on_pulsar_consumer(server: ServerProcess, dasf: bool) -> None:
    """{"type": "isEndOfTopic"} on /ws/v2/consumer/ is answered {"endOfTopic": false}, DASF topic or not."""
    consumer = await pulsar_consumer(server, make_topic(dasf=dasf), dasf=dasf)
    await send_json(consumer, {"type": "isEndOfTopic"})
    assert await recv(consumer) == {"endOfTopic": False}


async def test_is_end_of_topic_refused_on_dasf_path(server: ServerProcess) -> None:
    """On a DASF consumer path isEndOfTopic stays an unsupported control frame (an error frame)."""
    slug = make_topic()
    consumer = await subscribe(server.ws, slug)
    await send_json(consumer, {"type": "isEndOfTopic"})
    assert_error(await recv(consumer), "isEndOfTopic")


async def test_is_end_of_topic_is_not_an_ack(server: ServerProcess) -> None:
    """An isEndOfTopic frame carrying a messageId is answered and does not ack that message."""
    slug = make_topic(dasf=False)
    consumer = await pulsar_consumer(server, slug, dasf=False)
    producer = await connect(producer_url(server, slug, pulsar=True))
    ack = await publish(producer, context=1)
    message = await recv(consumer)
    assert message["messageId"] == ack["messageId"], message
    await send_json(consumer, {"type": "isEndOfTopic", "messageId": message["messageId"]})
    assert await recv(consumer) == {"endOfTopic": False}
    # Still unacked: the real ack is taken silently (an already-acked id would get an error frame).
    await send_json(consumer, {"messageId": message["messageId"]})
    await send_json(consumer, {"type": "isEndOfTopic"})
    assert await recv(consumer) == {"endOfTopic": False}


async def test_other_control_frames_still_refused_on_pulsar_consumer(server: ServerProcess) -> None:
    """A control frame other than isEndOfTopic still gets an error frame on /ws/v2/consumer/."""
    consumer = await pulsar_consumer(server, make_topic(dasf=False), dasf=False)
    await send_json(consumer, {"type": "permit", "permitMessages": 1})
    assert_error(await recv(consumer), "permit")


# --- publish frames under Pulsar semantics ---------------------------------------------------------

@pytest.mark.parametrize(
    "fields",
    [{"payload": "not base64!"}, {"payload": "QQ"}, {"payload": 5}, {"payload": None}],
    ids=["not-base64", "unpadded", "number", "null"],
)
async def test_invalid_payload_refused_with_code_7(server: ServerProcess, fields: dict[str, Any]) -> None:
    """A non-DASF topic on /ws/v2/producer/: a payload that is not base64 gets send-error:7 with the context."""
    slug = make_topic(dasf=False, policy="store")
    producer = await connect(producer_url(server, slug, pulsar=True))
    ack = await publish(producer, context="c-7", **fields)
    assert ack["result"] == "send-error:7" and ack["errorMsg"] == "Invalid payload encoding", ack
    assert ack["context"] == "c-7", ack


async def test_missing_payload_refused_with_code_7(server: ServerProcess) -> None:
    """A non-DASF topic on /ws/v2/producer/: a frame without payload gets send-error:7."""
    slug = make_topic(dasf=False, policy="store")
    producer = await connect(producer_url(server, slug, pulsar=True))
    await send_json(producer, {"properties": {}, "context": 2})
    ack = await recv(producer)
    assert ack["result"] == "send-error:7" and ack["context"] == 2, ack


async def test_invalid_payload_not_stored_nor_delivered(server: ServerProcess) -> None:
    """A refused payload is neither stored nor delivered: the consumer's next frame is the next valid message."""
    slug = make_topic(dasf=False, policy="store")
    consumer = await pulsar_consumer(server, slug, dasf=False)
    producer = await connect(producer_url(server, slug, pulsar=True))
    assert (await publish(producer, context=1, payload="%%%"))["result"] == "send-error:7"
    good = await publish(producer, context=2)
    assert good["result"] == "ok", good
    assert (await recv(consumer))["messageId"] == good["messageId"]
    assert [str(m.message_id) for m in stored(slug)] == [good["messageId"]]


@pytest.mark.parametrize("payload", ["", b64({"n": 1})], ids=["empty", "base64"])
async def test_base64_payload_accepted_and_relayed(server: ServerProcess, payload: str) -> None:
    """A base64 payload (the empty string too) is acked ok and delivered as sent."""
    slug = make_topic(dasf=False)
    consumer = await pulsar_consumer(server, slug, dasf=False)
    producer = await connect(producer_url(server, slug, pulsar=True))
    ack = await publish(producer, context=3, payload=payload)
    assert ack["result"] == "ok", ack
    message = await recv(consumer)
    assert message["messageId"] == ack["messageId"] and message["payload"] == payload, message


@pytest.mark.parametrize("key", [5, None, {"k": 1}], ids=["number", "null", "object"])
async def test_key_not_a_string_refused(server: ServerProcess, key: Any) -> None:
    """A key that is not a string gets send-error:3 naming the key, with the context."""
    slug = make_topic(dasf=False)
    producer = await connect(producer_url(server, slug, pulsar=True))
    ack = await publish(producer, context=4, key=key)
    assert ack["result"] == "send-error:3" and "key" in ack["errorMsg"] and ack["context"] == 4, ack


async def test_string_key_kept_on_delivery(server: ServerProcess) -> None:
    """A string key is accepted and kept on the delivery."""
    slug = make_topic(dasf=False)
    consumer = await pulsar_consumer(server, slug, dasf=False)
    producer = await connect(producer_url(server, slug, pulsar=True))
    assert (await publish(producer, context=5, key="k1"))["result"] == "ok"
    assert (await recv(consumer))["key"] == "k1"


# --- DASF semantics unchanged -------------------------------------------------------------------

@pytest.mark.parametrize(
    ("pulsar", "dasf"),
    [(True, True), (False, True), (False, False)],
    ids=["v2-dasf-topic", "dasf-path-dasf-topic", "dasf-path-pulsar-topic"],
)
@pytest.mark.parametrize("fields", [{"payload": "not base64!"}, {}], ids=["not-base64", "no-payload"])
async def test_dasf_semantics_accept_any_payload(server: ServerProcess, pulsar: bool, dasf: bool,
                                                 fields: dict[str, Any]) -> None:
    """Without Pulsar semantics a payload that is not base64, or none, is accepted as today."""
    slug = make_topic(dasf=dasf)
    producer = await connect(producer_url(server, slug, pulsar=pulsar))
    await send_json(producer, {"properties": {}, "context": 6} | fields)
    ack = await recv(producer)
    assert ack["result"] == "ok" and ack["context"] == 6, ack


async def test_dasf_topic_on_v2_payload_type_error_unchanged(server: ServerProcess) -> None:
    """A DASF topic on /ws/v2/producer/: a payload that is no string keeps today's invalid-frame error."""
    slug = make_topic()
    producer = await connect(producer_url(server, slug, pulsar=True))
    ack = await publish(producer, context=7, payload=5)
    assert_error(ack, "payload")
    assert ack["result"] != "send-error:7" and ack["context"] == 7, ack
