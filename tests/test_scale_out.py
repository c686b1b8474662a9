"""Two server processes behind one Redis and one PostgreSQL behave as one broker."""

from __future__ import annotations

import asyncio

import pytest
import websockets

from tests.cluster import http_json, new_token, new_topic, start_cluster
from tests.protocol import auth, connect, eventually, publish, recv_json, send_json, subscribe, unique
from tests.services import require_postgres, require_redis

pytestmark = pytest.mark.pinned_backend


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    require_postgres()
    redis_url = require_redis()
    cluster = start_cluster(tmp_path_factory.mktemp("cluster"), redis_url, RESYNC_INTERVAL_S="0.5")
    yield cluster
    cluster.stop()


def stored_count(cluster, slug: str) -> int:
    from tests.databases import query

    rows = query(cluster.database_url, "SELECT count(*) FROM broker_message m JOIN broker_topic t "
                                       "ON m.topic_id = t.id WHERE t.slug = %s", (slug,))
    return int(rows[0][0])


async def test_producer_on_a_consumer_on_b(cluster):
    """A message published on one process reaches a consumer connected to the other."""
    a, b = cluster.servers
    slug = cluster.topic("--anonymous")
    consumer = await subscribe(b.ws, slug)
    producer = await connect(a.ws + slug)
    ack = await publish(producer)
    assert ack["result"] == "ok"
    assert (await recv_json(consumer))["messageId"] == ack["messageId"]


async def test_ack_on_b_removes_for_a(cluster):
    """A message acked by a consumer on B is not replayed to a consumer reconnecting on A."""
    a, b = cluster.servers
    slug = cluster.topic("--anonymous", "--no-dasf", "--store-messages", "cache")
    producer = await connect(a.ws + slug)
    ack = await publish(producer)
    on_b = await subscribe(b.ws, slug, probe=False)
    assert (await recv_json(on_b))["messageId"] == ack["messageId"]
    await send_json(on_b, {"messageId": ack["messageId"]})
    await eventually(lambda: stored_count(cluster, slug) == 0, message="the ack on B")
    on_a = await subscribe(a.ws, slug, probe=False)
    marker = await publish(producer, context="marker")
    assert (await recv_json(on_a))["messageId"] == marker["messageId"]


async def test_cache_needs_one_ack_across_processes(cluster):
    """Under cache, one ack on either process removes the message for every consumer."""
    a, b = cluster.servers
    slug = cluster.topic("--anonymous", "--no-dasf", "--store-messages", "cache")
    on_a, on_b = await subscribe(a.ws, slug, probe=False), await subscribe(b.ws, slug, probe=False)
    producer = await connect(b.ws + slug)
    ack = await publish(producer)
    assert (await recv_json(on_a))["messageId"] == ack["messageId"]
    assert (await recv_json(on_b))["messageId"] == ack["messageId"]
    await send_json(on_a, {"messageId": ack["messageId"]})
    await eventually(lambda: stored_count(cluster, slug) == 0, message="one ack to remove it")
    await on_b.close()
    again = await subscribe(b.ws, slug, probe=False)
    marker = await publish(producer, context="marker")
    assert (await recv_json(again))["messageId"] == marker["messageId"]


async def test_response_topic_across_processes(cluster):
    """A requester waiting on A gets the answer to a request it published through B."""
    a, b = cluster.servers
    slug = cluster.topic("--anonymous")
    response = f"{slug}_{unique('r')}"
    inbox = await connect(f"{a.ws}{response}/python-backend-1")
    module = await subscribe(a.ws, slug, "backend-module")
    producer = await connect(b.ws + slug)
    await send_json(producer, {"properties": {"response_topic": response, "requestContext": 0,
                                              "messageType": "request"}, "payload": "e30=", "context": 0})
    assert (await recv_json(producer))["result"] == "ok"
    request = await recv_json(module)
    await send_json(module, {"messageId": request["messageId"]})
    answer = await connect(b.ws + response)
    ack = await publish(answer, context="0", properties={"messageType": "response", "requestContext": "0"})
    assert ack["result"] == "ok"
    assert (await recv_json(inbox))["messageId"] == ack["messageId"]


async def test_revoke_on_a_closes_consumer_on_b(cluster):
    """Revoking a consume right through A closes that user's open consumer on B with 4403."""
    a, b = cluster.servers
    user, slug = unique("user"), unique()
    admin_key, user_key, _ = cluster.manage_many(new_token(unique("admin"), "--superuser"), new_token(user),
                                                 new_topic(slug, "--no-public", "-c", user))
    consumer = await subscribe(b.ws, slug, headers=auth(user_key))
    status, body = http_json(f"{a.http}/api/v1/topics/{slug}/grants/{user}", "PUT", {"can_consume": False},
                             auth(admin_key))
    assert status == 200 and body["rights"] == []
    refusal = await recv_json(consumer)
    assert "error" in refusal["result"]
    with pytest.raises(websockets.ConnectionClosed) as closed:
        await consumer.recv()
    assert closed.value.rcvd.code == 4403


async def test_grant_on_a_lets_producer_on_b_publish(cluster):
    """A produce right granted through A applies to the user's open producer socket on B."""
    a, b = cluster.servers
    user, slug = unique("user"), unique()
    admin_key, user_key, _ = cluster.manage_many(new_token(unique("admin"), "--superuser"), new_token(user),
                                                 new_topic(slug, "--no-public"))
    producer = await connect(b.ws + slug, auth(user_key))
    assert "error" in (await publish(producer, context=1))["result"]
    status, _ = http_json(f"{a.http}/api/v1/topics/{slug}/grants/{user}", "PUT", {"can_produce": True},
                          auth(admin_key))
    assert status == 200

    # The change reaches B asynchronously; a refused attempt is harmless, so try until one passes.
    deadline = asyncio.get_running_loop().time() + 10
    while (await publish(producer, context=2))["result"] != "ok":
        assert asyncio.get_running_loop().time() < deadline, "the grant never reached B"
        await asyncio.sleep(0.05)  # bounded-poll


async def test_disabled_token_closes_its_sockets_everywhere(cluster):
    """Disabling a token closes the sockets opened with it, in every process, with 4401."""
    a, b = cluster.servers
    user, slug = unique("user"), unique()
    key, _ = cluster.manage_many(new_token(user), new_topic(slug, "--no-public", "-c", user))
    on_a = await subscribe(a.ws, slug, headers=auth(key))
    on_b = await subscribe(b.ws, slug, headers=auth(key))
    cluster.manage("disabletoken", key)
    for ws in (on_a, on_b):
        assert "error" in (await recv_json(ws))["result"]
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await ws.recv()
        assert closed.value.rcvd.code == 4401


async def test_revoking_the_source_stops_answers(cluster):
    """A backend whose consume right on the source is revoked may no longer answer on its response topics."""
    a, b = cluster.servers
    backend, slug = unique("backend"), unique()
    admin_key, backend_key, _ = cluster.manage_many(new_token(unique("admin"), "--superuser"), new_token(backend),
                                                    new_topic(slug, "--public", "-c", backend))
    response = f"{slug}_{unique('r')}"
    requester = await connect(a.ws + slug)
    await send_json(requester, {"properties": {"response_topic": response, "messageType": "request",
                                               "requestContext": 0}, "payload": "", "context": 0})
    assert (await recv_json(requester))["result"] == "ok"
    answer = await connect(b.ws + response, auth(backend_key))
    assert (await publish(answer, context="1"))["result"] == "ok"
    status, _ = http_json(f"{a.http}/api/v1/topics/{slug}/grants/{backend}", "PUT", {"can_consume": False},
                          auth(admin_key))
    assert status == 200
    deadline = asyncio.get_running_loop().time() + 10
    while "error" not in (await publish(answer, context="2"))["result"]:
        assert asyncio.get_running_loop().time() < deadline, "the revocation never reached the answering socket"
        await asyncio.sleep(0.05)  # bounded-poll
