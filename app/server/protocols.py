"""uvicorn's protocols with the bounds they lack: HTTP (httptools) on a request head, and the
sans-I/O websocket protocol's handling of handshakes answered with an HTTP response.

Without them a client that sends a request head slowly, or never finishes it, holds its connection
open for ever, and httptools buffers a request line or header of any length. A websocket upgrade
that the websockets parser rejects (a request line over 8 KiB, more than 128 headers) got no answer
at all: uvicorn's websocket protocol neither sends that rejection nor closes the connection.

So: a connection must complete its request head within HANDSHAKE_TIMEOUT_S (a websocket also its
handshake) or it is closed (408 when part of a request came); a head over MAX_REQUEST_HEAD_BYTES is
answered 414 (the request line alone is too long) or 431 and closed.
"""

from __future__ import annotations

import asyncio
from http import HTTPStatus
from typing import Any

import httptools
from django.conf import settings
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol


class HeadTooLarge(Exception):
    """Raised in a parser callback to stop parsing a request head that is over the limit."""


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.head_timeout_s: float = settings.HANDSHAKE_TIMEOUT_S
        self.max_head_bytes: int = settings.MAX_REQUEST_HEAD_BYTES
        # Whether a request head is expected or arriving, and the bytes received for it so far.
        self.head_pending = True
        self.head_bytes = 0
        self.refusal: HTTPStatus | None = None
        self.deadline: asyncio.TimerHandle | None = None

    # --- connection -----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        # uvicorn's own, except that a head over the limit is answered with its own status.
        if self.head_pending:
            self.head_bytes += len(data)
        self._unset_keepalive_if_required()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
        except httptools.HttpParserError:
            if self.refusal is None:
                message = "Invalid HTTP request received."
                self.logger.warning(message)
                self.send_400_response(message)
                return
        # All of what came while the head is still incomplete belongs to it.
        if self.refusal is None and self.head_pending and self.head_bytes > self.max_head_bytes:
            self.refusal = self._too_large(len(getattr(self, "url", b"")))
        if self.refusal is not None:
            self._refuse(self.refusal)

    def handle_websocket_upgrade(self) -> None:
        super().handle_websocket_upgrade()
        # When the websockets parser rejects the request, uvicorn's websocket protocol leaves the
        # rejection unsent and the connection open: send it and close.
        conn = getattr(self.transport.get_protocol(), "conn", None)
        if conn is not None and conn.handshake_exc is not None:
            self._disarm()
            self.transport.write(b"".join(conn.data_to_send()))
            self.transport.close()

    # --- parser callbacks -----------------------------------------------------------------

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.head_pending = True
        self._arm()

    def on_headers_complete(self) -> None:
        url_bytes = len(self.url)
        size = url_bytes + sum(len(name) + len(value) + 4 for name, value in self.headers)
        if size > self.max_head_bytes:
            self.refusal = self._too_large(url_bytes)
            raise HeadTooLarge()
        self.head_pending = False
        self.head_bytes = 0
        if not (self.parser.should_upgrade() and self._should_upgrade()):
            self._disarm()  # a websocket keeps its deadline until the application accepts it
        super().on_headers_complete()

    # --- bounds ---------------------------------------------------------------------------

    def _too_large(self, url_bytes: int) -> HTTPStatus:
        if url_bytes > self.max_head_bytes:
            return HTTPStatus.REQUEST_URI_TOO_LONG
        return HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE

    def _arm(self) -> None:
        if self.deadline is None:
            self.deadline = self.loop.call_later(self.head_timeout_s, self._expire)

    def _disarm(self) -> None:
        if self.deadline is not None:
            self.deadline.cancel()
            self.deadline = None

    def _expire(self) -> None:
        self.deadline = None
        if self.transport.is_closing():
            return
        protocol = self.transport.get_protocol()
        if protocol is not self:
            # Upgraded: close unless the application has accepted (or refused) the websocket.
            if not getattr(protocol, "handshake_complete", True):
                self.transport.close()
        elif self.head_pending:
            if self.head_bytes:
                self._refuse(HTTPStatus.REQUEST_TIMEOUT)
            else:
                self.transport.close()

    def _refuse(self, status: HTTPStatus) -> None:
        """Answer ``status`` and close; nothing more is read on this connection."""
        self._disarm()
        self.head_pending = False
        if self.cycle is not None and not self.cycle.response_complete:
            # A pipelined request's head: an answer now would land inside the previous response.
            self.transport.close()
            return
        if status is HTTPStatus.REQUEST_TIMEOUT:
            reason = f"the request head was not complete within {self.head_timeout_s:g} s"
        else:
            reason = f"the request head is over {self.max_head_bytes} bytes"
        body = f"{status.phrase}: {reason}\n".encode()
        head = [f"HTTP/1.1 {status.value} {status.phrase}\r\n".encode()]
        head += [name + b": " + value + b"\r\n" for name, value in self.server_state.default_headers]
        head.append(b"content-type: text/plain; charset=utf-8\r\nconnection: close\r\n")
        head.append(b"content-length: %d\r\n\r\n" % len(body))
        self.transport.write(b"".join(head) + body)
        self.transport.close()


class WebSocketProtocol(WebSocketsSansIOProtocol):
    """A handshake refused with an HTTP response (the ASGI denial extension, our 429) counts as
    complete: uvicorn 0.54 leaves the flag unset and logs every such refusal at ERROR as "ASGI
    callable returned without completing handshake"."""

    async def send(self, message: Any) -> None:
        await super().send(message)
        if message["type"] == "websocket.http.response.body" and not message.get("more_body", False):
            self.handshake_complete = True
