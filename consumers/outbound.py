"""A connection's bounded send queue and the task that drains it.

Delivery never awaits a socket: the hub and the commit writer only push here. The queue is bounded
in frames and in bytes: a peer that falls that far behind (or never reads) is closed with
``CLOSE_TOO_SLOW``, what was still queued for it is dropped at once, and what it had not acked
under a storing policy is redelivered when it reconnects.

An idle connection holds none of it: the queue and the task that drains it exist only while frames
are waiting (an asyncio.Queue, its Events and a parked task cost several KiB per socket, and most
sockets are idle most of the time).
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

from app.server.inbox import Flag

logger = logging.getLogger(__name__)

Send = Callable[[dict[str, Any]], Awaitable[None]]


def frame_size(text: str) -> int:
    """The memory a queued text frame holds, in bytes (a string of wide characters takes 2 or 4
    bytes per character, so this bounds memory where the UTF-8 length would not)."""
    return sys.getsizeof(text)


class Outbound:
    __slots__ = ("_send", "limit", "limit_bytes", "_frames", "_task", "_room", "queued_bytes", "overflowed",
                 "_closed", "_broken")

    def __init__(self, send: Send, limit: int, limit_bytes: int) -> None:
        self._send = send
        self.limit = limit
        self.limit_bytes = limit_bytes
        # Frames not yet handed to the socket, and the task handing them over: both only while
        # there are some.
        self._frames: deque[str] | None = None
        self._task: asyncio.Task[None] | None = None
        # Waiting for room (back-pressure for replays).
        self._room = Flag()
        # Queued frames plus the one being sent (it is held until the socket takes it).
        self.queued_bytes = 0
        self.overflowed = False
        # Closed or aborted: nothing more goes out.
        self._closed = False
        # A send failed (the socket went away under us): nothing more goes out, the disconnect
        # handler cleans up.
        self._broken = False

    def _queued(self) -> int:
        return len(self._frames) if self._frames is not None else 0

    def has_room(self, frames: int, size: int = 0) -> bool:
        """Whether ``frames`` more frames of ``size`` bytes in all fit (one frame always fits an
        empty queue, however large)."""
        if self.limit - self._queued() < frames:
            return False
        return self.queued_bytes == 0 or self.queued_bytes + size <= self.limit_bytes

    async def wait_room(self, frames: int, size: int = 0) -> None:
        """Wait until ``frames`` more frames of ``size`` bytes fit (back-pressure for replays)."""
        while not self.has_room(frames, size) and not self._closed and not self.overflowed:
            self._room.clear()
            await self._room.wait()

    def _wake(self) -> None:
        self._room.set()

    def describe(self) -> str:
        return (f"{self._queued()} frames, {self.queued_bytes} bytes queued; limits {self.limit} "
                f"frames, {self.limit_bytes} bytes")

    def push(self, text: str) -> bool:
        """Queue a text frame; False when it does not fit (the caller closes the connection)."""
        if self.overflowed:
            return False
        if self._closed:
            return True  # closing: what comes now would never go out
        frames = self._frames
        if frames is None:
            frames = self._frames = deque()
        size = frame_size(text)
        if len(frames) >= self.limit or (self.queued_bytes and self.queued_bytes + size > self.limit_bytes):
            self.give_up()
            return False
        frames.append(text)
        self.queued_bytes += size
        if self._task is None and not self._broken:
            self._task = asyncio.get_running_loop().create_task(self._drain(frames), name="ws-outbound")
        return True

    def give_up(self) -> None:
        """The peer is too slow: nothing more is queued, and ``close`` drops what is."""
        self.overflowed = True
        self._wake()

    def discard(self) -> int:
        """Drop the frames not yet sent (rights were revoked, or the peer is too slow)."""
        frames = self._frames
        dropped = 0
        if frames:
            dropped = len(frames)
            self.queued_bytes -= sum(frame_size(text) for text in frames)
            frames.clear()
        self._wake()
        return dropped

    async def close(self, code: int | None = None) -> None:
        """Send what is queued, then a close frame when ``code`` is given. After an overflow the queue
        is dropped instead: a peer that does not read would never get it."""
        if self._closed:
            return
        self._closed = True
        self._wake()
        task = self._task
        if task is not None:
            if self.overflowed:
                self.discard()
                task.cancel()
            elif self._queued() >= self.limit:
                task.cancel()  # a full queue is not flushed: its peer is that far behind
            try:
                await task
            except asyncio.CancelledError:
                # The drain task was cancelled (by us, the queue being full): go on and close. Our own
                # cancellation (the peer left, the connection is being cleaned up) ends the close.
                current = asyncio.current_task()
                if current is not None and current.cancelling():
                    raise
        elif self.overflowed:
            self.discard()
        if code is not None:
            try:
                await self._send({"type": "websocket.close", "code": code})
            except OSError:
                # ASGI servers raise an OSError subclass on sends to a connection that is gone.
                logger.debug("the peer left before the close frame", exc_info=True)

    async def abort(self) -> None:
        """The peer is gone: drop what is queued."""
        self._closed = True
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
        self.discard()

    async def _drain(self, frames: deque[str]) -> None:
        send = self._send
        try:
            while frames:
                text = frames.popleft()
                try:
                    await send({"type": "websocket.send", "text": text})
                except asyncio.CancelledError:
                    raise
                except Exception:
                    # The socket went away under us; the disconnect handler cleans up.
                    logger.debug("send failed; dropping outbound queue", exc_info=True)
                    self._broken = True
                    return
                self.queued_bytes -= frame_size(text)
                self._wake()
        finally:
            if self._task is asyncio.current_task():
                self._task = None
                if not frames and self._frames is frames:
                    self._frames = None
