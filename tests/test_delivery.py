"""Live delivery: fan-out, per-topic order, shared subscriptions, isolation of topics."""

from __future__ import annotations

import json

from tests.protocol import b64, connect, make_topic, publish, recv_json, send_json, subscribe


async def test_every_consumer_gets_every_message(server):
    """By default every consumer connection of a topic gets each message."""
    slug = make_topic()
    consumers = [await subscribe(server.ws, slug, f"s{i}") for i in range(3)]
    producer = await connect(server.ws + slug)
    ack = await publish(producer)
    for consumer in consumers:
        assert (await recv_json(consumer))["messageId"] == ack["messageId"]


async def test_pipelined_messages_keep_order(server):
    """200 messages sent without waiting for acks are acked and delivered in publish order."""
    slug = make_topic(policy="cache")
    consumer = await subscribe(server.ws, slug)
    producer = await connect(server.ws + slug)
    for n in range(200):
        await producer.send(json.dumps({"payload": b64(n), "properties": {}, "context": n}))
    acks = [await recv_json(producer) for _ in range(200)]
    assert [a["context"] for a in acks] == list(range(200))
    assert {a["result"] for a in acks} == {"ok"}
    frames = [await recv_json(consumer) for _ in range(200)]
    assert [f["context"] for f in frames] == list(range(200))


async def test_shared_subscription_splits_messages(server):
    """Connections of one Shared subscription share the messages round-robin."""
    slug = make_topic(policy="disabled")
    query = "?subscriptionType=Shared"
    first = await subscribe(server.ws, slug, "workers", query=query)
    second = await connect(f"{server.ws}{slug}/workers{query}")  # a shared peer is attached: no probe
    watcher = await subscribe(server.ws, slug, "watcher")
    producer = await connect(server.ws + slug)
    ids = [(await publish(producer, context=n))["messageId"] for n in range(4)]
    seen_by_watcher = [(await recv_json(watcher))["messageId"] for _ in ids]
    got_first = [(await recv_json(first))["messageId"] for _ in range(2)]
    got_second = [(await recv_json(second))["messageId"] for _ in range(2)]
    assert seen_by_watcher == ids
    assert sorted(got_first + got_second) == sorted(ids)
    assert not set(got_first) & set(got_second)


async def test_no_cross_topic_delivery(server):
    """A consumer of topic B never sees topic A's messages."""
    a, b = make_topic(), make_topic()
    consumer_b = await subscribe(server.ws, b)
    producer_a = await connect(server.ws + a)
    producer_b = await connect(server.ws + b)
    await publish(producer_a)
    marker = await publish(producer_b, context="marker")
    assert (await recv_json(consumer_b))["messageId"] == marker["messageId"]


async def test_pulsar_and_dasf_paths_reach_the_same_topic(server):
    """A Pulsar-style producer reaches a DASF-style consumer of the same topic and vice versa."""
    slug = make_topic()
    pulsar = server.ws + "v2/{}/non-persistent/public/default/" + slug
    consumer = await subscribe(server.ws, slug)
    pulsar_consumer = await connect(pulsar.format("consumer") + "/psub")
    await recv_json(pulsar_consumer)  # api_info probe
    producer = await connect(pulsar.format("producer"))
    ack = await publish(producer)
    assert (await recv_json(consumer))["messageId"] == ack["messageId"]
    assert (await recv_json(pulsar_consumer))["messageId"] == ack["messageId"]


async def test_fragments_relayed_in_order(server):
    """Fragmented messages are relayed untouched and in order."""
    slug = make_topic()
    consumer = await subscribe(server.ws, slug)
    producer = await connect(server.ws + slug)
    for i in range(3):
        await send_json(producer, {"payload": f"chunk{i}", "context": "0",
                                   "properties": {"fragment": i, "num_fragments": 3}})
    assert [(await recv_json(producer))["result"] for _ in range(3)] == ["ok"] * 3
    frames = [await recv_json(consumer) for _ in range(3)]
    assert [(f["payload"], f["properties"]["fragment"]) for f in frames] == [(f"chunk{i}", i) for i in range(3)]


async def test_keys_pydantic_would_claim_are_relayed(server):
    """Producer keys such as ``cls`` or ``model_config`` are relayed like any other."""
    slug = make_topic()
    consumer = await subscribe(server.ws, slug)
    producer = await connect(server.ws + slug)
    ack = await publish(producer, cls=1, model_config={"x": 1}, _fields_set=[2])
    assert ack["result"] == "ok"
    frame = await recv_json(consumer)
    assert (frame["cls"], frame["model_config"], frame["_fields_set"]) == (1, {"x": 1}, [2])
