"""``producerName`` on the Pulsar producer path (docs/architecture.md 18.2; test plan 18.6 item 5): a
name is leased per topic while its producer lives, refused with 409 to a second one, free again once
the first closes or its server's lease expires; unnamed producers never conflict. The other producer
tests, and the helpers imported here, are tests/test_pulsar_producer.py."""

from __future__ import annotations

import asyncio
import os

from websockets.asyncio.client import ClientConnection
from websockets.exceptions import InvalidStatus

from app.broker.models import Topic
from tests.protocol import TIMEOUT_S, connect, eventually, make_topic, publish
from tests.servers import ServerProcess, start_server
from tests.test_pulsar_producer import producer_url, refusal


async def accepted_eventually(url: str) -> ClientConnection:
    """Connect, retrying while the handshake is refused with 409 (a lease being released)."""
    async with asyncio.timeout(TIMEOUT_S):
        while True:
            try:
                return await connect(url)
            except InvalidStatus as exc:
                assert exc.response.status_code == 409, exc.response
                await asyncio.sleep(0.05)  # bounded-poll: the holder's release is on its way


# --- producerName (18.6 item 5) -----------------------------------------------------------------

async def test_second_producer_with_same_name_is_409(server: ServerProcess) -> None:
    """A second live producer with the first one's producerName gets 409."""
    url = producer_url(server, make_topic(dasf=False), "?producerName=twin")
    await connect(url)
    status, error = await refusal(url)
    assert status == 409 and "twin" in error, error


async def test_name_with_nul_is_400(server: ServerProcess) -> None:
    """A producerName holding NUL is refused with 400 on every backend (on PostgreSQL its lease's insert
    failed: 503 and a logged traceback)."""
    status, error = await refusal(producer_url(server, make_topic(dasf=False), "?producerName=a%00b"))
    assert status == 400 and "NUL" in error, error


async def test_name_free_again_after_first_closes(server: ServerProcess) -> None:
    """Once the first producer closes, a producer with its name is accepted."""
    url = producer_url(server, make_topic(dasf=False), "?producerName=again")
    first = await connect(url)
    await first.close()
    second = await accepted_eventually(url)
    assert (await publish(second))["result"] == "ok"


async def test_same_name_on_another_topic_accepted(server: ServerProcess) -> None:
    """A producerName is unique per topic: the same name on another topic is accepted."""
    await connect(producer_url(server, make_topic(dasf=False), "?producerName=shared-name"))
    other = await connect(producer_url(server, make_topic(dasf=False), "?producerName=shared-name"))
    assert (await publish(other))["result"] == "ok"


async def test_unnamed_producers_never_conflict(server: ServerProcess) -> None:
    """Producers without producerName (or with an empty one) are all accepted."""
    slug = make_topic(dasf=False)
    for query in ("", "", "?producerName=", "?producerName="):
        await connect(producer_url(server, slug, query))


async def test_closed_named_producers_leave_no_lease_rows(server: ServerProcess) -> None:
    """Opening and closing named producers leaves no lease row behind."""
    from app.leases.models import Lease

    slug = make_topic(dasf=False)
    for n in range(20):
        producer = await connect(producer_url(server, slug, f"?producerName=p{n}"))
        await producer.close()
    topic_id = Topic.objects.get(slug=slug).pk
    await eventually(lambda: not Lease.objects.filter(name__startswith=f"producer:{topic_id}:").exists(),
                     message="the lease rows deleted")


async def test_killed_holders_name_expires(server: ServerProcess) -> None:
    """A server killed with SIGKILL keeps its producer's name only until PRODUCER_NAME_LEASE_S passes."""
    holder_server = start_server(os.environ["DATABASE_URL"], PRODUCER_NAME_LEASE_S="1")
    try:
        slug = make_topic(dasf=False)
        query = "?producerName=survivor"
        await connect(producer_url(holder_server, slug, query))
        status, _ = await refusal(producer_url(server, slug, query))
        assert status == 409  # across processes
        holder_server.kill()
        second = await accepted_eventually(producer_url(server, slug, query))
        assert (await publish(second))["result"] == "ok"
    finally:
        holder_server.stop()
