"""A websocket client that sends pings and reads none of the pongs does not grow the server: past the
transport's high-water mark the server reads no more of it (app/server/websocket_protocol.py ``handle_ping``)."""

from __future__ import annotations

import base64
import os
import socket
import time

import pytest

from tests.protocol import make_topic
from tests.servers import ServerProcess, memory_kib

MIB = 1024 * 1024
# What the client tries to send: about as much in pongs would be held by a server that reads it all.
FLOOD_BYTES = 96 * MIB
# How long one send may block before the client concludes the server stopped reading.
SEND_TIMEOUT_S = 3.0
FLOOD_BUDGET_S = 60.0
RSS_GROWTH_LIMIT_KIB = 16 * 1024
PING = bytes([0x89, 0x80 | 125]) + b"\0\0\0\0" + os.urandom(125)  # masked, the largest control payload
TEXT_FRAME = bytes([0x81, 0x80 | 2]) + b"\0\0\0\0" + b"{}"  # masked with zeros: the text is as sent


def upgraded(port: int, path: str) -> socket.socket:
    """A socket past the websocket handshake on ``path``, with a small receive buffer (it reads nothing)."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(SEND_TIMEOUT_S)
    sock.connect(("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                 f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode())
    head = sock.recv(4096)
    assert head.startswith(b"HTTP/1.1 101"), head
    return sock


def flood_pings(sock: socket.socket, lead: bytes) -> int:
    """Send ``lead`` and 1,000 pings, again and again, until FLOOD_BYTES are sent or the server stops
    reading: the bytes sent."""
    batch, sent = lead + PING * 1000, 0
    deadline = time.monotonic() + FLOOD_BUDGET_S
    try:
        while sent < FLOOD_BYTES and time.monotonic() < deadline:
            sock.sendall(batch)
            sent += len(batch)
    except TimeoutError:
        pass
    return sent


# Pings alone; or each batch behind a small data frame, which the application takes (uvicorn then resumed
# reading whatever the pongs).
@pytest.mark.parametrize("lead", [b"", TEXT_FRAME], ids=["pings", "pings-behind-a-frame"])
def test_pings_whose_pongs_are_never_read_do_not_grow_the_server(own_server: ServerProcess, lead: bytes):
    """A consumer that floods pings and reads nothing is no longer read from: the server's peak RSS stays bounded."""
    slug = make_topic(policy="disabled", dasf=False)
    sock = upgraded(own_server.port, f"/ws/{slug}/pings")
    try:
        peak_before = memory_kib(own_server, "VmHWM")
        sent = flood_pings(sock, lead)
        growth = memory_kib(own_server, "VmHWM") - peak_before
    finally:
        sock.close()
    assert growth < RSS_GROWTH_LIMIT_KIB, f"server peak RSS grew {growth} KiB for {sent // MIB} MiB of pings"
