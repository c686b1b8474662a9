"""Response topics are collected once their last consumer left with nothing outstanding, or when no
consumer attached to them in time; leases expired long ago are deleted."""

from __future__ import annotations

import os

import pytest

from app.broker.models import Topic
from tests.protocol import connect, eventually, make_topic, publish, recv_json, send_json, unique
from tests.servers import start_server


@pytest.fixture(scope="module")
def collecting_server():
    server = start_server(os.environ["DATABASE_URL"], GC_INTERVAL_S="0.5", RESPONSE_TOPIC_TTL_S="0")
    yield server
    server.stop()


async def open_response_topic(server, slug: str) -> str:
    response = f"{slug}_{unique('r')}"
    producer = await connect(server.ws + slug)
    await send_json(producer, {"properties": {"response_topic": response, "messageType": "request",
                                              "requestContext": 0}, "payload": "", "context": 0})
    assert (await recv_json(producer))["result"] == "ok"
    return response


async def test_collected_after_last_consumer_leaves(collecting_server):
    """When the requester's consumer leaves and nothing is outstanding, the topic goes."""
    server = collecting_server
    response = await open_response_topic(server, make_topic())
    inbox = await connect(f"{server.ws}{response}/python-backend-1")
    answer = await connect(server.ws + response)
    ack = await publish(answer, context="0")
    assert (await recv_json(inbox))["messageId"] == ack["messageId"]
    await send_json(inbox, {"messageId": ack["messageId"]})
    await eventually(lambda: not Topic.objects.get(slug=response).messages.exists(), message="the ack")
    await inbox.close()
    await eventually(lambda: not Topic.objects.filter(slug=response).exists(), message="collection")


async def test_kept_while_a_response_is_outstanding(collecting_server):
    """A response the requester has not acked keeps its topic, while an idle one is collected."""
    server = collecting_server
    kept = await open_response_topic(server, make_topic())
    control = await open_response_topic(server, make_topic())
    inbox = await connect(f"{server.ws}{kept}/python-backend-1")
    control_inbox = await connect(f"{server.ws}{control}/python-backend-1")
    answer = await connect(server.ws + kept)
    ack = await publish(answer, context="0")
    assert (await recv_json(inbox))["messageId"] == ack["messageId"]
    await inbox.close()
    await control_inbox.close()
    await eventually(lambda: not Topic.objects.filter(slug=control).exists(), message="the idle topic to go")
    assert Topic.objects.get(slug=kept).garbage_collect_on is None
    again = await connect(f"{server.ws}{kept}/python-backend-2")
    assert (await recv_json(again))["messageId"] == ack["messageId"]


async def test_leases_expired_long_ago_deleted(collecting_server):
    """A lease whose holder died long ago (its row expired past EXPIRED_KEPT) is deleted; a live one stays."""
    from django.utils import timezone

    from app.leases.models import Lease
    from app.leases.services import EXPIRED_KEPT

    dead, live = unique("sub:0:"), unique("sub:0:")
    Lease.objects.create(name=dead, holder="gone:1", expires_at=timezone.now() - 2 * EXPIRED_KEPT)
    Lease.objects.create(name=live, holder="here:1", expires_at=timezone.now() + EXPIRED_KEPT)
    await eventually(lambda: not Lease.objects.filter(name=dead).exists(), message="collection")
    assert Lease.objects.filter(name=live).exists()


@pytest.fixture(scope="module")
def attach_window_server():
    """Response topics nobody attached to go 2 s after their creation."""
    server = start_server(os.environ["DATABASE_URL"], GC_INTERVAL_S="0.5", RESPONSE_TOPIC_UNATTACHED_TTL_S="2")
    yield server
    server.stop()


async def test_unattached_response_topic_collected(attach_window_server):
    """A response topic no consumer ever attached to is collected, with its rights."""
    from guardian.models import UserObjectPermission

    response = await open_response_topic(attach_window_server, make_topic())
    topic_pk = str(Topic.objects.get(slug=response).pk)
    await eventually(lambda: not Topic.objects.filter(slug=response).exists(), 15, message="collection")
    assert not UserObjectPermission.objects.filter(object_pk=topic_pk, content_type__model="topic").exists()


async def test_waiting_requester_keeps_its_response_topic(attach_window_server):
    """The requester's consumer, open before the request, attaches and cancels the collection."""
    server = attach_window_server
    slug = make_topic()
    response = f"{slug}_{unique('r')}"
    inbox = await connect(f"{server.ws}{response}/python-backend-1")
    producer = await connect(server.ws + slug)
    await send_json(producer, {"properties": {"response_topic": response, "messageType": "request",
                                              "requestContext": 0}, "payload": "", "context": 0})
    assert (await recv_json(producer))["result"] == "ok"
    await eventually(lambda: Topic.objects.get(slug=response).garbage_collect_on is None, message="the attach")
    ack = await publish(await connect(server.ws + response), context="0")
    assert (await recv_json(inbox))["messageId"] == ack["messageId"]
