"""uvicorn's sans-I/O websocket protocol, lighter per idle connection, writing a loop pass's frames
together, and bounded against a peer that reads nothing: the protocol app/server/serving.py runs.
The HTTP protocol (app/server/protocols.py) hands upgraded connections to it, with their handshake
deadline."""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.utils import ClientDisconnected
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.exceptions import InvalidState

from app.server.inbox import Flag, Inbox

# Data frames wait for the end of the loop pass up to this many bytes, then go at once: a sender
# that never yields still fills the transport's buffer and so meets its flow control (``writable``).
UNFLUSHED_BYTES = 64 * 1024


class WebSocketProtocol(WebSocketsSansIOProtocol):
    """uvicorn's sans-I/O websocket protocol, lighter per idle connection, and with refusals counted.

    A handshake refused with an HTTP response (the ASGI denial extension, our 429) counts as
    complete: uvicorn 0.54 leaves the flag unset and logs every such refusal at ERROR as "ASGI
    callable returned without completing handshake".

    Memory: uvicorn gives every connection an asyncio.Queue for received events and an Event for
    write flow control (four deques of ~760 bytes each, besides the objects), and keeps the parsed
    handshake request and response for the connection's life. The queue holds one event at most
    (reading pauses until the application takes it) and is read by one task: a list and a future
    do; the flag allocates its waiters only when a send has to wait; the handshake is dropped once
    answered.

    Writes: uvicorn writes each frame to the socket as it is sent, a system call per frame. Data
    frames are instead left in the websockets connection's buffer and written together once per
    loop pass (``_flush``): a consumer sent a burst gets it in one write. Every other write uvicorn
    makes (a close, a pong, a ping) takes the connection's whole buffer, so frames keep their order.
    """

    # Slots for the attributes uvicorn 0.54 sets (and ours): an instance dict with this many keys
    # takes ~1.5 KiB, slots ~300 bytes. An attribute not named here still goes to the dict.
    __slots__ = (
        "config", "app", "loop", "logger", "root_path", "asgi_version", "app_state", "connections", "tasks",
        "default_headers", "transport", "server", "client", "scheme", "queue", "handshake_initiated",
        "handshake_complete", "close_sent", "disconnected", "close_timer", "close_timeout", "initial_response",
        "conn", "read_paused", "writable", "ping_interval", "ping_timeout", "ping_timer", "pong_timer",
        "pending_ping_payload", "ping_sent_at", "last_ping_rtt", "frames", "curr_msg_data_type", "request",
        "response", "scope", "handshake_deadline", "unflushed", "pongs_unread",
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # uvicorn uses put_nowait/get/empty and set/clear/wait of these only.
        self.queue = Inbox()  # type: ignore[assignment]
        self.writable = Flag(True)  # type: ignore[assignment]
        self.handshake_deadline: asyncio.TimerHandle | None = None
        self.unflushed = 0
        # Reading paused because the peer does not read the pongs it asks for.
        self.pongs_unread = False

    def close_unless_answered(self, when: float) -> None:
        """Close the connection at loop time ``when`` unless the application has accepted (or
        refused) the websocket by then."""
        self.handshake_deadline = self.loop.call_at(when, self._handshake_expired)

    def _handshake_expired(self) -> None:
        self.handshake_deadline = None
        if not self.handshake_complete and not self.transport.is_closing():
            self.transport.close()

    def _handshake_answered(self) -> None:
        if self.handshake_deadline is not None:
            self.handshake_deadline.cancel()
            self.handshake_deadline = None

    def connection_lost(self, exc: Exception | None) -> None:
        self._handshake_answered()
        super().connection_lost(exc)

    def handle_ping(self) -> None:
        # uvicorn writes each pong whatever the peer reads: a client sending pings and reading nothing
        # grew the server by the size of its pings (360 MB in 20 s). Past the transport's high-water
        # mark, nothing more is read from it until its pongs are.
        super().handle_ping()
        # Paused again even if already: the application's receive may have resumed reading meanwhile.
        if not self.writable.is_set() and not self.transport.is_closing():
            self.pongs_unread = True
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        super().resume_writing()
        if self.pongs_unread:
            self.pongs_unread = False
            if not self.read_paused:  # else the application's receive resumes it
                self.transport.resume_reading()

    async def receive(self) -> Any:
        # uvicorn's, but reading stays paused while pongs back up: else a data frame before each
        # batch of pings (paused for it, resumed when the application takes it) let every batch in.
        message = await self.queue.get()
        if self.read_paused and self.queue.empty():
            self.read_paused = False
            if not self.pongs_unread:  # else resume_writing resumes it
                self.transport.resume_reading()
        return message

    async def send(self, message: Any) -> None:
        if message["type"] == "websocket.send" and self.handshake_complete and self.initial_response is None:
            await self._send_data(message)
            return
        await super().send(message)
        kind = message["type"]
        if kind == "websocket.http.response.body" and not message.get("more_body", False):
            self.handshake_complete = True
        elif kind == "websocket.accept" and self.handshake_complete:
            # Only the accept reads them; the scope keeps what the application needs. The request
            # is also held by the websockets parser's suspended frame: its headers are emptied.
            self.request.headers.clear()
            self.request = self.response = None  # type: ignore[assignment]
        if self.handshake_complete:
            self._handshake_answered()

    async def _send_data(self, message: Any) -> None:
        """uvicorn's ``websocket.send``, with the write left to ``_flush``."""
        await self.writable.wait()
        if self.disconnected:
            raise ClientDisconnected()
        if self.close_sent:
            raise RuntimeError("Unexpected ASGI message 'websocket.send', after sending 'websocket.close'.")
        data = message.get("bytes")
        if data is None:
            text = message.get("text")
            if text is None:
                return
            data = text.encode()
            send = self.conn.send_text
        else:
            send = self.conn.send_binary
        try:
            send(data)
        except InvalidState:
            raise ClientDisconnected() from None
        if not self.unflushed:
            self.loop.call_soon(self._flush)
        self.unflushed += len(data) or 1
        if self.unflushed >= UNFLUSHED_BYTES:
            self._flush()

    def _flush(self) -> None:
        if not self.unflushed:
            return  # written already, by a full buffer
        self.unflushed = 0
        # An empty chunk is websockets' end-of-stream marker; the protocol closes the transport itself.
        data = b"".join(self.conn.data_to_send())
        if data and not self.transport.is_closing():
            self.transport.write(data)
