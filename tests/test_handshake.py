"""Request heads and websocket handshakes are bounded: a head not complete within HANDSHAKE_TIMEOUT_S
is answered 408 (or, if nothing came, just closed); a head over MAX_REQUEST_HEAD_BYTES, or one the
websocket parser rejects, gets 414 / 431 and is closed; a client vanishing mid-handshake logs no error.
Raw TCP connections to a real server."""

from __future__ import annotations

import asyncio
import base64
import os
import re
from collections.abc import Iterator

import pytest
from websockets.exceptions import InvalidStatus

from tests.protocol import connect, make_topic, publish, recv_json, send_json, subscribe, unique
from tests.pulsar_client import CONSUMER
from tests.raw_http import CLOSE_WITHIN_S, exchange, status_of
from tests.servers import ServerProcess, manage, run_sql, start_server

HANDSHAKE_TIMEOUT_S = 1.0
HEAD_LIMIT_BYTES = 16 * 1024  # MAX_REQUEST_HEAD_BYTES's default
VANISHING_CLIENTS = 40


@pytest.fixture(scope="module")
def handshake_server(_migrated: None) -> Iterator[ServerProcess]:
    """A server with a one-second handshake timeout and the default head limit."""
    server = start_server(os.environ["DATABASE_URL"], HANDSHAKE_TIMEOUT_S=str(HANDSHAKE_TIMEOUT_S))
    yield server
    server.stop()


def upgrade_headers() -> bytes:
    key = base64.b64encode(os.urandom(16)).decode()
    return (f"Host: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n").encode()


@pytest.mark.parametrize("head", [
    b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n",
    b"GET /ws/" + unique().encode() + b" HTTP/1.1\r\n" + upgrade_headers(),
], ids=["http", "websocket"])
@pytest.mark.database_agnostic
async def test_incomplete_request_head_is_answered_408_and_closed(handshake_server: ServerProcess,
                                                                  head: bytes) -> None:
    """A request head that never completes is answered 408 and closed after HANDSHAKE_TIMEOUT_S."""
    assert status_of(await exchange(handshake_server, head)) == 408


@pytest.mark.database_agnostic
async def test_silent_connection_is_closed(handshake_server: ServerProcess) -> None:
    """A connection that sends nothing is closed after HANDSHAKE_TIMEOUT_S."""
    assert await exchange(handshake_server, b"") == b""


@pytest.mark.parametrize(("path", "upgrade"), [
    ("/" + "a" * (HEAD_LIMIT_BYTES + 1000), False),
    ("/ws/" + "a" * (HEAD_LIMIT_BYTES + 1000), True),
    # Within the head limit, but over the websocket parser's 8 KiB request line.
    ("/ws/" + "a" * 9000, True),
], ids=["http", "websocket", "websocket-line"])
@pytest.mark.database_agnostic
async def test_oversized_request_line_is_answered_414_and_closed(handshake_server: ServerProcess, path: str,
                                                                 upgrade: bool) -> None:
    """A request line over the limit is answered 414 and the connection is closed."""
    headers = upgrade_headers() if upgrade else b"Host: localhost\r\n"
    response = await exchange(handshake_server, f"GET {path} HTTP/1.1\r\n".encode() + headers + b"\r\n")
    assert status_of(response) == 414


@pytest.mark.parametrize(("count", "value_bytes", "upgrade"), [
    (200, 100, False),
    (200, 100, True),
    # Within the head limit, but more headers than the websocket parser takes (128).
    (200, 1, True),
], ids=["http", "websocket", "websocket-count"])
@pytest.mark.database_agnostic
async def test_oversized_headers_are_answered_431_and_closed(handshake_server: ServerProcess, count: int,
                                                             value_bytes: int, upgrade: bool) -> None:
    """Request headers over the limit are answered 431 and the connection is closed."""
    extra = b"".join(b"X-Filler-%d: %s\r\n" % (n, b"v" * value_bytes) for n in range(count))
    path = b"/ws/" + unique().encode() if upgrade else b"/healthz"
    headers = upgrade_headers() if upgrade else b"Host: localhost\r\n"
    response = await exchange(handshake_server, b"GET " + path + b" HTTP/1.1\r\n" + headers + extra + b"\r\n")
    assert status_of(response) == 431


async def test_normal_http_and_websocket_traffic_still_work(handshake_server: ServerProcess) -> None:
    """Keep-alive requests, a body larger than the head limit, and websockets are served as before."""
    body = b"b" * (4 * HEAD_LIMIT_BYTES)
    requests = [
        b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n",
        b"POST /healthz HTTP/1.1\r\nHost: localhost\r\nContent-Length: %d\r\n\r\n" % len(body) + body,
        b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n",
    ]
    reader, writer = await asyncio.open_connection("127.0.0.1", handshake_server.port)
    statuses = []
    try:
        for request in requests:  # one connection, one request after the other
            writer.write(request)
            await writer.drain()
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), CLOSE_WITHIN_S)
            length = re.search(rb"(?im)^content-length: (\d+)", head)
            await reader.readexactly(int(length.group(1)) if length else 0)
            statuses.append(status_of(head))
    finally:
        writer.transport.abort()
    # The POST has no CSRF token: Django's 403, not a refused head.
    assert statuses == [200, 403, 200]
    slug = make_topic()
    consumer = await subscribe(handshake_server.ws, slug)
    ack = await publish(await connect(handshake_server.ws + slug), context="after")
    assert ack["result"] == "ok", ack
    assert (await recv_json(consumer))["messageId"] == ack["messageId"]
    # A silent connection closed: a handshake deadline has passed, and the open websockets still work.
    assert await exchange(handshake_server, b"") == b""
    await send_json(consumer, {"messageId": ack["messageId"]})
    second = await publish(await connect(handshake_server.ws + slug), context="later")
    assert (await recv_json(consumer))["messageId"] == second["messageId"]


async def test_clients_leaving_mid_handshake_log_no_error(handshake_server: ServerProcess) -> None:
    """Clients vanishing during or right after a websocket handshake log nothing at ERROR and no traceback."""
    server = handshake_server
    mark = len(server.output)
    public = make_topic()
    private = make_topic(public=False, anonymous=False)
    # Producer, consumer, forbidden consumer (closed 4403), reserved name and unknown path (4404).
    paths = [f"/ws/{public}", f"/ws/{public}/sub", f"/ws/{private}/sub", "/ws/status-ping/sub", "/nowhere/a/b/c"]
    for n in range(VANISHING_CLIENTS):
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(f"GET {paths[n % len(paths)]} HTTP/1.1\r\n".encode() + upgrade_headers() + b"\r\n")
        await writer.drain()
        if n % 2:  # gone right after the handshake rather than during it
            assert status_of(await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), CLOSE_WITHIN_S)) == 101
        writer.transport.abort()
    # Each endpoint still serves (and has worked through the connections before).
    consumer = await subscribe(server.ws, public, "after")
    ack = await publish(await connect(server.ws + public), context="after")
    assert (await recv_json(consumer))["messageId"] == ack["messageId"]
    for path in paths[2:]:
        ws = await connect(server.ws.removesuffix("/ws/") + path)
        assert "error" in (await recv_json(ws))["result"]
    logged = "".join(server.output[mark:])
    assert " ERROR " not in logged and "Traceback" not in logged, logged


@pytest.mark.server_errors(r"ERROR consumers\.refusals: handshake refused with 503, the database failed")
async def test_pulsar_handshake_with_a_failing_database_is_503(breakable_server):
    """A Pulsar-path handshake whose lookups fail in the database is answered 503 with Retry-After."""
    slug = unique()
    manage(breakable_server.database_url, "dasf_topic", slug, "--new", "--anonymous", "--no-dasf")
    run_sql(breakable_server.database_url, "ALTER TABLE pulsar_subscription RENAME TO pulsar_subscription_gone")
    with pytest.raises(InvalidStatus) as refused:
        await connect(f"{breakable_server.ws}{CONSUMER}{slug}/sub")
    assert refused.value.response.status_code == 503
    assert refused.value.response.headers["Retry-After"] == "1"


@pytest.mark.server_errors(r"ERROR consumers\.refusals: handshake refused with 503, the database failed")
async def test_pulsar_consumer_route_with_a_failing_database_is_503(breakable_server):
    """The /ws/v2/consumer/ route's own topic lookup failing in the database is answered 503 too."""
    slug = unique()
    manage(breakable_server.database_url, "dasf_topic", slug, "--new", "--anonymous", "--no-dasf")
    run_sql(breakable_server.database_url, "ALTER TABLE broker_topic RENAME TO broker_topic_gone")
    with pytest.raises(InvalidStatus) as refused:
        await connect(f"{breakable_server.ws}{CONSUMER}{slug}/sub")
    assert refused.value.response.status_code == 503
