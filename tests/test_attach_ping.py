"""A backend module is online within seconds of attaching, not after the next ping round: real servers
whose rounds are an hour apart (so only the attach ping can explain the result)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from app.broker.models import Topic
from tests.cluster import Cluster, http_json, start_cluster
from tests.dasf_client import Modules, ws_args
from tests.protocol import connect, eventually, make_topic, recv_json, send_json, subscribe
from tests.servers import ServerProcess, start_server
from tests.services import require_postgres, require_redis

# The only round is the one at startup, before any topic of these tests exists.
NO_ROUNDS = {"PING_INTERVAL_S": "3600"}
# From the module's connection (it answered api_info) to online: a ping, its pong, on a loaded machine.
ONLINE_AFTER_ATTACH_S = 5.0
MIN_INTERVAL_S = 2.0


@pytest.fixture(scope="module")
def pinging_server(_migrated: None, django_db_blocker: Any) -> Iterator[ServerProcess]:
    """A server on the session database whose ping round runs once an hour, after its round at startup."""
    with django_db_blocker.unblock():
        marker = make_topic()
        proc = start_server(os.environ["DATABASE_URL"], ATTACH_PING_MIN_INTERVAL_S=str(MIN_INTERVAL_S),
                            **NO_ROUNDS)
        asyncio.run(eventually(lambda: Topic.objects.get(slug=marker).last_ping is not None,
                               message="the round at startup"))
    yield proc
    proc.stop()


def status(server: ServerProcess, slug: str) -> str:
    code, body = http_json(f"{server.http}/api/v1/topics/{slug}/status")
    assert isinstance(body, dict) and code in (200, 503), (code, body)
    return str(body["status"])


def is_ping(frame: dict[str, Any]) -> bool:
    return frame.get("properties", {}).get("messageType") == "ping"


async def answer_pings(consumer: Any, answers: Any, slug: str) -> None:
    """What demessaging does with a ping: ack it, and send a pong for the topic to status-ping
    (api_info probes are acked and left unanswered)."""
    while True:
        frame = await recv_json(consumer, timeout=3600)
        await send_json(consumer, {"messageId": frame["messageId"]})
        if is_ping(frame):
            context = frame["properties"]["requestContext"]
            await send_json(answers, {"payload": "", "context": context, "properties": {
                "messageType": "pong", "requestContext": context, "status": "success", "source_topic": slug}})
            ack = await recv_json(answers)
            assert ack["result"] == "ok", ack


async def attach_module_until_online(server: ServerProcess, slug: str, *, timeout: float) -> None:
    """Attach a consumer to ``slug`` that answers pings like a module, until the topic is online."""
    answers = await connect(f"{server.ws}status-ping")
    consumer = await connect(f"{server.ws}{slug}/module")
    answering = asyncio.create_task(answer_pings(consumer, answers, slug))
    try:
        await eventually(lambda: status(server, slug) == "online", timeout=timeout, message=f"{slug} online")
    finally:
        answering.cancel()
        with pytest.raises(asyncio.CancelledError):
            await answering


def test_module_online_within_seconds(pinging_server: ServerProcess, modules: Modules) -> None:
    """A module started on a topic never pinged (created after the round) is online within seconds."""
    slug = make_topic()
    assert status(pinging_server, slug) == "unknown"
    modules.start_connected(slug, ws_args(pinging_server))  # it answered the api_info probe
    asyncio.run(eventually(lambda: status(pinging_server, slug) == "online", timeout=ONLINE_AFTER_ATTACH_S,
                           message=f"{slug} online\n{modules.output()}"))
    assert Topic.objects.get(slug=slug).last_ping is not None


async def test_pong_to_attach_ping_brings_offline_topic_online(pinging_server: ServerProcess) -> None:
    """A topic offline since the last round turns online as soon as an attaching consumer answers
    the attach ping (the round's last_ping stays: the pong answers it)."""
    slug = make_topic()
    round_at = timezone.now() - timedelta(seconds=30)
    Topic.objects.filter(slug=slug).update(last_ping=round_at, last_pong=round_at - timedelta(seconds=60))
    assert status(pinging_server, slug) == "offline"
    await attach_module_until_online(pinging_server, slug, timeout=ONLINE_AFTER_ATTACH_S)
    assert Topic.objects.get(slug=slug).last_ping == round_at


async def test_attach_right_after_a_ping_is_pinged_at_the_end_of_the_interval(pinging_server: ServerProcess) -> None:
    """A module attaching just after a silent consumer used the topic's attach ping is not left out:
    it gets the ping coalesced at the end of ATTACH_PING_MIN_INTERVAL_S and is online then."""
    slug = make_topic()
    silent = await subscribe(pinging_server.ws, slug)
    assert is_ping(await recv_json(silent)), "the silent consumer's attach ping"
    await silent.close()
    await attach_module_until_online(pinging_server, slug, timeout=MIN_INTERVAL_S + ONLINE_AFTER_ATTACH_S)


async def test_module_attaching_beside_a_silent_consumer_is_pinged(pinging_server: ServerProcess) -> None:
    """A consumer that never answers (a half-open socket of the module's previous run) does not keep
    the module that replaces it waiting for the next round: its attach is pinged too."""
    slug = make_topic()
    silent = await subscribe(pinging_server.ws, slug)
    assert is_ping(await recv_json(silent)), "the silent consumer's attach ping"
    await attach_module_until_online(pinging_server, slug, timeout=MIN_INTERVAL_S + ONLINE_AFTER_ATTACH_S)
    await silent.close()


async def test_consumer_that_does_not_answer_stays_offline(pinging_server: ServerProcess) -> None:
    """An attach ping nobody answers leaves an offline topic offline: last_ping is not moved."""
    slug = make_topic()
    round_at = timezone.now() - timedelta(seconds=30)
    Topic.objects.filter(slug=slug).update(last_ping=round_at, last_pong=round_at - timedelta(seconds=60))
    consumer = await subscribe(pinging_server.ws, slug)
    ping = await recv_json(consumer, timeout=ONLINE_AFTER_ATTACH_S)
    assert is_ping(ping), ping
    assert Topic.objects.get(slug=slug).last_ping == round_at
    assert status(pinging_server, slug) == "offline"


# --- several processes ---------------------------------------------------------------------------

FLOOD_MIN_INTERVAL_S = 2.0
FLOOD_ATTACHES = 40


# Their tests are pinned_backend: a cluster is PostgreSQL + Redis in either pass. One cluster for the
# module: each test pings a topic of its own, and the attach pings are coalesced per topic.
@pytest.fixture(scope="module")
def two_pinging(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """Two processes on a fresh PostgreSQL database and the real Redis; rounds an hour apart."""
    require_postgres()
    cluster = start_cluster(tmp_path_factory.mktemp("two-pinging"), require_redis(),
                            ATTACH_PING_MIN_INTERVAL_S=str(FLOOD_MIN_INTERVAL_S), **NO_ROUNDS)
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.mark.pinned_backend
async def test_attach_ping_reaches_consumers_in_other_processes(two_pinging: Cluster) -> None:
    """The first consumer in one process has the topic's consumers in the other pinged too."""
    first, second = two_pinging.servers
    slug = two_pinging.topic("--anonymous")
    listener = await subscribe(first.ws, slug)
    assert is_ping(await recv_json(listener)), "the listener's own attach ping"
    await subscribe(second.ws, slug)
    frame = await recv_json(listener)
    assert is_ping(frame), frame


@pytest.mark.pinned_backend
async def test_attach_detach_flood_pings_once_per_interval(two_pinging: Cluster) -> None:
    """A client attaching and detaching in a loop has the topic pinged at most once per
    ATTACH_PING_MIN_INTERVAL_S (seen by a consumer in the other process), not once per connection."""
    listening, flooded = two_pinging.servers
    slug = two_pinging.topic("--anonymous")
    listener = await subscribe(listening.ws, slug)
    assert is_ping(await recv_json(listener)), "the listener's own attach ping"
    loop = asyncio.get_running_loop()
    pings: list[float] = []

    async def count() -> None:
        while True:
            frame = await recv_json(listener, timeout=3600)
            await send_json(listener, {"messageId": frame["messageId"]})
            assert is_ping(frame), frame
            pings.append(loop.time())

    counting = asyncio.create_task(count())
    started = loop.time()
    for _ in range(FLOOD_ATTACHES):
        consumer = await connect(f"{flooded.ws}{slug}/flood")
        while is_ping(await recv_json(consumer)):
            pass  # a ping sent while it attached may come first; then the api_info probe: attached
        await consumer.close()
    flood_s = loop.time() - started
    # The first attach is pinged at once, the later ones share a ping at the end of the interval.
    await eventually(lambda: len(pings) >= 2, timeout=2 * FLOOD_MIN_INTERVAL_S + 5,
                     message="the coalesced ping")
    counting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await counting
    assert 1 <= len(pings) <= flood_s / FLOOD_MIN_INTERVAL_S + 2, (len(pings), flood_s)
    gaps = [b - a for a, b in zip(pings, pings[1:], strict=False)]
    assert all(gap >= FLOOD_MIN_INTERVAL_S - 0.5 for gap in gaps), gaps
