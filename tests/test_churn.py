"""Anonymous connection churn must not starve authenticated clients (issue 11, defect 3): 50 loops
opening and closing sockets to made-up topics and the status feed once made an authenticated
producer's handshake time out after 30 s."""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections import Counter
from collections.abc import Iterator

import pytest
import websockets
from websockets.exceptions import InvalidStatus

from tests.protocol import auth, connect, eventually, make_token, make_topic, make_user, publish
from tests.servers import ServerProcess, start_server

CHURN_LOOPS = 40
# The churn builds up this long before the first timed handshake and goes on until the last one.
CHURN_BUILDUP_S = 2.0
# Starved meant 30 s and more; a served handshake plus one publish takes milliseconds, but the first one
# (cold token, topic and announcement reads) once took 7 s in the PostgreSQL pass of a loaded CI run.
SERVED_WITHIN_S = 10.0

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def churned_server(_migrated: None) -> Iterator[ServerProcess]:
    """A server of its own (the churn must not slow other tests), with the default limits."""
    proc = start_server(os.environ["DATABASE_URL"])
    yield proc
    proc.stop()


async def churn(base: str, stop: asyncio.Event, outcomes: Counter[str]) -> None:
    """Open and close anonymous sockets until ``stop`` is set."""
    while not stop.is_set():
        path = random.choice([f"nx-{random.getrandbits(48):x}/s", "status/"])
        try:
            async with websockets.connect(base + path, open_timeout=10, close_timeout=1):
                outcomes["opened"] += 1
        except InvalidStatus as exc:
            outcomes[f"http {exc.response.status_code}"] += 1
        except (OSError, TimeoutError, websockets.WebSocketException):
            outcomes["failed"] += 1


async def served_in(server: ServerProcess, slug: str, key: str) -> float:
    """Seconds an authenticated producer needs to connect and get one message acknowledged."""
    started = time.monotonic()
    producer = await connect(server.ws + slug, auth(key))
    assert (await publish(producer, 1))["result"] == "ok"
    await producer.close()
    return time.monotonic() - started


async def test_churn_does_not_starve_authenticated_producer(churned_server):
    """While anonymous clients churn, an authenticated producer still connects and publishes at
    once, and the churn beyond the per-address limit is refused with HTTP 429."""
    owner = make_user()
    key = make_token(owner)
    slug = make_topic(public=False, anonymous=False, producers=(owner,), policy="cache")
    outcomes: Counter[str] = Counter()
    stop = asyncio.Event()
    loops = [asyncio.create_task(churn(churned_server.ws, stop, outcomes)) for _ in range(CHURN_LOOPS)]
    try:
        await asyncio.sleep(CHURN_BUILDUP_S)  # let the churn build up first
        timings = [await served_in(churned_server, slug, key) for _ in range(5)]
        # The churn passes the per-address budget (a burst of 500, then 50/s) only as fast as this
        # machine opens sockets: under load that takes longer than the timed handshakes.
        await eventually(lambda: outcomes["http 429"] > 0, timeout=30, message="the churn refused with 429")
    finally:
        stop.set()
        await asyncio.gather(*loops)
    assert max(timings) < SERVED_WITHIN_S, (timings, outcomes)
    assert outcomes["http 429"] > 0, outcomes
    assert outcomes["opened"] > 0, outcomes


async def test_server_recovers_after_churn(churned_server):
    """Once the churn stops, anonymous clients are admitted again (the limit refills)."""
    slug = make_topic()
    async with asyncio.timeout(10):
        while True:
            try:
                ws = await connect(churned_server.ws + slug)
                break
            except InvalidStatus:
                await asyncio.sleep(0.2)  # bounded-poll: tokens refill at the configured rate
    assert (await publish(ws, 2))["result"] == "ok"
