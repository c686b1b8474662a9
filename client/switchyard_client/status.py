"""``Client.watch_status``: the availability of topics as it changes, from ``/ws/status``. After each
(re)connection the broker sends every visible topic's status, then ``synced``, then changes."""

from __future__ import annotations

import asyncio
from typing import Any

from pydantic import TypeAdapter, ValidationError

from switchyard_client.errors import ClientClosed
from switchyard_client.frames import StatusFrame, StatusGoneFrame, StatusSyncedFrame
from switchyard_client.link import Dialer

StatusChange = StatusFrame | StatusGoneFrame | StatusSyncedFrame
_CHANGE: TypeAdapter[StatusChange] = TypeAdapter(StatusChange)
# Changes kept for a watcher that does not read: a snapshot's worth (the broker shows at most 500 topics
# per socket), beyond which the oldest are dropped (a later snapshot after a reconnect repairs them).
QUEUE_LIMIT = 1000


class StatusWatch:
    def __init__(self, dialer: Dialer, url: str) -> None:
        # Changes, then None once the link ended.
        self._queue: asyncio.Queue[StatusChange | None] = asyncio.Queue()
        self._link = dialer.link(url, on_open=self._opened, on_frame=self._frame, on_end=self._ended)
        self._connect_timeout_s = dialer.connect_timeout_s
        self._started = False

    def __aiter__(self) -> StatusWatch:
        return self

    async def __anext__(self) -> StatusChange:
        if not self._started:
            self._started = True
            await self._link.start(self._connect_timeout_s)
        change = await self._queue.get()
        if change is None:
            self._queue.put_nowait(None)
            if isinstance(self._link.failure, ClientClosed) or self._link.failure is None:
                raise StopAsyncIteration
            raise self._link.failure
        return change

    @property
    def closed(self) -> bool:
        return self._link.ended

    async def close(self) -> None:
        await self._link.close()

    async def _opened(self) -> None:
        return None

    async def _frame(self, frame: Any) -> None:
        try:
            change = _CHANGE.validate_python(frame)
        except ValidationError:
            return  # an error frame (e.g. too many topics): the statuses still come
        if self._queue.qsize() >= QUEUE_LIMIT:
            self._queue.get_nowait()
        self._queue.put_nowait(change)

    def _ended(self) -> None:
        self._queue.put_nowait(None)
