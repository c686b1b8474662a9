"""One logical websocket that survives its connections: it reconnects with back-off and jitter and
tells its owner (a producer, consumer or reader) when a connection opens, what it received (awaited
before the next frame is read, so a slow owner slows the sender), and when it was lost. The owner
keeps the state that must outlive a connection."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import websockets
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus
from websockets.frames import CloseCode

from switchyard_client import codec
from switchyard_client.backoff import Backoff
from switchyard_client.errors import (
    ClientClosed,
    ConnectionRefused,
    ConnectTimeout,
    FrameTooLarge,
    SwitchyardError,
    Unreachable,
)

logger = logging.getLogger("switchyard_client")

# Handshake answers that another try will not change: a bad parameter, bad credentials, no right, no
# such topic. 409 (a second Exclusive consumer, a producer name in use) is one too on the first
# connection; on a reconnect it is usually this client's own earlier connection, not yet gone.
REFUSED_FOR_GOOD = frozenset({400, 401, 403, 404})
# Close codes that end a DASF-path socket for good: no right (4403), no such topic (4404).
CLOSED_FOR_GOOD = frozenset({4403, 4404})
# A connection that lived this long worked: the next failure starts the back-off again.
STABLE_AFTER_S = 1.0
# How long a close waits for the peer's closing handshake: a hung server must not hold a client's close.
CLOSE_TIMEOUT_S = 2.0


@dataclass(frozen=True)
class Dialer:
    """How a client's links connect: its credentials and limits, shared by all its sockets."""

    headers: dict[str, str]
    connect_timeout_s: float = 30.0
    max_frame_bytes: int | None = 2**24
    backoff_initial_s: float = 0.1
    backoff_maximum_s: float = 10.0

    def link(self, url: str, *, on_open: Callable[[], Awaitable[None]], on_frame: Callable[[Any], Awaitable[None]],
             on_lost: Callable[[], None] = lambda: None, on_end: Callable[[], None] = lambda: None,
             url_for_reconnect: Callable[[], str] | None = None) -> Link:
        return Link(url, self.headers, on_open=on_open, on_frame=on_frame, on_lost=on_lost, on_end=on_end,
                    backoff=Backoff(self.backoff_initial_s, self.backoff_maximum_s),
                    max_frame_bytes=self.max_frame_bytes, url_for_reconnect=url_for_reconnect)


class Link:
    """Connects to ``url`` and keeps reconnecting until closed or refused for good. ``on_open`` runs on
    every new connection before ``send`` may use it (the owner re-sends or re-asks what the lost one
    left unanswered); ``on_frame`` gets each parsed frame; ``on_lost`` runs when a connection ends, ``on_end``
    once when the link does (refused for good, or closed)."""

    def __init__(
        self,
        url: str,
        headers: dict[str, str],
        *,
        on_open: Callable[[], Awaitable[None]],
        on_frame: Callable[[Any], Awaitable[None]],
        on_lost: Callable[[], None] = lambda: None,
        on_end: Callable[[], None] = lambda: None,
        backoff: Backoff | None = None,
        max_frame_bytes: int | None = 2**24,
        url_for_reconnect: Callable[[], str] | None = None,
    ) -> None:
        self.url = url
        self._headers = headers
        self._on_open = on_open
        self._on_frame = on_frame
        self._on_lost = on_lost
        self._on_end = on_end
        self._backoff = backoff or Backoff()
        self._max_frame_bytes = max_frame_bytes
        self._url_for_reconnect = url_for_reconnect
        self._ws: ClientConnection | None = None
        self._ready = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        # Set when the link ends for good: refused, or closed by its owner.
        self.failure: SwitchyardError | None = None
        self._ended = asyncio.Event()
        # Connections opened so far: an owner tells by it whether something went out on this one.
        self.generation = 0
        # The close code the peer sent when the latest connection ended (1006: none, it broke).
        self.close_code: int | None = None
        # Why the latest connection attempt failed, for a start that timed out.
        self._last_error: BaseException | None = None
        self._opened_at: float | None = None
        # Whether a connection was ever offered to ``send`` (it may have broken since).
        self._was_ready = False
        self._last = False

    async def start(self, timeout_s: float) -> None:
        """Open the first connection, trying again on failures that may pass (server down, 429, 503)
        until ``timeout_s``; a refusal for good raises ``ConnectionRefused`` at once."""
        self._task = asyncio.create_task(self._run(), name=f"switchyard-link {self.url}")
        try:
            await self._until_ready_or_ended(timeout_s)
        except BaseException:
            # Cancelled (a caller's timeout): a link never opened must not go on trying behind its back.
            if not self._was_ready:
                await self.close()
            raise
        # Opened, even if that connection broke before this resumed (the link reconnects as usual).
        if self._was_ready and not self._ended.is_set():
            return
        failure, last_error = self.failure, self._last_error
        await self.close()
        if failure is not None:
            raise failure
        last = "" if last_error is None else f" (last attempt: {_describe(last_error)})"
        # A server that answered (busy: 429, 503; slow handshakes) is a timeout; one never reached is not.
        if isinstance(last_error, OSError) and not isinstance(last_error, TimeoutError):
            raise Unreachable(f"{self.url}: no connection within {timeout_s} s{last}")
        raise ConnectTimeout(f"{self.url}: no connection within {timeout_s} s{last}")

    @property
    def connected(self) -> bool:
        return self._ready.is_set()

    @property
    def ended(self) -> bool:
        return self._ended.is_set()

    async def wait_ready(self, timeout_s: float | None) -> int:
        """Until a connection is open (its ``on_open`` done); returns its generation. Raises the
        link's failure if it ended, ``TimeoutError`` past ``timeout_s``."""
        await self._until_ready_or_ended(timeout_s)
        if self._ended.is_set():
            raise self.failure or ClientClosed(self.url)
        if not self._ready.is_set():
            raise TimeoutError(f"{self.url}: not connected within {timeout_s} s")
        return self.generation

    def last_connection(self, last: bool = True) -> None:
        """Whether the current connection is the last: its end (the server closing it, as it does after
        an ``unsubscribe``) ends the link instead of a reconnect."""
        self._last = last

    async def _until_ready_or_ended(self, timeout_s: float | None) -> None:
        """Until a connection is open, the link ended, or ``timeout_s`` passed. A connection gone
        before this waiter ran (its owner ended the link on the first frame, say) is no answer: the
        wait goes on, for the link's end or the next connection."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout_s is None else loop.time() + timeout_s
        while not self._ready.is_set() and not self._ended.is_set():
            remaining = None if deadline is None else deadline - loop.time()
            if remaining is not None and remaining <= 0:
                return
            ready = asyncio.create_task(self._ready.wait())
            ended = asyncio.create_task(self._ended.wait())
            try:
                await asyncio.wait({ready, ended}, timeout=remaining, return_when=asyncio.FIRST_COMPLETED)
            finally:
                ready.cancel()
                ended.cancel()

    async def wait_ended(self) -> None:
        await self._ended.wait()

    async def send(self, text: str) -> bool:
        """Send on the open connection; False when there is none or it broke (the owner's
        ``on_open`` sends again what must reach the server)."""
        ws = self._ws
        if ws is None or not self._ready.is_set():
            return False
        try:
            await ws.send(text)
        except ConnectionClosed:
            return False
        return True

    async def send_while_opening(self, text: str) -> None:
        """For ``on_open`` only: send before the connection is offered to ``send``'s callers."""
        if self._ws is None:
            raise ConnectionClosed(None, None)
        await self._ws.send(text)

    async def close(self) -> None:
        """Close the connection and stop reconnecting; idempotent."""
        if self.failure is None:
            self.failure = ClientClosed(self.url)
        self._mark_ended()
        ws = self._ws
        if ws is not None and self._task is not None and not self._task.done():
            # Closed while the task still reads: the frames the server sent before its close frame are
            # read (and handed to the owner: late acks settle their sends). Were nobody reading, they
            # would fill the socket's receive queue, its reading would pause, the server's close
            # frame would never be read, and the close would wait out its timeout.
            with contextlib.suppress(Exception):
                await asyncio.wait_for(ws.close(), 5)
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        ws, self._ws = self._ws, None
        if ws is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(ws.close(), 5)

    async def _run(self) -> None:
        first = True
        while not self._ended.is_set():
            url = self.url if first or self._url_for_reconnect is None else self._url_for_reconnect()
            self._opened_at = None
            try:
                await self._connection(url, first)
            except asyncio.CancelledError:
                raise
            except (ConnectionRefused, FrameTooLarge) as refused:
                self._end(refused)
                return
            except (OSError, InvalidHandshake, ConnectionClosed, TimeoutError) as error:
                self._last_error = error
                logger.debug("%s: connection failed or lost: %r", url, error)
            except Exception as error:
                # An owner's callback failed: a bug, but one connection's, not the link's end.
                self._last_error = error
                logger.exception("%s: connection ended by an error", url)
            else:
                first = False
            if self._ws is not None:
                first = False
                self._ws = None
                self._ready.clear()
                self._on_lost()
            if self._last:
                self._end(ClientClosed(self.url))
                return
            # Measured from the open, not the attempt: a handshake that took long did not work.
            if self._opened_at is not None and time.monotonic() - self._opened_at >= STABLE_AFTER_S:
                self._backoff.reset()
            if not self._ended.is_set():
                await asyncio.sleep(self._backoff.next_delay())

    async def _connection(self, url: str, first: bool) -> None:
        try:
            ws = await websockets.connect(url, additional_headers=self._headers, max_size=self._max_frame_bytes,
                                          open_timeout=10, close_timeout=CLOSE_TIMEOUT_S)
        except InvalidStatus as refused:
            status = refused.response.status_code
            if status in REFUSED_FOR_GOOD or (first and status == 409):
                raise ConnectionRefused(url, status, _refusal_reason(refused.response.body)) from None
            raise
        self._ws = ws
        self._opened_at = time.monotonic()
        self.generation += 1
        try:
            await self._on_open()
            self._ready.set()
            self._was_ready = True
            with contextlib.suppress(ConnectionClosed):  # how it closed is judged below
                async for text in ws:
                    try:
                        frame = codec.loads(text)
                    except codec.DecodeError:
                        logger.warning("%s: a frame that is no JSON: %.200r", url, text)
                        continue
                    await self._on_frame(frame)
        finally:
            self._ready.clear()
            await ws.close()
            self.close_code = ws.close_code
        sent = ws.protocol.close_sent
        if sent is not None and sent.code == CloseCode.MESSAGE_TOO_BIG and not ws.protocol.close_rcvd_then_sent:
            # The broker would send the same frame again on every connection: stop, and say why.
            raise FrameTooLarge(f"{url}: the broker sent a frame over max_frame_bytes ({self._max_frame_bytes} "
                                "bytes); the client's max_frame_bytes must be at least the broker's frame limit")
        code = ws.close_code
        if code in CLOSED_FOR_GOOD:
            raise ConnectionRefused(url, code, ws.close_reason or "")

    def _end(self, failure: SwitchyardError) -> None:
        self.failure = failure
        if self._ws is not None:
            self._ws = None
            self._on_lost()
        self._mark_ended()

    def _mark_ended(self) -> None:
        self._ready.clear()
        if not self._ended.is_set():
            self._ended.set()
            self._on_end()


def _describe(error: BaseException) -> str:
    if isinstance(error, InvalidStatus):
        return f"HTTP {error.response.status_code} {_refusal_reason(error.response.body)}".rstrip()
    return f"{type(error).__name__}: {error}" if str(error) else type(error).__name__


def _refusal_reason(body: bytes | bytearray | None) -> str:
    """The ``error`` of a refusal's JSON body (``{"error": ...}``), else its text."""
    if not body:
        return ""
    try:
        parsed = codec.loads(bytes(body))
    except codec.DecodeError:
        return bytes(body).decode(errors="replace")[:500]
    if isinstance(parsed, dict) and isinstance(parsed.get("error"), str):
        return str(parsed["error"])
    return bytes(body).decode(errors="replace")[:500]
