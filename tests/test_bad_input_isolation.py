"""Bad input never disturbs anyone else, and nothing stored is lost (docs/architecture.md section 15)."""

from __future__ import annotations

import asyncio
import json
import uuid

import pytest

from tests.bad_input import (
    Sockets,
    assert_error,
    assert_flows,
    assert_publishes,
    frame,
    recv,
    send_raw,
    stored,
)
from tests.protocol import (
    TIMEOUT_S,
    b64,
    make_topic,
    publish,
    send_json,
)
from tests.servers import ServerProcess

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

pytestmark = pytest.mark.usefixtures("no_server_crash")


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
    for answer in frames:
        if answer is not replayed:
            assert_error(answer)
    await consumer.close()
    # Not acked: it comes back on reconnect, counted as redelivered.
    consumer = await sockets.subscribe(server.ws, slug, probe=False)
    replayed = await recv(consumer)
    assert replayed["messageId"] == original["messageId"] and replayed["redeliveryCount"] == 2, replayed
    await send_json(consumer, {"messageId": replayed["messageId"]})
    await assert_flows(consumer, producer)

