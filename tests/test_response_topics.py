"""Response topics: created on publish, private to the requester, answerable by the backend."""

from __future__ import annotations

import pytest
import websockets

from app.broker.models import Topic
from tests.protocol import (
    auth,
    connect,
    make_token,
    make_topic,
    make_user,
    publish,
    recv_json,
    send_json,
    subscribe,
    unique,
)


def request(response_topic: str, context: int = 0) -> dict:
    return {"properties": {"response_topic": response_topic, "requestContext": context,
                           "messageType": "request"}, "payload": "e30=", "context": context}


async def test_created_before_the_ack(server):
    """The response topic exists, tied to its source, when the request is acked."""
    slug = make_topic()
    response = f"{slug}_{unique('r')}"
    producer = await connect(server.ws + slug)
    await send_json(producer, request(response))
    assert (await recv_json(producer))["result"] == "ok"
    topic = Topic.objects.get(slug=response)
    assert topic.response_for.slug == slug and not topic.is_public


async def test_requester_socket_opened_early_gets_the_response(server):
    """The requester's consumer, open before the response topic existed, receives the answer."""
    requester, backend = make_user(), make_user()
    slug = make_topic(anonymous=False, consumers=(backend,), producers=(requester,))
    response = f"{slug}_{unique('r')}"
    requester_key, backend_key = make_token(requester), make_token(backend)
    inbox = await connect(f"{server.ws}{response}/python-backend-1", auth(requester_key))
    module = await subscribe(server.ws, slug, "backend-module", headers=auth(backend_key))
    producer = await connect(server.ws + slug, auth(requester_key))
    await send_json(producer, request(response))
    assert (await recv_json(producer))["result"] == "ok"
    delivered = await recv_json(module)
    await send_json(module, {"messageId": delivered["messageId"]})
    answer = await connect(server.ws + response, auth(backend_key))
    ack = await publish(answer, context="0", properties={"status": "success", "messageType": "response",
                                                         "requestContext": "0", "source_topic": slug})
    assert ack["result"] == "ok"
    got = await recv_json(inbox)
    assert got["messageId"] == ack["messageId"] and got["properties"]["messageType"] == "response"


async def test_no_probe_on_response_topic(server):
    """A response-topic consumer never gets an api_info probe; its first frame is the answer."""
    slug = make_topic()
    response = f"{slug}_{unique('r')}"
    producer = await connect(server.ws + slug)
    await send_json(producer, request(response))
    await recv_json(producer)
    inbox = await connect(f"{server.ws}{response}/python-backend-1")
    answer = await connect(server.ws + response)
    ack = await publish(answer, context="0")
    assert (await recv_json(inbox))["messageId"] == ack["messageId"]


async def test_other_users_cannot_consume(server):
    """Only the requester may consume its response topic; others are refused with 4403."""
    requester, stranger = make_user(), make_user()
    slug = make_topic(producers=(requester,))
    response = f"{slug}_{unique('r')}"
    producer = await connect(server.ws + slug, auth(make_token(requester)))
    await send_json(producer, request(response))
    await recv_json(producer)
    spy = await connect(f"{server.ws}{response}/spy", auth(make_token(stranger)))
    refusal = await recv_json(spy)
    assert "error" in refusal["result"]
    with pytest.raises(websockets.ConnectionClosed) as closed:
        await spy.recv()
    assert closed.value.rcvd.code == 4403


async def test_strangers_cannot_answer(server):
    """A principal that may not consume the source topic may not produce to its response topic."""
    requester, stranger = make_user(), make_user()
    slug = make_topic(anonymous=False, producers=(requester,))
    response = f"{slug}_{unique('r')}"
    producer = await connect(server.ws + slug, auth(make_token(requester)))
    await send_json(producer, request(response))
    await recv_json(producer)
    forger = await connect(server.ws + response, auth(make_token(stranger)))
    ack = await publish(forger)
    assert "error" in ack["result"]


async def test_response_topic_of_another_source_is_refused(server):
    """Naming another topic's response topic as one's own is an error, not a hijack."""
    first, second = make_topic(), make_topic()
    response = f"{first}_{unique('r')}"
    producer = await connect(server.ws + first)
    await send_json(producer, request(response))
    await recv_json(producer)
    other = await connect(server.ws + second)
    await send_json(other, request(response, context=5))
    ack = await recv_json(other)
    assert "error" in ack["result"] and ack["context"] == 5
