"""A connection's bounded send queue and the task that drains it.

Delivery never awaits a socket: the hub and the commit writer only push here. A consumer that
falls ``limit`` frames behind is closed with ``CLOSE_TOO_SLOW``; what it had not acked under a
storing policy is redelivered when it reconnects.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

logger = logging.getLogger(__name__)

Send = Callable[[dict[str, Any]], Awaitable[None]]


class Outbound:
    def __init__(self, send: Send, limit: int) -> None:
        self._send = send
        self._queue: asyncio.Queue[str | None] = asyncio.Queue(maxsize=limit)
        self._task: asyncio.Task[None] | None = None
        self._room = asyncio.Event()
        self.overflowed = False

    async def wait_room(self, frames: int) -> None:
        """Wait until ``frames`` more fit in the queue (back-pressure for replays)."""
        while self._queue.maxsize - self._queue.qsize() < frames and self._task is not None and not self.overflowed:
            self._room.clear()
            await self._room.wait()

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._drain(), name="ws-outbound")

    def push(self, text: str) -> bool:
        """Queue a text frame; False when the queue is full (the caller closes the connection)."""
        if self.overflowed:
            return False
        try:
            self._queue.put_nowait(text)
        except asyncio.QueueFull:
            self.overflowed = True
            return False
        return True

    def discard(self) -> int:
        """Drop the frames not yet sent (rights were revoked: they must not go out)."""
        dropped = 0
        while not self._queue.empty():
            self._queue.get_nowait()
            dropped += 1
        return dropped

    async def close(self, code: int | None = None) -> None:
        """Send what is queued, then a close frame when ``code`` is given, and end the task."""
        if self._task is None:
            return
        task, self._task = self._task, None
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
                # ASGI servers raise an OSError when the peer left first: there is nothing to close.
                logger.debug("close frame not sent; the peer is gone", exc_info=True)

    async def abort(self) -> None:
        """The peer is gone: drop what is queued."""
        if self._task is not None:
            task, self._task = self._task, None
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass

    async def _drain(self) -> None:
        queue, send = self._queue, self._send
        while True:
            text = await queue.get()
            self._room.set()
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
