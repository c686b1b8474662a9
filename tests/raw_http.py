"""HTTP/1.1 over raw TCP, for requests no HTTP client library would send (incomplete heads and bodies)."""

from __future__ import annotations

import asyncio

import pytest

from tests.servers import ServerProcess

# Generous: this only proves a connection is not kept for ever.
CLOSE_WITHIN_S = 15.0


async def read_until_closed(reader: asyncio.StreamReader) -> bytes:
    """Everything the server sent until it closed, also when it reset the connection after its answer."""
    received = bytearray()
    try:
        while chunk := await reader.read(65536):
            received += chunk
    except ConnectionError:
        pass
    return bytes(received)


async def exchange(server: ServerProcess, data: bytes) -> bytes:
    """Send ``data`` on a new connection and read until the server closes it (failing if it does not)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        writer.write(data)
        await writer.drain()
        try:
            return await asyncio.wait_for(read_until_closed(reader), CLOSE_WITHIN_S)
        except TimeoutError:
            pytest.fail(f"the server kept the connection open for {CLOSE_WITHIN_S} s")
    finally:
        writer.transport.abort()


def status_of(response: bytes) -> int:
    assert response.startswith(b"HTTP/1.1 "), response[:200]
    return int(response.split(b" ", 2)[1])


def body_of(response: bytes) -> bytes:
    return response.partition(b"\r\n\r\n")[2]
