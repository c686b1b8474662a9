"""Pulsar subscriptions across processes: one process serves a subscription at a time, the holder
of its lease (docs/architecture.md 18.3; test plan 18.6 item 30), and a process paused past its lease
serves no more. Two servers behind one Redis."""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterator

import pytest
from websockets.exceptions import ConnectionClosed

from app.broker.models import Message
from app.pulsar.models import Subscription
from tests.bad_input import recv
from tests.protocol import eventually, make_topic
from tests.pulsar_client import (
    accepted_eventually,
    ack,
    consumer,
    consumer_url,
    message,
    producer,
    quiet,
    refused,
    send,
)
from tests.servers import ServerProcess, start_server
from tests.services import require_redis

LEASE_S = "1.5"


@pytest.fixture(scope="module")
def started_pair(_migrated: None) -> Iterator[list[ServerProcess]]:
    """Two servers on the session database and one Redis, with short subscription leases, for the
    module: each test's subscriptions are on a topic of its own."""
    redis_url = require_redis()
    servers = [start_server(os.environ["DATABASE_URL"], REDIS_URL=redis_url, SUBSCRIPTION_LEASE_S=LEASE_S)
               for _ in range(2)]
    yield servers
    for server in servers:
        server.stop()


@pytest.fixture
def pair(started_pair: list[ServerProcess]) -> list[ServerProcess]:
    """The module's two servers, each running: one an earlier test killed is started again."""
    for server in started_pair:
        if not server.running:
            server.start()
    return started_pair


@contextlib.contextmanager
def paused(server: ServerProcess) -> Iterator[None]:
    """SIGSTOP the server until the block ends (then SIGCONT): a process frozen longer than its lease."""
    assert server.proc is not None
    os.kill(server.proc.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(server.proc.pid, signal.SIGCONT)


def acked(slug: str, message_id: str) -> bool:
    """The subscription's ack of ``message_id`` is committed."""
    sequence = Message.objects.get(message_id=message_id).sequence
    return Subscription.objects.get(topic__slug=slug, name="sub").acked_through >= sequence


async def test_exclusive_on_another_process_is_409(pair: list[ServerProcess]) -> None:
    """A second Exclusive consumer on the other process gets 409."""
    slug = make_topic(dasf=False)
    await consumer(pair[0], slug)
    status, body = await refused(consumer_url(pair[1], slug))
    assert status == 409 and "another server" in body


async def test_paused_holder_delivers_nothing_after_takeover(pair: list[ServerProcess]) -> None:
    """A holder paused past its lease sends none of what it queued meanwhile: the standby that took over has it."""
    slug = make_topic(dasf=False, policy="store")  # the acked message stays, its ack seen in the cursor
    query = "subscriptionType=Failover"
    active = await consumer(pair[0], slug, query=query)
    standby = await consumer(pair[1], slug, query=query)
    prod = await producer(pair[1], slug)
    first = await send(prod, 1)
    await ack(active, await message(active))
    await eventually(lambda: acked(slug, first), message="the ack committed")
    with paused(pair[0]):
        during = [await send(prod, n) for n in range(2, 6)]  # reach the frozen process through Redis too
        for expected in during:
            frame = await message(standby)
            assert frame["messageId"] == expected
            await ack(standby, frame)
    marker = await send(prod, 6)
    assert (await message(standby))["messageId"] == marker
    await quiet(active)


async def test_paused_holders_exclusive_consumer_closed_without_messages(pair: list[ServerProcess]) -> None:
    """After a pause past its lease, a holder closes its Exclusive consumer (1011) and sends it nothing."""
    slug = make_topic(dasf=False)
    old = await consumer(pair[0], slug)
    prod = await producer(pair[1], slug)
    with paused(pair[0]):
        new = await accepted_eventually(consumer_url(pair[1], slug))
        during = await send(prod, 1)
        assert (await message(new))["messageId"] == during
    frames = []
    with pytest.raises(ConnectionClosed) as closed:
        while True:
            frames.append(await recv(old))
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1011
    assert not [frame for frame in frames if "messageId" in frame], frames


# Last: it kills a server of the module's pair (the next test to use the pair would wait for its restart).
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
