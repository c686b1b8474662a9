"""Replay reads of attaching consumers, served together.

A consumer attaching to a storing topic first reads what its principal has not acked. Read one by
one, each attach cost a hop to the ORM thread, a connection health check and a transaction of its
own: with many consumers attaching at once (a restart, a fleet reconnecting) the ORM thread was the
bottleneck (benchmarks/RESULTS.md, W4). Requests that arrive while a read runs wait for the next
one, which serves up to ``MAX_REQUESTS`` of them in one transaction, equal requests sharing their
query (``services.outstanding_pages``). A lone request is read at once, as before.
"""

from __future__ import annotations

import asyncio

from channels.db import database_sync_to_async

from app.broker import services
from app.broker.services import ReplayPage, ReplayRequest

MAX_REQUESTS = 200


class ReplayReads:
    def __init__(self) -> None:
        self._queued: list[tuple[ReplayRequest, asyncio.Future[ReplayPage]]] = []
        self._task: asyncio.Task[None] | None = None
        self.reads = 0  # transactions run, for tests and metrics

    async def read(self, request: ReplayRequest) -> ReplayPage:
        future: asyncio.Future[ReplayPage] = asyncio.get_running_loop().create_future()
        self._queued.append((request, future))
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="replay-reads")
        return await future

    async def _run(self) -> None:
        try:
            while self._queued:
                batch, self._queued = self._queued[:MAX_REQUESTS], self._queued[MAX_REQUESTS:]
                waiting = [(request, future) for request, future in batch if not future.done()]  # not cancelled
                if not waiting:
                    continue
                self.reads += 1
                try:
                    pages = await database_sync_to_async(services.outstanding_pages)([r for r, _ in waiting])
                except asyncio.CancelledError:
                    for _, future in waiting:
                        future.cancel()
                    raise
                except Exception as exc:
                    # The database failed the read: each waiter hears so, as a read of its own would.
                    for _, future in waiting:
                        if not future.done():
                            future.set_exception(exc)
                    continue
                for (_, future), page in zip(waiting, pages, strict=True):
                    if not future.done():
                        future.set_result(page)
        finally:
            self._task = None

    async def stop(self) -> None:
        """Cancel the read in progress and every waiting request."""
        task = self._task
        if task is not None:
            task.cancel()
            await asyncio.wait({task})
        for _, future in self._queued:
            future.cancel()
        self._queued = []
