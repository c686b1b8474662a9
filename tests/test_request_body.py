"""Request bodies are bounded: a body not complete within REQUEST_BODY_TIMEOUT_S is answered 408 and closed;
one over MAX_REQUEST_BODY_BYTES gets 413 (by its Content-Length at once, chunked once it is over, trailers
included), also read by a client still sending; a stalled body holds little memory; bodies the API takes (an
emit of OUTBOX_MAX_DATA_BYTES of data) still work. Raw TCP connections to real servers."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Iterator

import pytest

from tests.outbox import clear_outbox
from tests.protocol import eventually, make_token, make_user
from tests.raw_http import CLOSE_WITHIN_S, body_of, exchange, read_until_closed, status_of
from tests.servers import ServerProcess, memory_kib, start_server

BODY_TIMEOUT_S = 1.0
BODY_LIMIT_BYTES = 64 * 1024
HEAD_LIMIT_BYTES = 16 * 1024  # MAX_REQUEST_HEAD_BYTES's default
EMIT = b"/api/v1/outbox/events"
OUTBOX_MAX_DATA_BYTES = 1024 * 1024  # its default
MIB = 1024 * 1024
# The memory attack: stalled uploads, each with this much of its (allowed) body sent.
STALLED_UPLOADS = 200
STALLED_SENT_BYTES = 2 * MIB
STALLED_DECLARED_BYTES = 3 * MIB
# Peak resident growth allowed: 1 MiB an upload. While they flow, uvicorn holds up to 256 KiB read at
# once for each and copies it on to Django (about 100 MiB here); a stalled upload then holds tens of
# KiB (Django spools the rest to a file). Before, Django held each body in memory up to 2.5 MiB: the
# server grew by about 500 MiB in this test.
RSS_GROWTH_LIMIT_KIB = STALLED_UPLOADS * 1024
TEST_BUDGET_S = 120.0


@pytest.fixture(scope="module")
def body_server(_migrated: None) -> Iterator[ServerProcess]:
    """A server with a one-second body deadline and a 64 KiB body limit."""
    server = start_server(os.environ["DATABASE_URL"], REQUEST_BODY_TIMEOUT_S=str(BODY_TIMEOUT_S),
                          MAX_REQUEST_BODY_BYTES=str(BODY_LIMIT_BYTES))
    yield server
    server.stop()


@pytest.fixture
def own_server() -> Iterator[ServerProcess]:
    """A server of its own (its peak memory is this test's) whose body deadline outlasts the test."""
    server = start_server(os.environ["DATABASE_URL"], REQUEST_BODY_TIMEOUT_S=str(TEST_BUDGET_S * 2))
    yield server
    server.stop()


@pytest.fixture
def emitter() -> Iterator[str]:
    """A superuser's token; the events it emits are removed afterwards."""
    yield make_token(make_user(is_superuser=True, is_staff=True))
    clear_outbox()


def post_head(length: int | None, key: str | None = None) -> bytes:
    """A POST to the emit endpoint up to its body: ``length`` bytes declared, or chunked when None."""
    framing = b"Transfer-Encoding: chunked" if length is None else b"Content-Length: %d" % length
    authorization = b"Authorization: Token %s\r\n" % key.encode() if key else b""
    return (b"POST " + EMIT + b" HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
            + authorization + b"Connection: close\r\n" + framing + b"\r\n\r\n")


def chunked(body: bytes, size: int = 8192) -> bytes:
    """``body`` in chunks of ``size``, with the last chunk."""
    return b"".join(b"%x\r\n%s\r\n" % (len(body[n:n + size]), body[n:n + size])
                    for n in range(0, len(body), size)) + b"0\r\n\r\n"


def event(data: object) -> bytes:
    """An emit request's body, JSON-encoded as most clients do (non-ASCII escaped as \\uXXXX)."""
    return json.dumps({"type": "t.large", "source": "/tests/body", "data": data}).encode()


@pytest.mark.database_agnostic
async def test_stalled_body_is_answered_408_and_closed(body_server: ServerProcess) -> None:
    """A body that stops arriving is answered 408 and closed after REQUEST_BODY_TIMEOUT_S."""
    response = await exchange(body_server, post_head(1000) + b'{"type": "t"')
    assert status_of(response) == 408
    assert "not complete within" in json.loads(body_of(response))["detail"], response


@pytest.mark.database_agnostic
async def test_trickled_body_is_answered_408_within_the_deadline(body_server: ServerProcess) -> None:
    """A body that keeps trickling in is answered 408 at the deadline: it is one for the whole body."""
    reader, writer = await asyncio.open_connection("127.0.0.1", body_server.port)

    async def trickle() -> None:
        writer.write(post_head(BODY_LIMIT_BYTES))
        for _ in range(int(CLOSE_WITHIN_S * 10)):  # bounded: a byte each 0.1 s, for at most CLOSE_WITHIN_S
            writer.write(b" ")
            await writer.drain()
            await asyncio.sleep(0.1)  # pacing the sender, not waiting for a result

    sender = asyncio.create_task(trickle())
    try:
        response = await asyncio.wait_for(read_until_closed(reader), CLOSE_WITHIN_S)
    finally:
        sender.cancel()
        writer.transport.abort()
    assert status_of(response) == 408


@pytest.mark.database_agnostic
async def test_oversized_content_length_is_answered_413_at_once(body_server: ServerProcess) -> None:
    """A Content-Length over MAX_REQUEST_BODY_BYTES is answered 413 and closed before any of the body is sent."""
    response = await exchange(body_server, post_head(100_000_000))
    assert status_of(response) == 413
    assert f"over {BODY_LIMIT_BYTES} bytes" in json.loads(body_of(response))["detail"], response


@pytest.mark.database_agnostic
async def test_chunked_body_over_the_limit_is_answered_413(body_server: ServerProcess) -> None:
    """A chunked body is answered 413 and closed once it is over MAX_REQUEST_BODY_BYTES."""
    # No last chunk: the refusal must come from counting, not from the end of the body.
    body = chunked(b" " * (BODY_LIMIT_BYTES + 8192)).removesuffix(b"0\r\n\r\n")
    assert status_of(await exchange(body_server, post_head(None) + body)) == 413


@pytest.mark.database_agnostic
async def test_chunked_trailers_over_the_limit_are_answered_413(body_server: ServerProcess) -> None:
    """Trailers after the last chunk count against the body limit: an endless trailer is answered 413."""
    trailer = b"X-Trailer: " + b"t" * (BODY_LIMIT_BYTES + HEAD_LIMIT_BYTES)  # never ends
    last_chunk = chunked(b"{}").removesuffix(b"\r\n")  # trailers come before the final empty line
    assert status_of(await exchange(body_server, post_head(None) + last_chunk + trailer)) == 413


@pytest.mark.database_agnostic
async def test_client_sending_an_oversized_body_reads_the_413(body_server: ServerProcess) -> None:
    """A client that sends its whole oversized body before reading still gets the 413 (not a reset)."""
    body = b" " * (64 * MIB)  # more than socket buffers hold: the server must read it to let it through
    assert status_of(await exchange(body_server, post_head(len(body)) + body)) == 413


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
async def test_body_within_the_limit_is_served(body_server: ServerProcess, emitter: str, framing: str) -> None:
    """An emit whose body is just within MAX_REQUEST_BODY_BYTES is taken (201)."""
    body = event("x" * (BODY_LIMIT_BYTES - 100))
    assert BODY_LIMIT_BYTES - 100 < len(body) <= BODY_LIMIT_BYTES
    if framing == "chunked":
        request = post_head(None, emitter) + chunked(body)
    else:
        request = post_head(len(body), emitter) + body
    response = await exchange(body_server, request)
    assert status_of(response) == 201, response[:500]


async def test_emit_of_the_largest_data_escaped_in_json_is_taken(server: ServerProcess, emitter: str) -> None:
    """With default settings, an emit of OUTBOX_MAX_DATA_BYTES of data JSON-escaped to 3 MiB is taken (201)."""
    # "é" is 2 bytes of data and 6 bytes (\u00e9) of request: the body is about 3 MiB.
    body = event("é" * (OUTBOX_MAX_DATA_BYTES // 2 - 1))
    assert len(body) > 3 * MIB - 100
    response = await exchange(server, post_head(len(body), emitter) + body)
    assert status_of(response) == 201, response[:500]


def queued_bytes(port: int) -> int:
    """Bytes in flight on loopback connections to ``port``: sent by clients and not yet read by the server."""
    total = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as lines:
            next(lines)
            for line in lines:
                fields = line.split()
                local, remote, state, (tx, rx) = fields[1], fields[2], fields[3], fields[4].split(":")
                if state != "01":  # ESTABLISHED
                    continue
                if int(local.rsplit(":", 1)[1], 16) == port:
                    total += int(rx, 16)  # the server's receive queue
                elif int(remote.rsplit(":", 1)[1], 16) == port:
                    total += int(tx, 16)  # a client's send queue
    return total


@pytest.mark.database_agnostic
async def test_stalled_uploads_keep_memory_bounded(own_server: ServerProcess) -> None:
    """Many anonymous uploads of megabytes that then stall keep the server's peak memory growth bounded."""
    async with asyncio.timeout(TEST_BUDGET_S):
        server = own_server
        peak_before = memory_kib(server, "VmHWM")
        connections = [await asyncio.open_connection("127.0.0.1", server.port) for _ in range(STALLED_UPLOADS)]
        try:
            upload = post_head(STALLED_DECLARED_BYTES) + b" " * STALLED_SENT_BYTES
            for _, writer in connections:
                writer.write(upload)
            await asyncio.gather(*(writer.drain() for _, writer in connections))
            # Measured once the server has read all that was sent (it is not holding back by not reading).
            await eventually(lambda: not any(writer.transport.get_write_buffer_size() for _, writer in connections)
                             and not queued_bytes(server.port), TEST_BUDGET_S / 2, "the server to read the uploads")
            growth = memory_kib(server, "VmHWM") - peak_before
            assert growth < RSS_GROWTH_LIMIT_KIB, (
                f"server peak RSS grew {growth} KiB with {STALLED_UPLOADS} stalled uploads of {STALLED_SENT_BYTES} B")
        finally:
            for _, writer in connections:
                writer.transport.abort()
