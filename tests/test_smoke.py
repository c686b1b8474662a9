"""The basic produce -> consume round trip on a real server."""

from tests.protocol import connect, make_topic, publish, recv_json, send_json, subscribe


async def test_message_reaches_consumer(server):
    """A published message is delivered with messageId and publishTime, and acked ok."""
    slug = make_topic()
    consumer = await subscribe(server.ws, slug)
    producer = await connect(server.ws + slug)
    ack = await publish(producer, context=7)
    assert ack["result"] == "ok" and ack["context"] == 7
    message = await recv_json(consumer)
    assert message["messageId"] == ack["messageId"]
    assert message["context"] == 7 and "publishTime" in message
    await send_json(consumer, {"messageId": message["messageId"]})
