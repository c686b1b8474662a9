"""How the websocket protocol (app/server/websocket_protocol.py) writes: the data frames sent in one loop pass go
out in one write, in order, before any close; a sender that never yields still meets flow control; a peer
whose pongs back up is not read from."""

from __future__ import annotations

import asyncio
import base64
import os
from typing import Any

import pytest
from uvicorn.config import Config
from uvicorn.server import ServerState
from websockets.frames import Frame, Opcode
from websockets.streams import StreamReader

from app.server.websocket_protocol import UNFLUSHED_BYTES, WebSocketProtocol

WAIT_S = 5.0


class Transport(asyncio.Transport):
    """Records each write; pauses the protocol's writing once ``high_water`` bytes are unread."""

    def __init__(self, high_water: int = 1 << 30) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.buffered = 0
        self.high_water = high_water
        self.closing = False
        self.reading = True
        self.protocol: WebSocketProtocol | None = None
        self.written = asyncio.Event()

    def write(self, data: Any) -> None:
        self.writes.append(bytes(data))
        self.buffered += len(data)
        self.written.set()
        if self.protocol is not None and self.buffered >= self.high_water:
            self.protocol.pause_writing()

    def drain(self) -> None:
        self.buffered = 0
        assert self.protocol is not None
        self.protocol.resume_writing()

    async def until(self, done: Any) -> None:
        """Wait (bounded) until ``done()`` holds after some write."""
        async with asyncio.timeout(WAIT_S):
            while not done():
                self.written.clear()
                await self.written.wait()

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 50000), "sockname": ("127.0.0.1", 8000)}.get(name, default)

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True


def frames_in(data: bytes) -> list[Frame]:
    """The server frames in ``data``, after the handshake response."""
    head, _, rest = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101")
    reader = StreamReader()
    reader.feed_data(rest)
    frames = []
    while reader.buffer:
        parser = Frame.parse(reader.read_exact, mask=False)
        try:
            next(parser)
        except StopIteration as done:
            frames.append(done.value)
        else:
            raise AssertionError("a frame is cut short")
    return frames


async def serve(app: Any, transport: Transport) -> WebSocketProtocol:
    """A protocol for ``app`` on ``transport``, its handshake request received."""
    config = Config(app=app, ws=WebSocketProtocol, lifespan="off", log_level="warning")
    config.load()
    protocol = WebSocketProtocol(config=config, server_state=ServerState(), app_state={})
    transport.protocol = protocol
    protocol.connection_made(transport)
    key = base64.b64encode(os.urandom(16)).decode()
    protocol.data_received(
        f"GET /ws HTTP/1.1\r\nHost: test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    return protocol


async def test_frames_sent_in_one_pass_go_out_in_one_write() -> None:
    """Three frames sent back to back reach the transport as one write, in order."""
    sent = asyncio.Event()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        for text in ("a", "b", "c"):
            await send({"type": "websocket.send", "text": text})
        sent.set()
        await receive()

    transport = Transport()
    protocol = await serve(app, transport)
    await asyncio.wait_for(sent.wait(), WAIT_S)
    await transport.until(lambda: len(transport.writes) >= 2)
    assert len(transport.writes) == 2  # the handshake response, then the three frames
    frames = frames_in(b"".join(transport.writes))
    assert [(f.opcode, f.data) for f in frames] == [(Opcode.TEXT, b"a"), (Opcode.TEXT, b"b"), (Opcode.TEXT, b"c")]
    protocol.connection_lost(None)


async def test_a_close_in_the_same_pass_follows_the_frames() -> None:
    """Frames sent just before a close are written before the close frame."""
    closed = asyncio.Event()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.send", "bytes": b"x"})
        await send({"type": "websocket.send", "text": "y"})
        await send({"type": "websocket.close", "code": 4000})
        closed.set()

    transport = Transport()
    protocol = await serve(app, transport)
    await asyncio.wait_for(closed.wait(), WAIT_S)
    frames = frames_in(b"".join(transport.writes))
    assert [f.opcode for f in frames] == [Opcode.BINARY, Opcode.TEXT, Opcode.CLOSE]
    assert frames[0].data == b"x" and frames[1].data == b"y"
    protocol.connection_lost(None)


async def test_a_sender_that_never_yields_meets_flow_control() -> None:
    """A burst over the unflushed bound is written at once, so a full transport stops the sender."""
    count = 4 * UNFLUSHED_BYTES // 1024
    progress: list[int] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        for i in range(count):
            await send({"type": "websocket.send", "text": "z" * 1024})
            progress.append(i)
        await receive()

    transport = Transport(high_water=UNFLUSHED_BYTES)
    protocol = await serve(app, transport)
    await transport.until(lambda: transport.buffered >= UNFLUSHED_BYTES)
    for _ in range(10):
        await asyncio.sleep(0)
    assert len(progress) <= UNFLUSHED_BYTES // 1024  # stopped at the bound, not at the end of the burst
    async with asyncio.timeout(WAIT_S):
        while len(progress) < count:
            transport.drain()
            await asyncio.sleep(0)
    protocol.connection_lost(None)


@pytest.mark.parametrize("kind", ["websocket.send", "websocket.close"])
async def test_nothing_is_written_after_the_connection_is_lost(kind: str) -> None:
    """A send or close after the peer left raises (an OSError, as uvicorn's) and writes nothing."""
    ready = asyncio.Event()
    refused = asyncio.Event()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        ready.set()
        await receive()  # the disconnect
        try:
            await send({"type": kind, "text": "late", "code": 1000})
        except OSError:
            refused.set()

    transport = Transport()
    protocol = await serve(app, transport)
    await asyncio.wait_for(ready.wait(), WAIT_S)
    writes = len(transport.writes)
    protocol.connection_lost(None)
    await asyncio.wait_for(refused.wait(), WAIT_S)
    await asyncio.sleep(0)  # a flush the send scheduled would run now
    assert len(transport.writes) == writes


async def test_pings_are_not_read_while_pongs_back_up_even_after_the_application_resumed_reading() -> None:
    """A ping answered past the high-water mark pauses reading, again after something else resumed it."""
    accepted = asyncio.Event()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        accepted.set()
        await receive()

    transport = Transport(high_water=1)  # any unread byte is too many
    protocol = await serve(app, transport)
    await asyncio.wait_for(accepted.wait(), WAIT_S)
    ping = Frame(Opcode.PING, b"p").serialize(mask=True, extensions=[])
    protocol.data_received(ping)
    assert not transport.reading
    transport.resume_reading()  # as the application's receive does when its queue has room
    protocol.data_received(ping)
    assert not transport.reading
    transport.drain()  # the peer read its pongs
    assert transport.reading
    protocol.connection_lost(None)
