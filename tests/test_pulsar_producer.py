"""The producer side of the Pulsar paths (docs/architecture.md 18.2, 18.4; test plan 18.6 items 1,
6, 8, 10, 25, 26, 31): handshake refusals with HTTP statuses for topics that are not
``supports_dasf``, delayed delivery stored, ``ALLOW_AUTO_TOPIC_CREATION``, unknown ``/ws/v2/``
endpoints, and ``redeliveryCount`` on Pulsar-path deliveries. ``producerName`` leases (item 5) are
tests/test_pulsar_producer_names.py, which imports the helpers here."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import websockets
from django.contrib.auth.models import Permission
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import InvalidStatus

from app.broker.models import Message, Topic
from tests import protocol
from tests.bad_input import assert_error, recv
from tests.protocol import (
    TIMEOUT_S,
    auth,
    b64,
    connect,
    make_token,
    make_topic,
    make_user,
    publish,
    recv_json,
    subscribe,
    unique,
)
from tests.servers import ServerProcess, start_server

PULSAR = "v2/{kind}/persistent/public/default/"
# Loopback addresses other than 127.0.0.1: anonymous creations count per client address.
_ADDRESSES = (f"127.0.{n // 250}.{n % 250 + 2}" for n in itertools.count(1))


def producer_url(server: ServerProcess, slug: str, query: str = "") -> str:
    return server.ws + PULSAR.format(kind="producer") + slug + query


def consumer_base(server: ServerProcess) -> str:
    return server.ws + PULSAR.format(kind="consumer")


async def refusal(url: str, headers: dict[str, str] | None = None, address: str | None = None) -> tuple[int, str]:
    """The HTTP status and the JSON body's ``error`` of a refused handshake."""
    with pytest.raises(InvalidStatus) as caught:
        await connect_from(url, headers, address)
    response = caught.value.response
    return response.status_code, json.loads(response.body)["error"]


async def connect_from(url: str, headers: dict[str, str] | None = None, address: str | None = None
                       ) -> ClientConnection:
    """``protocol.connect``, from another loopback ``address`` when given."""
    if address is None:
        return await connect(url, headers)
    ws = await asyncio.wait_for(websockets.connect(url, additional_headers=headers, local_addr=(address, 0)),
                                TIMEOUT_S)
    protocol.OPEN.append(ws)
    return ws


def topic_adder() -> Any:
    user = make_user()
    user.user_permissions.add(Permission.objects.get(codename="add_topic"))
    return user


@pytest.fixture(scope="module")
def auto_server(_migrated: None) -> Iterator[ServerProcess]:
    """ALLOW_AUTO_TOPIC_CREATION on, two auto-created topics per principal, on the session database."""
    proc = start_server(os.environ["DATABASE_URL"], ALLOW_AUTO_TOPIC_CREATION="true", TOPICS_PER_PRINCIPAL="2")
    yield proc
    proc.stop()


# --- handshake refusals (18.6 item 1, producer path) ----------------------------------------------

async def test_no_produce_right_is_403(server: ServerProcess) -> None:
    """A private non-DASF topic without the produce right: 403 before accept."""
    slug = make_topic(public=False, anonymous=False, dasf=False)
    status, error = await refusal(producer_url(server, slug), auth(make_token(make_user())))
    assert status == 403 and "publish" in error, error


async def test_invalid_token_is_401(server: ServerProcess) -> None:
    """An invalid token on a topic the anonymous principal may not publish to: 401."""
    slug = make_topic(public=False, anonymous=False, dasf=False)
    status, error = await refusal(producer_url(server, slug), auth("not-a-key"))
    assert status == 401 and "token" in error, error


async def test_missing_topic_is_404(server: ServerProcess) -> None:
    """An anonymous producer naming a missing topic (auto-creation off): 404, and nothing is created."""
    slug = unique()
    status, error = await refusal(producer_url(server, slug))
    assert status == 404 and slug in error, error
    assert not Topic.objects.filter(slug=slug).exists()


async def test_invalid_topic_name_is_404(server: ServerProcess) -> None:
    """A name longer than TOPIC_NAME_MAX_CHARS can be no topic: 404 saying why."""
    status, error = await refusal(producer_url(server, "n" * 201))
    assert status == 404 and "longer than" in error, error


@pytest.mark.parametrize("query", [
    "sendTimeoutMillis=soon", "batchingMaxMessages=1.0", "maxPendingMessages=-1", "compressionType=BROTLI",
    "messageRoutingMode=CustomPartition", "hashingScheme=md5", "initialSequenceId=x", "producerName=" + "p" * 257,
], ids=["timeout", "batching", "negative", "compression", "routing", "hashing", "sequence", "long-name"])
async def test_bad_parameter_is_400(server: ServerProcess, query: str) -> None:
    """A producer parameter that cannot be read gets 400 naming it."""
    slug = make_topic(dasf=False)
    status, error = await refusal(producer_url(server, slug, "?" + query))
    assert status == 400 and query.split("=")[0] in error, error


async def test_every_producer_parameter_accepted(server: ServerProcess) -> None:
    """Every documented producer parameter, well formed, is accepted; a base64 publish gets ok."""
    slug = make_topic(dasf=False)
    query = ("?producerName=all-params&sendTimeoutMillis=0&batchingEnabled=true&batchingMaxMessages=10"
             "&batchingMaxPublishDelay=5&maxPendingMessages=50&messageRoutingMode=RoundRobinPartition"
             "&compressionType=LZ4&hashingScheme=Murmur3_32Hash&initialSequenceId=7&encryptionKeys=k")
    producer = await connect(producer_url(server, slug, query))
    assert (await publish(producer, context=1))["result"] == "ok"


async def test_invalid_payload_after_handshake_is_code_7(server: ServerProcess) -> None:
    """On an accepted Pulsar producer, a non-base64 payload gets send-error:7 (18.6 item 6)."""
    producer = await connect(producer_url(server, make_topic(dasf=False), "?producerName=p7"))
    ack = await publish(producer, context=2, payload="%%%")
    assert ack["result"] == "send-error:7" and ack["context"] == 2, ack


# --- DASF topics keep today's behaviour (18.6 item 8) -----------------------------------------------

async def test_dasf_topic_ignores_bad_parameters(server: ServerProcess) -> None:
    """A DASF topic on /ws/v2/producer/ is accepted whatever the query, and publishes as today."""
    slug = make_topic()
    producer = await connect(producer_url(server, slug, "?compressionType=BROTLI&sendTimeoutMillis=soon"))
    assert (await publish(producer, payload="not base64"))["result"] == "ok"


async def test_dasf_topic_without_right_accepted_with_error_acks(server: ServerProcess) -> None:
    """A DASF topic the producer may not publish to: 101, then an error ack per frame (today's)."""
    slug = make_topic(public=False, anonymous=False)
    producer = await connect(producer_url(server, slug))
    ack = await publish(producer, context=3)
    assert_error(ack, "not allowed")
    assert ack["context"] == 3


async def test_dasf_topic_forbidden_consumer_closed_4403(server: ServerProcess) -> None:
    """A DASF topic on /ws/v2/consumer/ without the consume right: 101, an error frame, close 4403."""
    slug = make_topic(public=False, anonymous=False)
    consumer = await connect(consumer_base(server) + f"{slug}/sub")
    assert_error(await recv_json(consumer), "not allowed")
    with pytest.raises(websockets.ConnectionClosed) as closed:
        await asyncio.wait_for(consumer.recv(), TIMEOUT_S)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4403


async def test_missing_topic_accepted_when_first_message_may_create_it(server: ServerProcess) -> None:
    """Auto-creation off, a user with broker.add_topic: accepted, and the first message creates a DASF topic."""
    slug = unique()
    producer = await connect(producer_url(server, slug), auth(make_token(topic_adder())))
    assert (await publish(producer, payload="not base64"))["result"] == "ok"
    assert Topic.objects.get(slug=slug).supports_dasf


async def test_missing_topic_without_add_right_is_404(server: ServerProcess) -> None:
    """Auto-creation off, an authenticated user without broker.add_topic: 404."""
    status, _ = await refusal(producer_url(server, unique()), auth(make_token(make_user())))
    assert status == 404


# --- delayed delivery (18.6 items 25 storing, 26) -----------------------------------------------------

async def test_deliver_after_ms_stored_with_its_time(server: ServerProcess) -> None:
    """deliverAfterMs on a stored topic: acked ok, stored with deliver_at = publish time + the delay."""
    slug = make_topic(dasf=False, policy="store")
    producer = await connect(producer_url(server, slug))
    ack = await publish(producer, deliverAfterMs=60_000)
    assert ack["result"] == "ok", ack
    message = Message.objects.get(message_id=ack["messageId"])
    assert message.deliver_at is not None
    assert abs(message.deliver_at - message.publish_time - timedelta(seconds=60)) < timedelta(seconds=1)


async def test_deliver_at_stored_as_given(server: ServerProcess) -> None:
    """deliverAt (epoch ms) is stored as that instant."""
    slug = make_topic(dasf=False, policy="store")
    producer = await connect(producer_url(server, slug))
    at_ms = 4_102_444_800_123  # 2100-01-01T00:00:00.123Z
    ack = await publish(producer, deliverAt=at_ms)
    assert ack["result"] == "ok", ack
    stored_at = Message.objects.get(message_id=ack["messageId"]).deliver_at
    assert stored_at == datetime(2100, 1, 1, 0, 0, 0, 123_000, tzinfo=UTC)


async def test_message_without_delay_has_no_deliver_at(server: ServerProcess) -> None:
    """A publish without deliverAt / deliverAfterMs (or with 0) is stored with deliver_at null."""
    slug = make_topic(dasf=False, policy="store")
    producer = await connect(producer_url(server, slug))
    acks = [await publish(producer), await publish(producer, deliverAfterMs=0, deliverAt=0)]
    assert [Message.objects.get(message_id=a["messageId"]).deliver_at for a in acks] == [None, None]


async def test_delayed_message_reaches_todays_consumer_at_once(server: ServerProcess) -> None:
    """A delayed message still reaches a consumer that does not hold messages back at once."""
    slug = make_topic(dasf=False, policy="store")
    consumer = await subscribe(consumer_base(server), slug, probe=False)
    producer = await connect(producer_url(server, slug))
    ack = await publish(producer, deliverAfterMs=3_600_000)
    assert (await recv(consumer))["messageId"] == ack["messageId"]


@pytest.mark.parametrize(("name", "value"), [
    ("deliverAt", "soon"), ("deliverAt", 1.5), ("deliverAfterMs", True), ("deliverAfterMs", None),
    ("deliverAfterMs", 2**63),
], ids=["at-string", "at-float", "after-bool", "after-null", "after-over-long"])
async def test_non_integer_delay_is_code_3(server: ServerProcess, name: str, value: Any) -> None:
    """deliverAt / deliverAfterMs that is not an integer gets send-error:3 naming it, and nothing is stored."""
    slug = make_topic(dasf=False, policy="store")
    producer = await connect(producer_url(server, slug))
    ack = await publish(producer, context=4, **{name: value})
    assert ack["result"] == "send-error:3" and name in ack["errorMsg"] and ack["context"] == 4, ack
    assert not Message.objects.filter(topic__slug=slug).exists()


async def test_delay_on_disabled_topic_is_code_8(server: ServerProcess) -> None:
    """deliverAt on a topic whose policy stores nothing gets send-error:8 saying so."""
    slug = make_topic(dasf=False, policy="disabled")
    producer = await connect(producer_url(server, slug))
    ack = await publish(producer, context=5, deliverAt=4_102_444_800_000)
    assert ack["result"] == "send-error:8" and "disabled" in ack["errorMsg"] and ack["context"] == 5, ack


async def test_delay_ignored_on_dasf_topic(server: ServerProcess) -> None:
    """On a DASF topic deliverAt is a key like any other: a disabled DASF topic acks it ok."""
    slug = make_topic(policy="disabled")
    producer = await connect(producer_url(server, slug))
    assert (await publish(producer, deliverAt="whenever"))["result"] == "ok"


# --- ALLOW_AUTO_TOPIC_CREATION (18.6 item 31) ----------------------------------------------------

async def test_auto_creation_makes_public_pulsar_topic(auto_server: ServerProcess) -> None:
    """On: an anonymous producer naming a missing topic creates it, public and not supports_dasf."""
    slug = unique()
    producer = await connect_from(producer_url(auto_server, slug), address=next(_ADDRESSES))
    assert (await publish(producer))["result"] == "ok"
    topic = Topic.objects.get(slug=slug)
    assert topic.is_public and not topic.supports_dasf


async def test_auto_creation_skips_names_of_response_topics(auto_server: ServerProcess) -> None:
    """On: a producer naming a missing response topic S_<suffix> of an existing S is accepted as on the DASF path,
    and nothing is created (the request to S makes it, for its requester)."""
    source = make_topic()
    producer = await connect_from(producer_url(auto_server, f"{source}_abc"), address=next(_ADDRESSES))
    ack = await publish(producer)
    assert "error" in ack["result"], ack
    assert not Topic.objects.filter(slug=f"{source}_abc").exists()


async def test_auto_created_topic_counted_per_client_address(auto_server: ServerProcess) -> None:
    """Anonymous creators are counted per client address: one address past the limit gets 403, another does not."""
    crowded, other = next(_ADDRESSES), next(_ADDRESSES)
    for _ in range(2):
        await connect_from(producer_url(auto_server, unique()), address=crowded)
    status, error = await refusal(producer_url(auto_server, unique()), address=crowded)
    assert status == 403 and "topic limit" in error, error
    await connect_from(producer_url(auto_server, unique()), address=other)


async def test_auto_creator_may_consume(auto_server: ServerProcess) -> None:
    """The creator of an auto-created topic may consume it and gets what is published there."""
    user = make_user()
    key = make_token(user)
    slug = unique()
    producer = await connect(producer_url(auto_server, slug), auth(key))
    assert user.has_perm("broker.can_consume", Topic.objects.get(slug=slug))
    consumer = await subscribe(consumer_base(auto_server), slug, headers=auth(key), probe=False)
    ack = await publish(producer)
    assert (await recv(consumer))["messageId"] == ack["messageId"]


async def test_auto_creation_refuses_bad_parameters_first(auto_server: ServerProcess) -> None:
    """A handshake with a bad parameter gets 400 and creates nothing."""
    slug = unique()
    status, _ = await refusal(producer_url(auto_server, slug, "?batchingMaxMessages=1.0"))
    assert status == 400
    assert not Topic.objects.filter(slug=slug).exists()


# --- unknown endpoints -------------------------------------------------------------------------

@pytest.mark.parametrize("path", ["v2/nowhere/persistent/public/default/t", "v2/producer/persistent/t"],
                         ids=["unknown-kind", "too-few-parts"])
async def test_unknown_v2_endpoint_is_404(server: ServerProcess, path: str) -> None:
    """An unknown /ws/v2/ endpoint gets HTTP 404 with a JSON body naming the path, before accept."""
    status, error = await refusal(server.ws + path)
    assert status == 404 and f"/ws/{path}" in error, error


# --- redeliveryCount (18.6 item 10) -------------------------------------------------------------

async def test_pulsar_consumer_of_dasf_topic_gets_count_zero(server: ServerProcess) -> None:
    """A live message on /ws/v2/consumer/ of a DASF topic carries redeliveryCount 0."""
    slug = make_topic()
    consumer = await subscribe(consumer_base(server), slug)
    producer = await connect(producer_url(server, slug))
    ack = await publish(producer)
    message = await recv(consumer)
    assert message["messageId"] == ack["messageId"] and message["redeliveryCount"] == 0, message


async def test_dasf_path_frame_unchanged(server: ServerProcess) -> None:
    """On the DASF path a live message is the stored frame byte for byte (no redeliveryCount)."""
    slug = make_topic()
    consumer = await subscribe(server.ws, slug)
    producer = await connect(producer_url(server, slug))
    ack = await publish(producer, payload=b64("x"))
    text = await asyncio.wait_for(consumer.recv(), TIMEOUT_S)
    assert text == Message.objects.get(message_id=ack["messageId"]).frame
    assert "redeliveryCount" not in text
