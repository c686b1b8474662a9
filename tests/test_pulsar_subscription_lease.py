"""Pulsar subscriptions across processes: one process serves a subscription at a time, the holder
of its lease (docs/architecture.md 18.3; test plan 18.6 item 30). Two servers behind one Redis."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.protocol import make_topic
from tests.pulsar_client import consumer, consumer_url, message, producer, quiet, refused, send
from tests.servers import ServerProcess, start_server
from tests.services import require_redis

LEASE_S = "1.5"


@pytest.fixture
def pair(_migrated: None) -> Iterator[list[ServerProcess]]:
    """Two servers on the session database and one Redis, with short subscription leases."""
    redis_url = require_redis()
    servers = [start_server(os.environ["DATABASE_URL"], REDIS_URL=redis_url, SUBSCRIPTION_LEASE_S=LEASE_S)
               for _ in range(2)]
    yield servers
    for server in servers:
        server.stop()


async def test_exclusive_on_another_process_is_409(pair: list[ServerProcess]) -> None:
    """A second Exclusive consumer on the other process gets 409."""
    slug = make_topic(dasf=False)
    await consumer(pair[0], slug)
    status, body = await refused(consumer_url(pair[1], slug))
    assert status == 409 and "another server" in body


async def test_failover_standby_takes_over_when_holder_killed(pair: list[ServerProcess]) -> None:
    """A Failover standby on the other process gets nothing, then takes over when the holder's process is killed."""
    slug = make_topic(dasf=False)
    query = "subscriptionType=Failover"
    active = await consumer(pair[0], slug, query=query)
    standby = await consumer(pair[1], slug, query=query)
    prod = await producer(pair[1], slug)
    first = await send(prod, 1)
    assert (await message(active))["messageId"] == first
    await quiet(standby)
    pair[0].kill()
    assert (await message(standby))["messageId"] == first  # unacked on the dead process
    second = await send(prod, 2)
    assert (await message(standby))["messageId"] == second
