"""Topics created by their first message, when the setting and the user's rights allow it."""

from __future__ import annotations

from django.contrib.auth.models import Permission

from app.broker.models import Topic
from tests.protocol import auth, connect, make_token, make_user, publish, recv_json, send_json, unique


def topic_adder():
    user = make_user()
    user.user_permissions.add(Permission.objects.get(codename="add_topic"))
    return user


async def test_first_message_creates_topic(server):
    """A user allowed to add topics creates one by publishing to it, and may use it."""
    user = topic_adder()
    slug = unique()
    producer = await connect(server.ws + slug, auth(make_token(user)))
    assert (await publish(producer))["result"] == "ok"
    topic = Topic.objects.get(slug=slug)
    assert user.has_perm("broker.can_consume", topic) and user.has_perm("broker.can_produce", topic)


async def test_waiting_consumer_attached_on_creation(server):
    """A consumer that connected before the topic existed gets the message that created it."""
    user = topic_adder()
    key = make_token(user)
    slug = unique()
    consumer = await connect(f"{server.ws}{slug}/early", auth(key))
    producer = await connect(server.ws + slug, auth(key))
    ack = await publish(producer)
    assert ack["result"] == "ok"
    frames = [await recv_json(consumer)]
    if frames[0].get("properties", {}).get("messageType") == "api_info":
        await send_json(consumer, {"messageId": frames[0]["messageId"]})
        frames.append(await recv_json(consumer))
    assert frames[-1]["messageId"] == ack["messageId"]


async def test_anonymous_cannot_create(server):
    """Without the add_topic right the first message is refused with an error."""
    slug = unique()
    producer = await connect(server.ws + slug)
    ack = await publish(producer, context=1)
    assert "error" in ack["result"] and "create" in ack["errorMsg"] and ack["context"] == 1
    assert not Topic.objects.filter(slug=slug).exists()
