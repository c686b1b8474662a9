"""uvicorn's HTTP protocol (httptools) with the bounds it lacks, on a request head and body and on
the handshake of the websocket it hands over to (app/server/websocket_protocol.py).

Without them a client that sends a request head slowly, or never finishes it, holds its connection
open for ever, and httptools buffers a request line or header of any length. A request body had no
deadline and no size either: Django holds what arrived of each unfinished body (800 stalled uploads
grew a server by 2 GB). A websocket upgrade that the websockets parser rejects (a request line over
8 KiB, more than 128 headers) got no answer at all: uvicorn's websocket protocol neither sends that
rejection nor closes the connection.

So: a connection must complete its request head within HANDSHAKE_TIMEOUT_S (a websocket also its
handshake) or it is closed (408 when part of a request came); a head over MAX_REQUEST_HEAD_BYTES is
answered 414 (the request line alone is too long) or 431 and closed. A request body must be complete
within REQUEST_BODY_TIMEOUT_S of its head (408) and at most MAX_REQUEST_BODY_BYTES long (413: by its
Content-Length before any of it is read, a chunked one once it is over). Refusals have a JSON body.
Of a body that is arriving, Django holds FILE_UPLOAD_MAX_MEMORY_SIZE in memory, the rest in a file.
"""

from __future__ import annotations

import asyncio
from http import HTTPStatus
from typing import Any

import httptools
from django.conf import settings
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

from app import codec
from app.server.websocket_protocol import WebSocketProtocol

# After a refusal the connection is half-closed and what the client still sends is read and dropped
# for at most this long: closing at once, with its data unread, would reset the connection, and a
# client still sending its body would lose the answer.
LINGER_S = 2.0


class Refused(Exception):
    """Raised in a parser callback to stop parsing a request that is refused."""


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.head_timeout_s: float = settings.HANDSHAKE_TIMEOUT_S
        self.max_head_bytes: int = settings.MAX_REQUEST_HEAD_BYTES
        self.body_timeout_s: float = settings.REQUEST_BODY_TIMEOUT_S
        self.max_body_bytes: int = settings.MAX_REQUEST_BODY_BYTES
        # Whether a request head is expected or arriving, and the bytes received for it so far.
        self.head_pending = True
        self.head_bytes = 0
        # Whether the body of the request in ``self.cycle`` is still arriving, and its bytes so far
        # (its content, and all that was read for it).
        self.body_pending = False
        self.body_bytes = 0
        self.body_wire_bytes = 0
        self.refusal: tuple[HTTPStatus, str] | None = None
        self.refused = False
        self.deadline: asyncio.TimerHandle | None = None
        self.body_deadline: asyncio.TimerHandle | None = None
        self.linger: asyncio.TimerHandle | None = None

    # --- connection -----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        self._disarm_body()
        if self.linger is not None:
            self.linger.cancel()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        # uvicorn's own, except that a refused request is answered with its own status.
        if self.refused:
            return  # lingering after a refusal: what still comes is dropped
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
            self.refusal = self._head_too_large(len(getattr(self, "url", b"")))
        # And what came while the body is still incomplete (with a head that came with it) belongs to
        # that body: chunk sizes and trailers, which httptools buffers at any length, count too.
        elif self.refusal is None and self.body_pending:
            self.body_wire_bytes += len(data)
            if self.body_wire_bytes > self.max_body_bytes + self.max_head_bytes:
                self.refusal = self._body_too_large()
        if self.refusal is not None:
            self._refuse(*self.refusal)

    def handle_websocket_upgrade(self) -> None:
        super().handle_websocket_upgrade()
        # When the websockets parser rejects the request, uvicorn's websocket protocol leaves the
        # rejection unsent and the connection open: send it and close.
        protocol = self.transport.get_protocol()
        conn = getattr(protocol, "conn", None)
        if conn is not None and conn.handshake_exc is not None:
            self._disarm()
            self.transport.write(b"".join(conn.data_to_send()))
            self.transport.close()
        elif isinstance(protocol, WebSocketProtocol) and self.deadline is not None:
            # The deadline goes with the websocket: a timer bound to this protocol would keep it
            # (its parser, its request) alive until then, though nothing uses it any more.
            protocol.close_unless_answered(self.deadline.when())
            self._disarm()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        # A pipelined request is served (its body read) only now: so its body's deadline starts now.
        if self.body_pending and self._serving(self.cycle):
            self._arm_body()

    # --- parser callbacks -----------------------------------------------------------------

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.head_pending = True
        self._arm()

    def on_headers_complete(self) -> None:
        url_bytes = len(self.url)
        size = url_bytes + sum(len(name) + len(value) + 4 for name, value in self.headers)
        if size > self.max_head_bytes:
            self.refusal = self._head_too_large(url_bytes)
            raise Refused()
        length = self._content_length()
        if length > self.max_body_bytes:
            self.refusal = self._body_too_large()
            raise Refused()
        self.head_pending = False
        self.head_bytes = 0
        upgrade = self.parser.should_upgrade() and self._should_upgrade()
        if not upgrade:
            self._disarm()  # a websocket keeps its deadline until the application accepts it
        # A request has a body when it says so (RFC 9112 6.3); a websocket upgrade has none here.
        chunked = any(name == b"transfer-encoding" for name, _ in self.headers)
        self.body_pending = not upgrade and (length > 0 or chunked)
        self.body_bytes = self.body_wire_bytes = 0
        super().on_headers_complete()
        if self.body_pending and self._serving(self.cycle):
            self._arm_body()

    def on_body(self, body: bytes) -> None:
        self.body_bytes += len(body)
        if self.body_bytes > self.max_body_bytes:
            self.refusal = self._body_too_large()
            raise Refused()
        super().on_body(body)

    def on_message_complete(self) -> None:
        self.body_pending = False
        self._disarm_body()
        super().on_message_complete()

    # --- bounds ---------------------------------------------------------------------------

    def _content_length(self) -> int:
        """The declared body length (0 if none); the parser has checked it is a number."""
        lengths = [value for name, value in self.headers if name == b"content-length"]
        try:
            return max((int(value) for value in lengths), default=0)
        except ValueError:
            return 0

    def _head_too_large(self, url_bytes: int) -> tuple[HTTPStatus, str]:
        reason = f"the request head is over {self.max_head_bytes} bytes"
        if url_bytes > self.max_head_bytes:
            return HTTPStatus.REQUEST_URI_TOO_LONG, reason
        return HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, reason

    def _body_too_large(self) -> tuple[HTTPStatus, str]:
        return HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"the request body is over {self.max_body_bytes} bytes"

    def _serving(self, cycle: RequestResponseCycle | None) -> bool:
        """Whether ``cycle``'s request is being served, not queued behind an earlier pipelined one."""
        return cycle is not None and not any(queued is cycle for queued, _ in self.pipeline)

    def _arm(self) -> None:
        if self.deadline is None:
            self.deadline = self.loop.call_later(self.head_timeout_s, self._expire)

    def _disarm(self) -> None:
        if self.deadline is not None:
            self.deadline.cancel()
            self.deadline = None

    def _arm_body(self) -> None:
        if self.body_deadline is None:
            self.body_deadline = self.loop.call_later(self.body_timeout_s, self._expire_body)

    def _disarm_body(self) -> None:
        if self.body_deadline is not None:
            self.body_deadline.cancel()
            self.body_deadline = None

    def _expire(self) -> None:
        self.deadline = None
        if self.transport.is_closing():
            return
        protocol = self.transport.get_protocol()
        if protocol is not self:
            # Upgraded (to a protocol that did not take the deadline over): close unless the
            # application has accepted (or refused) the websocket.
            if not getattr(protocol, "handshake_complete", True):
                self.transport.close()
        elif self.head_pending:
            if self.head_bytes:
                self._refuse(HTTPStatus.REQUEST_TIMEOUT,
                             f"the request head was not complete within {self.head_timeout_s:g} s")
            else:
                self.transport.close()

    def _expire_body(self) -> None:
        self.body_deadline = None
        if self.body_pending and not self.transport.is_closing():
            self._refuse(HTTPStatus.REQUEST_TIMEOUT,
                         f"the request body was not complete within {self.body_timeout_s:g} s")

    def _may_answer(self) -> bool:
        """Whether a refusal may be answered: not when the answer would land inside a response.
        A refused body's application is told the client left, and what it sends is dropped."""
        if not self.body_pending:
            # A request head: ``self.cycle`` is the previous request's (a pipelined head came early).
            return self.cycle is None or self.cycle.response_complete
        cycle = self.cycle
        if not self._serving(cycle) or cycle.response_started:
            return False
        cycle.disconnected = True
        cycle.message_event.set()
        return True

    def _refuse(self, status: HTTPStatus, reason: str) -> None:
        """Answer ``status`` and close; nothing more is parsed on this connection."""
        self._disarm()
        self._disarm_body()
        answer = self._may_answer()
        self.head_pending = self.body_pending = False
        self.refused = True
        if not answer:
            self.transport.close()
            return
        body = codec.dumps_bytes({"detail": reason})
        head = [f"HTTP/1.1 {status.value} {status.phrase}\r\n".encode()]
        head += [name + b": " + value + b"\r\n" for name, value in self.server_state.default_headers]
        head.append(b"content-type: application/json\r\nconnection: close\r\n")
        head.append(b"content-length: %d\r\n\r\n" % len(body))
        self.transport.write(b"".join(head) + body)
        if not self.transport.can_write_eof():
            self.transport.close()
            return
        self.transport.write_eof()
        self.flow.resume_reading()
        self.linger = self.loop.call_later(LINGER_S, self.transport.close)
