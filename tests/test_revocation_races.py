"""A token disabled while connections opened with it are being authenticated, against a real server: none of
them stays open (consumers/base.py checks credentials again when a revocation came in between)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator

import pytest
import websockets

from app.auth.models import Token
from app.auth.services import hash_key
from tests.api_client import call
from tests.protocol import auth, close_code_within, connect, make_token, make_topic, make_user
from tests.servers import ServerProcess, start_server

CONNECTIONS = 60
# When the disable is sent after the connections began: the race is at the end of their handshakes.
DELAYS_S = [0.006 * step for step in range(20)]
CLOSED_WITHIN_S = 10.0


@pytest.fixture
def lenient_server(_migrated: None) -> Iterator[ServerProcess]:
    """A server of its own whose failed-authentication limit does not refuse this test's later rounds."""
    proc = start_server(os.environ["DATABASE_URL"], FAILED_AUTH_BURST_PER_ADDRESS="100000")
    yield proc
    proc.stop()


async def connect_or_none(url: str, headers: dict[str, str]) -> websockets.ClientConnection | None:
    try:
        return await connect(url, headers)
    except websockets.InvalidStatus:
        return None  # refused at the handshake: nothing to leak


async def open_after_disable(server: ServerProcess, delay_s: float) -> list[int | None]:
    """Open CONNECTIONS consumers with a token, disable it ``delay_s`` later: the close codes of those opened."""
    owner = make_user()
    doomed, kept = make_token(owner), make_token(owner)
    slug = make_topic(public=False, anonymous=False, consumers=(owner,), dasf=False)
    pk = Token.objects.get(key_hash=hash_key(doomed)).pk
    opening = [asyncio.ensure_future(connect_or_none(f"{server.ws}{slug}/s{index}", auth(doomed)))
               for index in range(CONNECTIONS)]
    await asyncio.sleep(delay_s)  # the disable lands somewhere in the handshakes; no outcome waits on it
    status, _ = await asyncio.to_thread(call, server, f"/tokens/{pk}/disable", "POST", kept)
    assert status == 200
    opened = [ws for ws in await asyncio.gather(*opening) if ws is not None]
    return list(await asyncio.gather(*(close_code_within(ws, CLOSED_WITHIN_S) for ws in opened)))


async def test_no_connection_of_a_token_disabled_during_its_handshake_stays_open(lenient_server: ServerProcess):
    """Connections authenticated with a token as it is disabled are all closed (4401 revoked, or 4403 as anonymous)."""
    codes = [await open_after_disable(lenient_server, delay_s) for delay_s in DELAYS_S]
    assert [sorted({code for code in round_ if code not in (4401, 4403)}, key=str) for round_ in codes] == \
        [[]] * len(DELAYS_S)
