"""A connection's bounded send queue and the task that drains it.

Delivery never awaits a socket: the hub and the commit writer only push here. The queue is bounded
in frames and in bytes: a peer that falls that far behind (or never reads) is closed with
``CLOSE_TOO_SLOW``, what was still queued for it is dropped at once, and what it had not acked
under a storing policy is redelivered when it reconnects.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Awaitable, Callable
from typing import Any

logger = logging.getLogger(__name__)

Send = Callable[[dict[str, Any]], Awaitable[None]]


def frame_size(text: str) -> int:
    """The memory a queued text frame holds, in bytes (a string of wide characters takes 2 or 4
    bytes per character, so this bounds memory where the UTF-8 length would not)."""
    return sys.getsizeof(text)


class Outbound:
    def __init__(self, send: Send, limit: int, limit_bytes: int) -> None:
        self._send = send
        self._queue: asyncio.Queue[str | None] = asyncio.Queue(maxsize=limit)
        self._task: asyncio.Task[None] | None = None
        self._room = asyncio.Event()
        self.limit_bytes = limit_bytes
        # Queued frames plus the one being sent (it is held until the socket takes it).
        self.queued_bytes = 0
        self.overflowed = False

    def has_room(self, frames: int, size: int = 0) -> bool:
        """Whether ``frames`` more frames of ``size`` bytes in all fit (one frame always fits an
        empty queue, however large)."""
        if self._queue.maxsize - self._queue.qsize() < frames:
            return False
        return self.queued_bytes == 0 or self.queued_bytes + size <= self.limit_bytes

    async def wait_room(self, frames: int, size: int = 0) -> None:
        """Wait until ``frames`` more frames of ``size`` bytes fit (back-pressure for replays)."""
        while not self.has_room(frames, size) and self._task is not None and not self.overflowed:
            self._room.clear()
            await self._room.wait()

    def describe(self) -> str:
        return (f"{self._queue.qsize()} frames, {self.queued_bytes} bytes queued; limits {self._queue.maxsize} "
                f"frames, {self.limit_bytes} bytes")

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._drain(), name="ws-outbound")

    def push(self, text: str) -> bool:
        """Queue a text frame; False when it does not fit (the caller closes the connection)."""
        if self.overflowed:
            return False
        size = frame_size(text)
        if self._queue.full() or (self.queued_bytes and self.queued_bytes + size > self.limit_bytes):
            self.give_up()
            return False
        self._queue.put_nowait(text)
        self.queued_bytes += size
        return True

    def give_up(self) -> None:
        """The peer is too slow: nothing more is queued, and ``close`` drops what is."""
        self.overflowed = True
        self._room.set()

    def discard(self) -> int:
        """Drop the frames not yet sent (rights were revoked, or the peer is too slow)."""
        dropped = 0
        while not self._queue.empty():
            text = self._queue.get_nowait()
            if text is not None:
                self.queued_bytes -= frame_size(text)
                dropped += 1
        self._room.set()
        return dropped

    async def close(self, code: int | None = None) -> None:
        """Send what is queued, then a close frame when ``code`` is given, and end the task. After
        an overflow the queue is dropped instead: a peer that does not read would never get it."""
        if self._task is None:
            return
        task, self._task = self._task, None
        self._room.set()
        if self.overflowed:
            self.discard()
            task.cancel()
        else:
            # A sentinel behind the queued frames; if the queue is full, stop without flushing.
            try:
                self._queue.put_nowait(None)
            except asyncio.QueueFull:
                task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            # The drain task was cancelled (by us, the queue being full): go on and close. Our own
            # cancellation (the peer left, the connection is being cleaned up) ends the close.
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise
        if code is not None:
            try:
                await self._send({"type": "websocket.close", "code": code})
            except OSError:
                # ASGI servers raise an OSError subclass on sends to a connection that is gone.
                logger.debug("the peer left before the close frame", exc_info=True)

    async def abort(self) -> None:
        """The peer is gone: drop what is queued."""
        if self._task is not None:
            task, self._task = self._task, None
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
        self.discard()

    async def _drain(self) -> None:
        queue, send = self._queue, self._send
        while True:
            text = await queue.get()
            if text is None:
                return
            try:
                await send({"type": "websocket.send", "text": text})
            except asyncio.CancelledError:
                raise
            except Exception:
                # The socket went away under us; the disconnect handler cleans up.
                logger.debug("send failed; dropping outbound queue", exc_info=True)
                return
            self.queued_bytes -= frame_size(text)
            self._room.set()
