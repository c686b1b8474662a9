"""The reader endpoint ``/ws/v2/reader/...`` (docs/architecture.md 18.5, test plan 18.6 items 27-29):
start positions, flow control without stored state, DASF topics readable, readers beside consumers,
response topics, readers across processes. Handshakes and rights are tests/test_pulsar_reader_handshakes.py,
which imports the helpers here."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from websockets.asyncio.client import ClientConnection

from tests.bad_input import assert_error, recv, stored
from tests.cluster import start_cluster
from tests.protocol import (
    b64,
    connect,
    eventually,
    make_topic,
    publish,
    recv_json,
    send_json,
    subscribe,
    unique,
)
from tests.servers import ServerProcess
from tests.services import require_postgres, require_redis

READER = "v2/reader/persistent/public/default/"
PRODUCER = "v2/producer/persistent/public/default/"
# How long a reader is watched for a message that must not come (after a later marker arrived).
QUIET_S = 0.4


async def reader(server: ServerProcess, slug: str, query: str = "", headers: dict[str, str] | None = None,
                 ) -> ClientConnection:
    return await connect(f"{server.ws}{READER}{slug}{query}", headers)


async def producer(server: ServerProcess, slug: str) -> ClientConnection:
    return await connect(f"{server.ws}{PRODUCER}{slug}")


async def published(ws: ClientConnection, count: int, start: int = 0) -> list[str]:
    """Publish ``count`` messages one by one; their messageIds."""
    ids = []
    for n in range(start, start + count):
        ack = await publish(ws, context=n)
        assert ack["result"] == "ok", ack
        ids.append(ack["messageId"])
    return ids


async def read_ids(ws: ClientConnection, count: int, ack: bool = False) -> list[str]:
    """The messageIds of the next ``count`` frames (each acked when ``ack``)."""
    ids = []
    for _ in range(count):
        frame = await recv_json(ws)
        assert "messageId" in frame, frame
        ids.append(frame["messageId"])
        if ack:
            await send_json(ws, {"messageId": frame["messageId"]})
    return ids


async def nothing_more(ws: ClientConnection) -> None:
    """No frame arrives on ``ws`` within QUIET_S (call it after a later marker arrived elsewhere)."""
    with pytest.raises(TimeoutError):
        await recv_json(ws, timeout=QUIET_S)


# --- start positions (18.6 item 27) ---------------------------------------------------------------

async def test_earliest_gets_history_then_live(server: ServerProcess) -> None:
    """messageId=earliest gets the stored messages in order, then live ones."""
    slug = make_topic(dasf=False, policy="store")
    prod = await producer(server, slug)
    history = await published(prod, 3)
    ws = await reader(server, slug, "?messageId=earliest")
    assert await read_ids(ws, 3) == history
    live = await published(prod, 1, start=3)
    assert await read_ids(ws, 1) == live


async def test_latest_gets_only_live(server: ServerProcess) -> None:
    """Without messageId (latest) a reader gets only what is published after it attached."""
    slug = make_topic(dasf=False, policy="store")
    prod = await producer(server, slug)
    await published(prod, 2)
    ws = await reader(server, slug)
    live = await published(prod, 1, start=2)
    assert await read_ids(ws, 1) == live


async def test_message_id_starts_after_it(server: ServerProcess) -> None:
    """messageId=<id> gets the stored messages after that one (exclusive), then live ones."""
    slug = make_topic(dasf=False, policy="store")
    prod = await producer(server, slug)
    ids = await published(prod, 4)
    ws = await reader(server, slug, f"?messageId={ids[1]}")
    assert await read_ids(ws, 2) == ids[2:]
    live = await published(prod, 1, start=4)
    assert await read_ids(ws, 1) == live


async def test_history_frames_carry_redelivery_count_zero(server: ServerProcess) -> None:
    """Stored and live frames both carry redeliveryCount 0 and the producer's fields."""
    slug = make_topic(dasf=False, policy="store")
    prod = await producer(server, slug)
    await publish(prod, context=1, key="k")
    ws = await reader(server, slug, "?messageId=earliest")
    first = await recv_json(ws)
    await publish(prod, context=2)
    second = await recv_json(ws)
    assert (first["redeliveryCount"], first["key"], first["context"]) == (0, "k", 1), first
    assert (second["redeliveryCount"], second["context"]) == (0, 2), second


async def test_history_larger_than_a_page_arrives_in_order(server: ServerProcess) -> None:
    """A history of more than one page (500) arrives complete and in publish order."""
    slug = make_topic(dasf=False, policy="store")
    prod = await producer(server, slug)
    count = 650
    for n in range(count):
        await send_json(prod, {"payload": b64(n), "properties": {}, "context": n})
    acks = [await recv_json(prod) for _ in range(count)]
    assert {a["result"] for a in acks} == {"ok"}
    ws = await reader(server, slug, "?messageId=earliest")
    assert await read_ids(ws, count) == [a["messageId"] for a in acks]


# --- flow control, no stored state (18.6 item 28) -------------------------------------------------

async def test_without_acks_stops_at_receiver_queue_size(server: ServerProcess) -> None:
    """With receiverQueueSize=2 and no acks a reader gets 2 messages, then the next one per ack."""
    slug = make_topic(dasf=False, policy="store")
    ws = await reader(server, slug, "?receiverQueueSize=2")
    marker = await subscribe(f"{server.ws}v2/consumer/persistent/public/default/", slug, probe=False)
    prod = await producer(server, slug)
    ids = await published(prod, 4)
    assert await read_ids(ws, 2) == ids[:2]
    assert await read_ids(marker, 4) == ids  # all four went out to a consumer meanwhile
    await nothing_more(ws)
    await send_json(ws, {"messageId": ids[0]})
    assert await read_ids(ws, 1) == ids[2:3]
    await nothing_more(ws)
    await send_json(ws, {"messageId": ids[1]})
    assert await read_ids(ws, 1) == ids[3:]


async def test_acking_reader_reads_more_than_its_queue_size(server: ServerProcess) -> None:
    """A reader acking as it goes reads a history and live messages far beyond receiverQueueSize, in order."""
    slug = make_topic(dasf=False, policy="store")
    prod = await producer(server, slug)
    ids = await published(prod, 30)
    ws = await reader(server, slug, "?messageId=earliest&receiverQueueSize=3")
    got = await read_ids(ws, 10, ack=True)
    ids += await published(prod, 20, start=30)
    got += await read_ids(ws, 40, ack=True)
    assert got == ids


async def test_acks_change_nothing_stored(server: ServerProcess) -> None:
    """A reader's acks on a `cache` topic neither remove the message nor record a delivery."""
    from app.broker.models import Delivery

    slug = make_topic(dasf=False, policy="cache")
    prod = await producer(server, slug)
    [message_id] = await published(prod, 1)
    ws = await reader(server, slug, "?messageId=earliest")
    assert await read_ids(ws, 1, ack=True) == [message_id]
    await send_json(ws, {"type": "isEndOfTopic"})  # answered after the ack was handled
    assert await recv_json(ws) == {"endOfTopic": False}
    assert [str(m.message_id) for m in stored(slug)] == [message_id]
    assert not Delivery.objects.filter(message__topic__slug=slug).exists()


async def test_reader_does_not_consume(server: ServerProcess) -> None:
    """A consumer attaching after a reader read and acked a `cache` message still gets it."""
    slug = make_topic(policy="cache")
    prod = await connect(server.ws + slug)
    [message_id] = await published(prod, 1)
    ws = await reader(server, slug, "?messageId=earliest")
    assert await read_ids(ws, 1, ack=True) == [message_id]
    await send_json(ws, {"type": "isEndOfTopic"})
    assert await recv_json(ws) == {"endOfTopic": False}
    consumer = await subscribe(server.ws, slug, probe=False)
    assert (await recv(consumer))["messageId"] == message_id


async def test_ack_of_unknown_id_gets_error_frame(server: ServerProcess) -> None:
    """An ack of a messageId the reader was not sent gets an error frame."""
    ws = await reader(server, make_topic(dasf=False))
    await send_json(ws, {"messageId": "not-sent"})
    assert_error(await recv_json(ws), "unknown messageId")


async def test_control_frames(server: ServerProcess) -> None:
    """isEndOfTopic is answered {"endOfTopic": false}; another type gets an error frame."""
    ws = await reader(server, make_topic(dasf=False))
    await send_json(ws, {"type": "isEndOfTopic"})
    assert await recv_json(ws) == {"endOfTopic": False}
    await send_json(ws, {"type": "permit", "permitMessages": 1})
    assert_error(await recv_json(ws), "permit")


# --- disabled topics (18.6 item 29) ----------------------------------------------------------------

async def test_disabled_topic_reader_gets_live_messages_only(server: ServerProcess) -> None:
    """On a `disabled` topic earliest is latest: only messages published after the attach arrive."""
    slug = make_topic(dasf=False, policy="disabled")
    prod = await producer(server, slug)
    await published(prod, 1)
    ws = await reader(server, slug, "?messageId=earliest")
    await send_json(ws, {"type": "isEndOfTopic"})  # the reader is attached once this is answered
    assert await recv_json(ws) == {"endOfTopic": False}
    live = await published(prod, 1, start=1)
    assert await read_ids(ws, 1) == live


async def test_disabled_topic_drops_oldest_beyond_queue_size(server: ServerProcess) -> None:
    """On a `disabled` topic at most receiverQueueSize messages wait for credit; the oldest go first."""
    slug = make_topic(dasf=False, policy="disabled")
    ws = await reader(server, slug, "?receiverQueueSize=1")
    await send_json(ws, {"type": "isEndOfTopic"})
    assert await recv_json(ws) == {"endOfTopic": False}
    prod = await producer(server, slug)
    ids = await published(prod, 3)
    assert await read_ids(ws, 1) == ids[:1]
    await send_json(ws, {"messageId": ids[0]})
    assert await read_ids(ws, 1) == ids[2:]


# --- DASF topics, readers beside consumers, response topics, other processes ----------------------

async def test_dasf_topic_is_readable(server: ServerProcess) -> None:
    """A DASF topic is readable on the reader path: no api_info probe, the stored history first."""
    slug = make_topic(policy="store")
    prod = await connect(server.ws + slug)
    ids = await published(prod, 2)
    ws = await reader(server, slug, "?messageId=earliest")
    assert [(await recv(ws))["messageId"] for _ in ids] == ids


async def test_reader_and_consumer_both_get_live_messages(server: ServerProcess) -> None:
    """A reader does not take messages from consumers: both get every live message."""
    slug = make_topic(dasf=False, policy="cache")
    ws = await reader(server, slug)
    consumer = await subscribe(f"{server.ws}v2/consumer/persistent/public/default/", slug, probe=False)
    ids = await published(await producer(server, slug), 3)
    assert await read_ids(ws, 3) == ids
    assert await read_ids(consumer, 3) == ids


async def test_readers_attached_at_once_each_get_live_messages(server: ServerProcess) -> None:
    """Readers attached at the same time each get the next live message."""
    slug = make_topic(dasf=False, policy="store")
    readers = await asyncio.gather(*(reader(server, slug) for _ in range(5)))
    for ws in readers:
        await send_json(ws, {"type": "isEndOfTopic"})
        assert await recv_json(ws) == {"endOfTopic": False}
    ids = await published(await producer(server, slug), 1)
    for ws in readers:
        assert await read_ids(ws, 1) == ids


async def response_topic(server: ServerProcess) -> str:
    """A response topic made by an anonymous request (so the anonymous principal may read it)."""
    source = make_topic()
    response = f"{source}_{unique('r')[2:10]}"
    ack = await publish(await connect(server.ws + source), properties={"response_topic": response})
    assert ack["result"] == "ok", ack
    return response


async def test_reader_keeps_its_response_topic(server: ServerProcess) -> None:
    """A reader attached to a response topic cancels its collection, as a consumer does."""
    from app.broker.models import Topic

    slug = await response_topic(server)
    assert Topic.objects.get(slug=slug).garbage_collect_on is not None  # unattached: due for collection
    await reader(server, slug)
    assert Topic.objects.get(slug=slug).garbage_collect_on is None


async def test_last_reader_leaving_schedules_collection(server: ServerProcess) -> None:
    """The last reader leaving a response topic schedules it for collection, as a consumer does."""
    from app.broker.models import Topic

    slug = await response_topic(server)
    ws = await reader(server, slug)
    assert Topic.objects.get(slug=slug).garbage_collect_on is None
    await ws.close()
    await eventually(lambda: Topic.objects.get(slug=slug).garbage_collect_on is not None,
                     message="collection scheduled")


async def test_reader_leaving_during_its_handshake_schedules_collection(server: ServerProcess) -> None:
    """A reader's client leaving before the accept leaves its response topic scheduled for collection again."""
    from app.broker.models import Topic

    slug = await response_topic(server)
    unattached = Topic.objects.get(slug=slug).garbage_collect_on
    _, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(f"GET /ws/{READER}{slug} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                 "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                 "Sec-WebSocket-Version: 13\r\n\r\n".encode())
    writer.close()  # gone while the handshake looks the topic up and cancels its collection
    await eventually(lambda: Topic.objects.get(slug=slug).garbage_collect_on not in (None, unattached),
                     message="collection scheduled again")


@pytest.mark.pinned_backend
async def test_reader_reads_across_processes(tmp_path: Path) -> None:
    """Two processes behind Redis: a reader on one gets the history and live messages published on the other."""
    require_postgres()
    cluster = start_cluster(tmp_path, require_redis())
    try:
        a, b = cluster.servers
        slug = cluster.topic("--anonymous", "--no-dasf", "--store-messages", "store")
        prod = await connect(f"{a.ws}{PRODUCER}{slug}")
        ids = await published(prod, 2)
        ws = await reader(b, slug, "?messageId=earliest")
        assert await read_ids(ws, 2) == ids
        live = await published(prod, 1, start=2)
        assert await read_ids(ws, 1) == live
    finally:
        cluster.stop()
