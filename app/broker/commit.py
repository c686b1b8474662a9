"""Group commit: one writer task turns a backlog of inserts and acks into one transaction.

The receive loops never wait for a commit. Whatever queued up while the previous transaction
ran goes into the next one, so there is no fixed linger: a lone request commits at once, a burst
commits in batches. Each op's callback runs after its transaction committed (or failed), in
submission order, which keeps delivery and producer acks in publish order.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Sequence

from channels.db import database_sync_to_async

from app.broker.services import Op, OpResult, write_batch

logger = logging.getLogger(__name__)

Done = Callable[[OpResult], None]
Apply = Callable[[Sequence[Op]], list[OpResult]]


class WriterClosed(RuntimeError):
    """The writer was stopped; the op was not written."""


class GroupCommitWriter:
    def __init__(self, apply: Apply = write_batch, max_rows: int = 500) -> None:
        self._apply = database_sync_to_async(apply)
        self._max_rows = max_rows
        self._pending: deque[tuple[Op, Done | None]] = deque()
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self.batches = 0
        self.rows = 0

    def submit(self, op: Op, done: Done | None = None) -> None:
        """Queue ``op``; ``done`` gets its result after the commit. Never blocks."""
        if self._closing:
            if done is not None:
                done(WriterClosed("server is shutting down"))
            return
        self._pending.append((op, done))
        self._wakeup.set()
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="group-commit-writer")

    async def write(self, op: Op) -> OpResult:
        """Submit and wait for the commit."""
        future: asyncio.Future[OpResult] = asyncio.get_running_loop().create_future()

        def done(result: OpResult) -> None:
            if not future.done():
                future.set_result(result)

        self.submit(op, done)
        return await future

    async def stop(self) -> None:
        """Write what is queued, then end the writer task."""
        self._closing = True
        self._wakeup.set()
        if self._task is not None:
            await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            await self._wakeup.wait()
            if not self._pending:
                if self._closing:
                    return
                self._wakeup.clear()
                continue
            batch = [self._pending.popleft() for _ in range(min(self._max_rows, len(self._pending)))]
            results = await self._commit([op for op, _ in batch])
            self.batches += 1
            self.rows += len(batch)
            for (_, done), result in zip(batch, results, strict=True):
                if done is None:
                    if isinstance(result, Exception):
                        logger.warning("unacknowledged write failed: %s", result)
                    continue
                try:
                    done(result)
                except Exception:
                    logger.exception("commit callback failed")

    async def _commit(self, ops: list[Op]) -> list[OpResult]:
        try:
            results: list[OpResult] = await self._apply(ops)
            return results
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            # The database is unreachable or broken: every op of the batch fails, and each
            # producer hears so (an error ack, never a false ok).
            logger.exception("group commit of %d ops failed", len(ops))
            return [exc] * len(ops)
