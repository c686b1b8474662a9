"""Flow control, redelivery and dead letters of Pulsar subscriptions on ``/ws/v2/consumer/``
(docs/architecture.md 18.4; test plan 18.6 items 17-21), and subscriptions of ``disabled`` topics."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator

import pytest
from django.contrib.auth.models import Permission

from tests.bad_input import assert_error, recv, stored
from tests.protocol import auth, connect, eventually, make_token, make_topic, make_user, publish, send_json
from tests.pulsar_client import (
    PRODUCER,
    ack,
    consumer,
    consumer_url,
    end_of_topic_round_trip,
    message,
    producer,
    quiet,
    refused,
    send,
)
from tests.servers import ServerProcess, start_server


@pytest.fixture
def auto_server(_migrated: None) -> Iterator[ServerProcess]:
    """ALLOW_AUTO_TOPIC_CREATION on, on the session database."""
    proc = start_server(os.environ["DATABASE_URL"], ALLOW_AUTO_TOPIC_CREATION="true")
    yield proc
    proc.stop()


async def test_push_mode_stops_at_receiver_queue_size(server: ServerProcess) -> None:
    """receiverQueueSize=2 without acks: 2 messages, then one more per ack."""
    slug = make_topic(dasf=False)
    ws = await consumer(server, slug, query="receiverQueueSize=2")
    marker = await consumer(server, slug, "marker")
    prod = await producer(server, slug)
    ids = [await send(prod, n) for n in range(4)]
    first = [await message(ws) for _ in range(2)]
    assert [f["messageId"] for f in first] == ids[:2]
    for _ in ids:
        await message(marker)
    await quiet(ws)
    await ack(ws, first[0])
    assert (await message(ws))["messageId"] == ids[2]
    await quiet(ws)


async def test_pull_mode_sends_only_what_is_permitted(server: ServerProcess) -> None:
    """pullMode: nothing before a permit; permitMessages 3 lets exactly 3 through."""
    slug = make_topic(dasf=False)
    ws = await consumer(server, slug, query="pullMode=true")
    marker = await consumer(server, slug, "marker")
    prod = await producer(server, slug)
    ids = [await send(prod, n) for n in range(5)]
    for _ in ids:
        await message(marker)
    await quiet(ws)
    await send_json(ws, {"type": "permit", "permitMessages": 3})
    assert [(await message(ws))["messageId"] for _ in range(3)] == ids[:3]
    await quiet(ws)


async def test_bad_permit_is_an_error(server: ServerProcess) -> None:
    """permitMessages that is not a positive integer gets an error frame."""
    ws = await consumer(server, make_topic(dasf=False), query="pullMode=true")
    await send_json(ws, {"type": "permit", "permitMessages": 0})
    assert_error(await recv(ws), "permitMessages")


async def test_ack_timeout_redelivers(server: ServerProcess) -> None:
    """ackTimeoutMillis: a message left unacked comes again with redeliveryCount 1."""
    slug = make_topic(dasf=False)
    ws = await consumer(server, slug, query="ackTimeoutMillis=300")
    prod = await producer(server, slug)
    mid = await send(prod, 1)
    start = asyncio.get_running_loop().time()
    assert (await message(ws))["redeliveryCount"] == 0
    again = await message(ws)
    assert (again["messageId"], again["redeliveryCount"]) == (mid, 1)
    assert asyncio.get_running_loop().time() - start >= 0.25
    await ack(ws, again)
    await end_of_topic_round_trip(ws)


async def test_nack_redelivers_after_the_delay(server: ServerProcess) -> None:
    """negativeAcknowledge with negativeAckRedeliveryDelay=200: redelivered about 200 ms later, count + 1."""
    slug = make_topic(dasf=False)
    ws = await consumer(server, slug, query="negativeAckRedeliveryDelay=200")
    prod = await producer(server, slug)
    mid = await send(prod, 1)
    await message(ws)
    start = asyncio.get_running_loop().time()
    await send_json(ws, {"type": "negativeAcknowledge", "messageId": mid})
    again = await message(ws)
    assert (again["messageId"], again["redeliveryCount"]) == (mid, 1)
    assert asyncio.get_running_loop().time() - start >= 0.15


async def test_nack_of_unknown_message_is_an_error(server: ServerProcess) -> None:
    """negativeAcknowledge of a message not in flight gets an error frame."""
    ws = await consumer(server, make_topic(dasf=False))
    await send_json(ws, {"type": "negativeAcknowledge", "messageId": "00000000-0000-0000-0000-000000000000"})
    assert_error(await recv(ws), "unknown messageId")


async def test_max_redeliver_count_moves_to_dead_letter_topic(server: ServerProcess) -> None:
    """maxRedeliverCount=1: a message nacked twice goes to <topic>-<sub>-DLQ and not again to the subscription."""
    slug = make_topic(dasf=False)
    dead = make_topic(f"{slug}-sub-DLQ", dasf=False)
    dead_consumer = await consumer(server, dead, "watch")
    ws = await consumer(server, slug, query="maxRedeliverCount=1&negativeAckRedeliveryDelay=0")
    prod = await producer(server, slug)
    mid = await send(prod, 1, key="k", properties={"p": "v"})
    for count in (0, 1):
        got = await message(ws)
        assert (got["messageId"], got["redeliveryCount"]) == (mid, count)
        await send_json(ws, {"type": "negativeAcknowledge", "messageId": mid})
    copy = await message(dead_consumer)
    assert copy["messageId"] != mid and copy["redeliveryCount"] == 0
    assert (copy["key"], copy["properties"]) == ("k", {"p": "v"})
    assert copy["payload"] == got["payload"]
    await quiet(ws)


async def test_dead_letter_topic_created_when_missing(server: ServerProcess) -> None:
    """A missing explicit dead letter topic is created (not DASF, private) for a principal that may create topics."""
    from app.broker.models import Topic

    user = make_user()
    user.user_permissions.add(Permission.objects.get(codename="add_topic"))
    slug = make_topic(dasf=False, consumers=(user,))
    ws = await consumer(server, slug, query="maxRedeliverCount=1&negativeAckRedeliveryDelay=0&deadLetterTopic="
                        f"persistent://public/default/{slug}-dead", headers=auth(make_token(user)))
    prod = await producer(server, slug)
    mid = await send(prod, 1)
    for _ in range(2):
        await message(ws)
        await send_json(ws, {"type": "negativeAcknowledge", "messageId": mid})
    await eventually(lambda: len(stored(f"{slug}-dead")) == 1, message="dead letter stored")
    topic = Topic.objects.get(slug=f"{slug}-dead")
    assert not topic.supports_dasf and not topic.is_public


async def test_default_dead_letter_topic_created_for_any_consumer(server: ServerProcess) -> None:
    """The default <topic>-<sub>-DLQ is created for a consumer that may not create topics (anonymous)."""
    slug = make_topic(dasf=False)
    ws = await consumer(server, slug, query="maxRedeliverCount=1&negativeAckRedeliveryDelay=0")
    prod = await producer(server, slug)
    mid = await send(prod, 1)
    for _ in range(2):
        await message(ws)
        await send_json(ws, {"type": "negativeAcknowledge", "messageId": mid})
    await eventually(lambda: len(stored(f"{slug}-sub-DLQ")) == 1, message="dead letter stored")


async def test_missing_explicit_dead_letter_topic_needs_the_right_to_create_topics(server: ServerProcess) -> None:
    """A deadLetterTopic naming a missing topic, from a principal that may not create topics: 403, nothing made."""
    from app.broker.models import Topic

    slug = make_topic(dasf=False)
    free_name = f"{slug}-anything"
    status, body = await refused(consumer_url(server, slug, query=f"maxRedeliverCount=1&deadLetterTopic={free_name}"))
    assert status == 403 and "may not create topics" in body, body
    assert not Topic.objects.filter(slug=free_name).exists()


async def test_dead_letter_name_squatted_by_auto_creation_is_409(auto_server: ServerProcess) -> None:
    """ALLOW_AUTO_TOPIC_CREATION: another user's auto-created <topic>-<sub>-DLQ (it may consume) is refused with 409."""
    victim, squatter = make_user(), make_user()
    slug = make_topic(public=False, anonymous=False, dasf=False, consumers=(victim,))
    await connect(f"{auto_server.ws}{PRODUCER}{slug}-sub-DLQ", auth(make_token(squatter)))
    status, body = await refused(consumer_url(auto_server, slug, query="maxRedeliverCount=1"),
                                 auth(make_token(victim)))
    assert status == 409 and "created by another principal" in body, body


async def test_dead_letter_name_squatted_privately_is_409(server: ServerProcess) -> None:
    """A <topic>-<sub>-DLQ another user created privately (first message) is 409, not redelivered forever."""
    victim, squatter = make_user(), make_user()
    squatter.user_permissions.add(Permission.objects.get(codename="add_topic"))
    slug = make_topic(public=False, anonymous=False, dasf=False, consumers=(victim,))
    squat = await connect(f"{server.ws}{PRODUCER}{slug}-sub-DLQ", auth(make_token(squatter)))
    assert (await publish(squat))["result"] == "ok"
    status, body = await refused(consumer_url(server, slug, query="maxRedeliverCount=1"), auth(make_token(victim)))
    assert status == 409 and "created by another principal" in body, body


async def test_disabled_topic_subscription_gets_live_messages(server: ServerProcess) -> None:
    """A disabled topic's subscription gets live messages with redeliveryCount 0; nothing is stored."""
    slug = make_topic(dasf=False, policy="disabled")
    ws = await consumer(server, slug)
    prod = await producer(server, slug)
    mid = await send(prod, 1)
    got = await message(ws)
    assert (got["messageId"], got["redeliveryCount"]) == (mid, 0) and not stored(slug)
    await ack(ws, got)
    await end_of_topic_round_trip(ws)


async def test_disabled_topic_keeps_at_most_receiver_queue_size_waiting(server: ServerProcess) -> None:
    """Disabled topic, pull mode: at most receiverQueueSize messages wait, the oldest are dropped."""
    slug = make_topic(dasf=False, policy="disabled")
    ws = await consumer(server, slug, query="pullMode=true&receiverQueueSize=2")
    marker = await consumer(server, slug, "marker")
    prod = await producer(server, slug)
    ids = [await send(prod, n) for n in range(4)]
    for _ in ids:
        await message(marker)
    await send_json(ws, {"type": "permit", "permitMessages": 4})
    assert [(await message(ws))["messageId"] for _ in range(2)] == ids[2:]
    await quiet(ws)


async def test_ack_of_a_nacked_message_waiting_is_taken(server: ServerProcess) -> None:
    """An ack of a message nacked a moment ago (waiting for redelivery) is taken, and it is not redelivered."""
    slug = make_topic(dasf=False)
    ws = await consumer(server, slug, query="negativeAckRedeliveryDelay=300")
    prod = await producer(server, slug)
    mid = await send(prod, 1)
    got = await message(ws)
    await send_json(ws, {"type": "negativeAcknowledge", "messageId": mid})
    await ack(ws, got)
    await end_of_topic_round_trip(ws)
    await quiet(ws, 0.5)


async def test_unusable_dead_letter_topic_is_looked_up_once_per_retry_period(server: ServerProcess) -> None:
    """A dead letter topic that cannot serve: its message is redelivered, with one WARNING per DEAD_LETTER_RETRY_S."""
    slug = make_topic(dasf=False)
    ws = await consumer(server, slug, query="maxRedeliverCount=1&negativeAckRedeliveryDelay=0")
    make_topic(f"{slug}-sub-DLQ", public=False, anonymous=False, dasf=False)  # an admin's, no right to publish
    prod = await producer(server, slug)
    mid = await send(prod, 1)
    for count in range(6):
        got = await message(ws)
        assert (got["messageId"], got["redeliveryCount"]) == (mid, count)
        await send_json(ws, {"type": "negativeAcknowledge", "messageId": mid})
    await message(ws)
    warnings = [line for line in server.output if "no dead letter topic" in line and slug in line]
    assert len(warnings) == 1, warnings
