"""Consumer frames with a ``type`` are control frames, never acks (issue 11, defect 6): Pulsar's
``negativeAcknowledge`` used to be read as an ack and its message deleted."""

from __future__ import annotations

import pytest

from app.broker.models import Message
from tests.protocol import connect, eventually, make_topic, publish, recv_json, send_json, subscribe


@pytest.mark.parametrize("kind", ["negativeAcknowledge", "permit", "unsubscribe", "isEndOfTopic", "ack"])
async def test_control_frame_is_not_an_ack(server, kind):
    """A control frame naming a delivered message gets an error frame; the message stays stored."""
    slug = make_topic(policy="cache")
    consumer = await subscribe(server.ws, slug)
    producer = await connect(server.ws + slug)
    ack = await publish(producer, 1)
    delivered = await recv_json(consumer)
    await send_json(consumer, {"type": kind, "messageId": delivered["messageId"]})
    refusal = await recv_json(consumer)
    assert "error" in refusal["result"] and kind in refusal["errorMsg"]
    # The ack the consumer sends next still counts: the control frame consumed nothing.
    await send_json(consumer, {"messageId": delivered["messageId"]})
    await send_json(consumer, {"messageId": "00000000-0000-0000-0000-000000000000"})
    assert "unknown messageId" in (await recv_json(consumer))["errorMsg"]
    await eventually(lambda: not Message.objects.filter(message_id=ack["messageId"]).exists(),
                     message="the ack after the control frame removed the message")


async def test_nacked_message_is_redelivered(server):
    """A negatively acknowledged message comes back when the consumer reconnects."""
    slug = make_topic(policy="cache")
    consumer = await subscribe(server.ws, slug)
    producer = await connect(server.ws + slug)
    ack = await publish(producer, 1)
    delivered = await recv_json(consumer)
    await send_json(consumer, {"type": "negativeAcknowledge", "messageId": delivered["messageId"]})
    assert "error" in (await recv_json(consumer))["result"]
    await consumer.close()
    again = await subscribe(server.ws, slug, probe=False)
    replayed = await recv_json(again)
    assert replayed["messageId"] == ack["messageId"] and replayed["redeliveryCount"] == 1


async def test_control_frame_type_of_any_json(server):
    """A ``type`` that is not a string is still a control frame, answered with an error."""
    slug = make_topic()
    consumer = await subscribe(server.ws, slug)
    await send_json(consumer, {"type": {"nested": [1, 2]}, "messageId": "x"})
    assert "error" in (await recv_json(consumer))["result"]


@pytest.mark.parametrize("frame", [{"Type": "negativeAcknowledge"}, {"action": "nack"}, {"ack": False}])
async def test_ack_with_anything_else_is_refused(server, frame):
    """A frame naming a delivered message with any other key is refused, and the message stays."""
    slug = make_topic(policy="cache")
    consumer = await subscribe(server.ws, slug)
    producer = await connect(server.ws + slug)
    ack = await publish(producer, 1)
    delivered = await recv_json(consumer)
    await send_json(consumer, {**frame, "messageId": delivered["messageId"]})
    refusal = await recv_json(consumer)
    assert "error" in refusal["result"] and "invalid ack" in refusal["errorMsg"]
    await consumer.close()
    again = await subscribe(server.ws, slug, probe=False)
    assert (await recv_json(again))["messageId"] == ack["messageId"]
