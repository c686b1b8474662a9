"""Who may attach to a Pulsar subscription, and what a consumer handshake may ask for: the
subscription's owner, SUBSCRIPTIONS_PER_PRINCIPAL, name length, dead letter topic, ack timeout floor
and Pulsar's (Java's) reading of query parameters (docs/architecture.md 18.2, 18.3)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator

import pytest

from tests.protocol import auth, make_token, make_topic, make_user, send_json
from tests.pulsar_client import consumer, consumer_url, end_of_topic_round_trip, message, producer, refused, send
from tests.servers import ServerProcess, start_server


@pytest.fixture
def limited_server(_migrated: None) -> Iterator[ServerProcess]:
    """A server allowing each principal 2 subscriptions."""
    proc = start_server(os.environ["DATABASE_URL"], SUBSCRIPTIONS_PER_PRINCIPAL="2")
    yield proc
    proc.stop()


async def test_subscription_name_over_200_characters_is_400(server: ServerProcess) -> None:
    """A subscription name longer than the column holds: 400 (on every database)."""
    slug = make_topic(dasf=False)
    status, body = await refused(consumer_url(server, slug, "s" * 201))
    assert status == 400 and "200 characters" in json.loads(body)["error"]
    await end_of_topic_round_trip(await consumer(server, slug, "s" * 200))


async def test_another_principals_subscription_is_403(server: ServerProcess) -> None:
    """A subscription belongs to its creator: another principal's handshake on it gets 403."""
    owner, other = make_user(), make_user()
    slug = make_topic(dasf=False, consumers=(owner, other))
    first = await consumer(server, slug, query="subscriptionType=Shared", headers=auth(make_token(owner)))
    await first.close()
    status, body = await refused(consumer_url(server, slug, query="subscriptionType=Shared"),
                                 auth(make_token(other)))
    assert status == 403 and "belongs to another principal" in json.loads(body)["error"]


async def test_another_principal_cannot_join_an_attached_subscription(server: ServerProcess) -> None:
    """While the owner's consumer is attached, another principal's consumer of it gets 403 too."""
    owner, other = make_user(), make_user()
    slug = make_topic(dasf=False, consumers=(owner, other))
    query = "subscriptionType=Shared"
    await consumer(server, slug, query=query, headers=auth(make_token(owner)))
    status, _ = await refused(consumer_url(server, slug, query=query), auth(make_token(other)))
    assert status == 403


async def test_superuser_may_attach_to_any_subscription(server: ServerProcess) -> None:
    """A superuser's consumer may attach to another principal's subscription."""
    owner, admin = make_user(), make_user(is_superuser=True, is_staff=True)
    slug = make_topic(dasf=False, consumers=(owner,))
    query = "subscriptionType=Shared"
    await consumer(server, slug, query=query, headers=auth(make_token(owner)))
    ws = await consumer(server, slug, query=query, headers=auth(make_token(admin)))
    await end_of_topic_round_trip(ws)


async def test_anonymous_consumers_share_their_subscriptions(server: ServerProcess) -> None:
    """Every anonymous client is one principal: a second anonymous consumer joins the first one's subscription."""
    slug = make_topic(dasf=False)
    query = "subscriptionType=Shared"
    await consumer(server, slug, query=query)
    await end_of_topic_round_trip(await consumer(server, slug, query=query))


async def test_subscriptions_per_principal_limit_is_403(limited_server: ServerProcess) -> None:
    """Past SUBSCRIPTIONS_PER_PRINCIPAL a new subscription is refused with 403; existing ones still attach."""
    user = make_user()
    headers = auth(make_token(user))
    slug = make_topic(dasf=False, consumers=(user,))
    for name in ("a", "b"):
        await (await consumer(limited_server, slug, name, headers=headers)).close()
    status, body = await refused(consumer_url(limited_server, slug, "c"), headers)
    assert status == 403 and "subscription limit" in json.loads(body)["error"]
    await end_of_topic_round_trip(await consumer(limited_server, slug, "a", headers=headers))
    status, _ = await refused(consumer_url(limited_server, make_topic(dasf=False, consumers=(user,)), "x"), headers)
    assert status == 403


@pytest.mark.parametrize(
    ("query", "named"),
    [("deadLetterTopic={slug}&maxRedeliverCount=1", "subscribed topic itself"),
     ("deadLetterTopic=persistent://public/default/{slug}", "subscribed topic itself"),
     ("ackTimeoutMillis=50", "MIN_ACK_TIMEOUT_MS"),
     ("receiverQueueSize=1.0", "receiverQueueSize"), ("receiverQueueSize=%205%20", "receiverQueueSize"),
     ("receiverQueueSize=1_000", "receiverQueueSize"), ("negativeAckRedeliveryDelay=%2B5", "negativeAck")],
    ids=["dead-letter-self", "dead-letter-self-full-name", "ack-timeout-below-floor", "int-float", "int-spaces",
         "int-underscore", "int-plus"],
)
async def test_unusable_parameters_are_400(server: ServerProcess, query: str, named: str) -> None:
    """A dead letter topic that is the topic, an ack timeout below the floor, an int Java would not read: 400."""
    slug = make_topic(dasf=False)
    status, body = await refused(consumer_url(server, slug, query=query.format(slug=slug)))
    assert status == 400 and named in json.loads(body)["error"]


async def test_pull_mode_other_than_true_is_push_mode(server: ServerProcess) -> None:
    """pullMode=yes is false, as Java reads it: messages come without permits."""
    slug = make_topic(dasf=False)
    ws = await consumer(server, slug, query="pullMode=yes")
    prod = await producer(server, slug)
    mid = await send(prod, 1)
    assert (await message(ws))["messageId"] == mid
    await send_json(ws, {"type": "isEndOfTopic"})
