"""``ALLOW_AUTO_TOPIC_CREATION`` on the Pulsar consumer path (docs/architecture.md 18.4; test plan 18.6
item 31): a consumer's handshake naming a missing topic creates it when the setting is on, else 404."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from app.broker.models import Topic
from tests.protocol import auth, make_token, make_topic, make_user, subscribe, unique
from tests.pulsar_client import (
    CONSUMER,
    consumer,
    consumer_url,
    end_of_topic_round_trip,
    message,
    producer,
    refused,
    send,
)
from tests.servers import ServerProcess, start_server


@pytest.fixture(scope="module")
def auto_server(_migrated: None) -> Iterator[ServerProcess]:
    """ALLOW_AUTO_TOPIC_CREATION on, two auto-created topics per principal, on the session database."""
    proc = start_server(os.environ["DATABASE_URL"], ALLOW_AUTO_TOPIC_CREATION="true", TOPICS_PER_PRINCIPAL="2")
    yield proc
    proc.stop()


async def test_consumer_handshake_creates_public_pulsar_topic(auto_server: ServerProcess) -> None:
    """On: an anonymous consumer naming a missing topic is accepted and the topic exists, public, not DASF."""
    slug = unique()
    ws = await consumer(auto_server, slug)
    await end_of_topic_round_trip(ws)
    topic = Topic.objects.get(slug=slug)
    assert topic.is_public and not topic.supports_dasf


async def test_creator_consumes_what_a_producer_sends_later(auto_server: ServerProcess) -> None:
    """The creating consumer may consume the topic, and a message published afterwards reaches it."""
    user = make_user()
    slug = unique()
    ws = await consumer(auto_server, slug, headers=auth(make_token(user)))
    assert user.has_perm("broker.can_consume", Topic.objects.get(slug=slug))
    mid = await send(await producer(auto_server, slug), 1)
    assert (await message(ws))["messageId"] == mid


async def test_bad_parameter_is_400_and_creates_nothing(auto_server: ServerProcess) -> None:
    """On: a handshake with a bad parameter gets 400 and no topic is created."""
    slug = unique()
    status, _ = await refused(consumer_url(auto_server, slug, query="receiverQueueSize=0"))
    assert status == 400
    assert not Topic.objects.filter(slug=slug).exists()


async def test_creations_count_against_the_topic_limit(auto_server: ServerProcess) -> None:
    """On: a principal's consumer handshakes past TOPICS_PER_PRINCIPAL get 403 and create nothing."""
    headers = auth(make_token(make_user()))
    for _ in range(2):
        await consumer(auto_server, unique(), headers=headers)
    slug = unique()
    status, body = await refused(consumer_url(auto_server, slug), headers)
    assert status == 403 and "topic limit" in body, body
    assert not Topic.objects.filter(slug=slug).exists()


async def test_response_topic_name_still_waits(auto_server: ServerProcess) -> None:
    """On: a missing name shaped like a response topic of an existing topic waits for it, not created."""
    source = make_topic()
    slug = f"{source}_abcdefgh"
    ws = await subscribe(auto_server.ws + CONSUMER, slug, probe=False)
    await end_of_topic_round_trip(ws)
    assert not Topic.objects.filter(slug=slug).exists()


async def test_off_missing_topic_is_404(server: ServerProcess) -> None:
    """Off (the default): a consumer naming a missing topic gets 404 and nothing is created."""
    slug = unique()
    status, _ = await refused(consumer_url(server, slug))
    assert status == 404
    assert not Topic.objects.filter(slug=slug).exists()
