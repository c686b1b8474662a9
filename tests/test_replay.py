"""Replay of outstanding messages on (re)connect, and the api_info probe."""

from __future__ import annotations

from app.broker.models import Topic
from tests.protocol import connect, make_topic, publish, recv_json, send_json, subscribe


async def publish_many(server, slug: str, count: int) -> list[str]:
    producer = await connect(server.ws + slug)
    ids = []
    for n in range(count):
        ack = await publish(producer, context=n)
        assert ack["result"] == "ok"
        ids.append(ack["messageId"])
    await producer.close()
    return ids


async def test_replay_in_publish_order(server):
    """Messages queued while nobody listened arrive in publish order on connect."""
    slug = make_topic(policy="cache")
    ids = await publish_many(server, slug, 5)
    consumer = await subscribe(server.ws, slug, probe=False)
    got = [await recv_json(consumer) for _ in ids]
    assert [f["messageId"] for f in got] == ids
    assert [f["context"] for f in got] == list(range(5))


async def test_redelivery_count_increments(server):
    """Each reconnect without an ack replays the message with a higher redeliveryCount."""
    slug = make_topic(policy="cache")
    [message_id] = await publish_many(server, slug, 1)
    for expected in (1, 2, 3):
        consumer = await subscribe(server.ws, slug, probe=False)
        frame = await recv_json(consumer)
        assert (frame["messageId"], frame["redeliveryCount"]) == (message_id, expected)
        await consumer.close()


async def test_replay_then_live_without_duplicates(server):
    """After the replay, live messages follow, and none is sent twice."""
    slug = make_topic(policy="cache")
    ids = await publish_many(server, slug, 3)
    consumer = await subscribe(server.ws, slug, probe=False)
    # Published only once the replay arrived: published earlier, it is part of the replay itself.
    replayed = [await recv_json(consumer) for _ in range(3)]
    producer = await connect(server.ws + slug)
    live = await publish(producer, context="live")
    frames = [*replayed, await recv_json(consumer)]
    assert [f["messageId"] for f in frames] == [*ids, live["messageId"]]
    assert "redeliveryCount" not in frames[-1]


async def test_replay_keeps_fields_exactly(server):
    """Replayed frames keep the producer's fields: ints stay ints, a missing payload stays missing."""
    slug = make_topic(policy="cache")
    producer = await connect(server.ws + slug)
    await send_json(producer, {"properties": {"requestContext": 3, "messageType": "api_info"}, "context": 3,
                               "extra": {"k": [1, 2]}})
    assert (await recv_json(producer))["result"] == "ok"
    consumer = await subscribe(server.ws, slug, probe=False)
    frame = await recv_json(consumer)
    assert frame["properties"] == {"requestContext": 3, "messageType": "api_info"}
    assert frame["context"] == 3 and frame["extra"] == {"k": [1, 2]}
    assert "payload" not in frame


async def test_api_info_probe_when_nothing_outstanding(server):
    """A consumer of a DASF topic with nothing queued gets an api_info probe to status-ping."""
    slug = make_topic()
    consumer = await connect(f"{server.ws}{slug}/sub")
    probe = await recv_json(consumer)
    assert probe["properties"] == {"requestContext": 1, "messageType": "api_info", "response_topic": "status-ping"}
    assert probe["payload"] == "" and probe["messageId"] and probe["publishTime"]


async def test_no_probe_for_non_dasf_topic(server):
    """A topic created with --no-dasf is never probed: the first frame is a real message."""
    slug = make_topic(dasf=False)
    consumer = await connect(f"{server.ws}{slug}/sub")
    producer = await connect(server.ws + slug)
    ack = await publish(producer)
    assert (await recv_json(consumer))["messageId"] == ack["messageId"]


async def test_api_info_answer_is_stored(server):
    """An api_info answer on status-ping fills the topic's api_info."""
    slug = make_topic()
    answer = await connect(server.ws + "status-ping")
    await send_json(answer, {"properties": {"api_info": '{"functions": ["f"]}', "requestContext": "1",
                                            "messageType": "response", "source_topic": slug},
                             "context": "1", "payload": ""})
    ack = await recv_json(answer)
    assert ack["result"] == "ok" and ack["context"] == "1"
    assert Topic.objects.get(slug=slug).api_info == {"functions": ["f"]}


async def test_pong_updates_last_pong(server):
    """A pong on status-ping from a permitted consumer sets last_pong."""
    slug = make_topic()
    answer = await connect(server.ws + "status-ping")
    await send_json(answer, {"properties": {"requestContext": "1", "messageType": "pong", "source_topic": slug},
                             "context": "1", "payload": ""})
    assert (await recv_json(answer))["result"] == "ok"
    assert Topic.objects.get(slug=slug).last_pong is not None
