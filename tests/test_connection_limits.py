"""Connection limits per client address and per principal, through a real server (issue 11, defect 3)."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator

import pytest
from websockets.exceptions import InvalidStatus

from tests.protocol import auth, connect, make_token, make_topic, make_user, publish, unique
from tests.servers import ServerProcess, manage, migrated_database_url, start_server

# The limits count open sockets in the server's memory: nothing here differs between databases.
pytestmark = pytest.mark.database_agnostic

IDLE_VIEWERS = 1000
SERVED_WITHIN_S = 5.0


@pytest.fixture(scope="module")
def limited_server(_migrated: None) -> Iterator[ServerProcess]:
    """Small limits: 20 sockets per address or principal, 30 handshakes a burst."""
    proc = start_server(os.environ["DATABASE_URL"], MAX_CONNECTIONS_PER_ADDRESS="20",
                        MAX_CONNECTIONS_PER_PRINCIPAL="20", CONNECT_BURST_PER_ADDRESS="30",
                        CONNECT_RATE_PER_ADDRESS_PER_S="1")
    yield proc
    proc.stop()


async def refused(url: str, headers: dict[str, str] | None = None) -> InvalidStatus:
    with pytest.raises(InvalidStatus) as refusal:
        await connect(url, headers)
    return refusal.value


async def test_open_sockets_per_address_are_bounded(limited_server):
    """The 21st anonymous socket from one address is refused with 429 and a JSON reason; closing
    one lets the next in."""
    slug = make_topic()
    held = [await connect(f"{limited_server.ws}{slug}/s{i}") for i in range(20)]
    refusal = await refused(f"{limited_server.ws}{slug}/extra")
    assert refusal.response.status_code == 429 and b"too many connections" in refusal.response.body
    await held.pop().close()
    async with asyncio.timeout(5):
        while True:
            try:
                await connect(f"{limited_server.ws}{slug}/again")
                break
            except InvalidStatus:
                await asyncio.sleep(0.1)  # bounded-poll: the server sees the close a moment later


async def test_authenticated_not_counted_against_address(limited_server):
    """A token holder connects while anonymous sockets from its address are at their limit."""
    owner = make_user()
    slug = make_topic(public=False, anonymous=False, producers=(owner,), consumers=(owner,))
    public = make_topic()
    for i in range(20):
        try:
            await connect(f"{limited_server.ws}{public}/fill{i}")
        except InvalidStatus:
            break  # already full (or out of handshakes): what this test needs
    producer = await connect(limited_server.ws + slug, auth(make_token(owner)))
    assert (await publish(producer, 1))["result"] == "ok"


async def test_open_sockets_per_principal_are_bounded(limited_server):
    """One principal may hold 20 sockets, whatever tokens it uses."""
    owner = make_user()
    slug = make_topic(public=False, anonymous=False, producers=(owner,))
    keys = [make_token(owner) for _ in range(2)]
    for i in range(20):
        await connect(limited_server.ws + slug, auth(keys[i % 2]))
    assert (await refused(limited_server.ws + slug, auth(keys[0]))).response.status_code == 429


@pytest.fixture(scope="module")
def roomy_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A database of its own (a status viewer is sent every topic it may see: the session database
    has hundreds), and limits high enough for a thousand sockets from this test's one address."""
    url = migrated_database_url(tmp_path_factory.mktemp("roomy"), "roomy")
    proc = start_server(url, MAX_CONNECTIONS_PER_ADDRESS="5000", CONNECT_BURST_PER_ADDRESS="5000")
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def roomy_producer(roomy_server: ServerProcess) -> tuple[str, str]:
    """A private topic on the roomy server and the key of a user who may publish to it."""
    slug, user = unique(), unique("u")
    key = manage(roomy_server.database_url, "createtoken", user, "--create-user")
    manage(roomy_server.database_url, "dasf_topic", slug, "--new", "--no-public", "-p", user)
    manage(roomy_server.database_url, "dasf_topic", unique(), "--new", "--anonymous")  # something to show
    return slug, key


async def test_idle_status_viewers_do_not_delay_handshakes(roomy_server, roomy_producer):
    """A thousand idle anonymous status sockets do not delay an authenticated handshake."""
    slug, key = roomy_producer
    for _ in range(IDLE_VIEWERS // 100):
        await asyncio.gather(*(connect(f"{roomy_server.ws}status/") for _ in range(100)))
    started = time.monotonic()
    producer = await connect(roomy_server.ws + slug, auth(key))
    assert (await publish(producer, 1))["result"] == "ok"
    assert time.monotonic() - started < SERVED_WITHIN_S


@pytest.fixture(scope="module")
def suspicious_server(_migrated: None) -> Iterator[ServerProcess]:
    """Three failed token lookups per address, then one every 100 s."""
    proc = start_server(os.environ["DATABASE_URL"], FAILED_AUTH_BURST_PER_ADDRESS="3",
                        FAILED_AUTH_RATE_PER_ADDRESS_PER_S="0.01")
    yield proc
    proc.stop()


async def test_bogus_tokens_get_429_not_invalid(suspicious_server):
    """Once an address has sent too many bad tokens, a new token from it is refused with 429 (it was
    not looked at), not called invalid; a token the server checked before still connects."""
    owner = make_user()
    slug = make_topic(public=False, anonymous=False, producers=(owner,))
    known, fresh = make_token(owner), make_token(owner)
    await connect(suspicious_server.ws + slug, auth(known))
    for n in range(3):
        bogus = await connect(suspicious_server.ws + slug, auth(f"bogus-{n}"))
        assert "invalid or disabled token" in (await publish(bogus, n))["errorMsg"]
    refusal = await refused(suspicious_server.ws + slug, auth(fresh))
    assert refusal.response.status_code == 429 and b"failed authentications" in refusal.response.body
    again = await connect(suspicious_server.ws + slug, auth(known))
    assert (await publish(again, 1))["result"] == "ok"
