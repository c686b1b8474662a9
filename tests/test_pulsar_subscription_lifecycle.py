"""Pulsar subscriptions over their life: unsubscribe on a standby, lease loss, takeover of a deleted
subscription, expiry while consumers are attached, and acks just before a reconnect
(docs/architecture.md 18.3)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator

import pytest

from tests.bad_input import assert_error, recv
from tests.protocol import TIMEOUT_S, eventually, make_topic, send_json
from tests.pulsar_client import accepted_eventually, ack, consumer, consumer_url, message, producer, quiet, send
from tests.servers import ServerProcess, run_sql, start_server

LEASE_S = "1.5"


def subscription_ids(slug: str, name: str = "sub") -> list[int]:
    from app.pulsar.models import Subscription

    return list(Subscription.objects.filter(topic__slug=slug, name=name).values_list("pk", flat=True))


def lease_of(slug: str, name: str = "sub") -> str:
    from app.pulsar.subscriptions import lease_name

    (pk,) = subscription_ids(slug, name)
    return lease_name(subscription_topic(slug), pk)


def subscription_topic(slug: str) -> int:
    from app.broker.models import Topic

    return int(Topic.objects.get(slug=slug).pk)


def take_lease(server: ServerProcess, lease: str) -> None:
    """Another process holds the lease now (the server cannot renew it: it stands by)."""
    run_sql(server.database_url, "UPDATE leases_lease SET holder = 'elsewhere:1', "
                                 f"expires_at = '2999-01-01 00:00:00' WHERE name = '{lease}'")


def lost_lease(server: ServerProcess, slug: str) -> bool:
    return any("lease lost" in line and slug in line for line in server.output)


@pytest.fixture
def leasing_server(_migrated: None) -> Iterator[ServerProcess]:
    """A server of its own with short subscription leases."""
    proc = start_server(os.environ["DATABASE_URL"], SUBSCRIPTION_LEASE_S=LEASE_S)
    yield proc
    proc.stop()


@pytest.fixture
def expiring_server(_migrated: None) -> Iterator[ServerProcess]:
    """A server that expires subscriptions idle for 3 s, checked every 0.3 s. Renewals (every third of
    the lease) keep an attached subscription from expiring; a lease of 2.4 s survives a renewal delayed
    by a loaded machine (1.5 s once lost it mid-test)."""
    proc = start_server(os.environ["DATABASE_URL"], SUBSCRIPTION_TTL_S="3", GC_INTERVAL_S="0.3",
                        SUBSCRIPTION_LEASE_S="2.4")
    yield proc
    proc.stop()


async def test_unsubscribe_from_a_standby_is_refused(leasing_server: ServerProcess) -> None:
    """unsubscribe on a process that does not serve the subscription gets an error frame and deletes nothing."""
    slug = make_topic(dasf=False)
    ws = await consumer(leasing_server, slug, query="subscriptionType=Shared")
    take_lease(leasing_server, lease_of(slug))
    await eventually(lambda: lost_lease(leasing_server, slug), message="standing by")
    await send_json(ws, {"type": "unsubscribe"})
    assert_error(await recv(ws), "another server")
    assert len(subscription_ids(slug)) == 1


async def test_exclusive_consumer_closed_when_the_lease_is_lost(leasing_server: ServerProcess) -> None:
    """An Exclusive consumer whose process lost the lease is closed with 1011 (another may be accepted elsewhere)."""
    slug = make_topic(dasf=False)
    ws = await consumer(leasing_server, slug)
    take_lease(leasing_server, lease_of(slug))
    frame = await recv(ws)
    assert_error(frame, "lease")
    await asyncio.wait_for(ws.wait_closed(), TIMEOUT_S)
    assert ws.close_code == 1011


async def test_shared_consumer_stays_as_standby_when_the_lease_is_lost(leasing_server: ServerProcess) -> None:
    """A Shared consumer whose process lost the lease stays connected as a standby."""
    slug = make_topic(dasf=False)
    ws = await consumer(leasing_server, slug, query="subscriptionType=Shared")
    take_lease(leasing_server, lease_of(slug))
    await eventually(lambda: lost_lease(leasing_server, slug), message="standing by")
    await send_json(ws, {"type": "isEndOfTopic"})
    assert await recv(ws) == {"endOfTopic": False}


async def test_standby_taking_over_a_recreated_subscription_reconnects_its_consumers(
    leasing_server: ServerProcess,
) -> None:
    """A standby whose subscription was deleted and made anew meanwhile closes its consumers with 1011."""
    from app.pulsar.services import delete_subscription, open_subscription

    slug = make_topic(dasf=False)
    ws = await consumer(leasing_server, slug, query="subscriptionType=Shared")
    lease = lease_of(slug)
    take_lease(leasing_server, lease)
    await eventually(lambda: lost_lease(leasing_server, slug), message="standing by")
    (old,) = subscription_ids(slug)
    delete_subscription(old)
    open_subscription(subscription_topic(slug), "sub", "Shared", "anonymous")
    run_sql(leasing_server.database_url,
            f"UPDATE leases_lease SET holder = '', expires_at = '2000-01-01 00:00:00' WHERE name = '{lease}'")
    frame = await recv(ws)
    assert_error(frame, "deleted")
    await asyncio.wait_for(ws.wait_closed(), TIMEOUT_S)
    assert ws.close_code == 1011


async def test_subscription_with_a_consumer_does_not_expire(expiring_server: ServerProcess) -> None:
    """With SUBSCRIPTION_TTL_S, a subscription whose consumer stays attached on a quiet topic keeps its messages."""
    slug = make_topic(dasf=False)
    attached = await consumer(expiring_server, slug, "attached")
    prod = await producer(expiring_server, slug)
    mid = await send(prod, 1)
    assert (await message(attached))["messageId"] == mid  # left unacked
    idle = await consumer(expiring_server, slug, "idle")
    await idle.close()
    await eventually(lambda: not subscription_ids(slug, "idle"), message="the idle subscription expired")
    assert len(subscription_ids(slug, "attached")) == 1
    later = await send(prod, 2)
    assert (await message(attached))["messageId"] == later


async def test_acked_message_not_redelivered_after_an_immediate_reconnect(server: ServerProcess) -> None:
    """A consumer that acks, closes and reconnects at once does not get the acked message again."""
    slug = make_topic(dasf=False)
    prod = await producer(server, slug)
    ws = await consumer(server, slug)
    for n in range(10):
        mid = await send(prod, n)
        assert (await message(ws))["messageId"] == mid
        await ack(ws, {"messageId": mid})
        await ws.close()
        ws = await accepted_eventually(consumer_url(server, slug))
        marker = await send(prod, 100 + n)
        got = await message(ws)
        assert got["messageId"] == marker, f"round {n}: {got['messageId']} came again"
        await ack(ws, got)
    await quiet(ws, 0.1)
