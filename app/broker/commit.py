"""Group commit: one writer task turns a backlog of inserts and acks into one transaction.

The receive loops never wait for a commit. Whatever queued up while the previous transaction
ran goes into the next one, so there is no fixed linger for messages: a lone request commits at
once, a burst commits in batches. Each op's callback runs after its transaction committed (or
failed), in submission order, which keeps delivery and producer acks in publish order.

Consumer acks have no one waiting for them. A batch of acks alone lingers up to
``ACK_LINGER_S`` for a message to travel with, so an ack's commit does not sit in front of the
next request's (request/reply would pay for every ack on its critical path otherwise).

The writer never blocks, but it counts the bytes it holds (``pending_bytes``, what submitters say
their ops hold, until their commit): producers wait on that before reading more (app/broker/pressure.py).

The writer runs its transactions on a thread of its own with its own database connection: the
shared sync_to_async thread would add its hand-over cost to every commit, and other ORM work
(connects, pongs) would queue in front of messages.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

from django.db import InterfaceError, OperationalError, connection

from app.broker.services import Op, OpResult, write_batch
from app.outages import OutageLog, outage
from app.server.metrics import TALLY

logger = logging.getLogger(__name__)

Done = Callable[[OpResult], None]
Apply = Callable[[Sequence[Op]], list[OpResult]]

ACK_LINGER_S = 0.005


def close_thread_connection() -> None:
    # A function, not ``connection.close``: the proxy must be resolved on the writer's thread.
    connection.close()


class WriterClosed(RuntimeError):
    """The writer was stopped; the op was not written."""


class GroupCommitWriter:
    def __init__(self, apply: Apply = write_batch, max_rows: int = 500, limit_bytes: int = sys.maxsize) -> None:
        self._apply_sync = apply
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="group-commit")
        self._max_rows = max_rows
        # (op, its callback, its bytes, when it was submitted)
        self._pending: deque[tuple[Op, Done | None, int, float]] = deque()
        # Bytes submitted and not yet committed (or failed); producers hold back past limit_bytes.
        self.pending_bytes = 0
        self.limit_bytes = limit_bytes
        self._waited_for = 0  # pending ops somebody waits for (messages, not acks)
        self._wakeup = asyncio.Event()
        self._urgent = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._submitted = 0
        self._written = 0
        self._flushes: list[tuple[int, asyncio.Future[None]]] = []
        self.batches = 0
        self.rows = 0
        # An outage of the database is one line as it starts and one as it ends, not one per batch.
        self._outages = OutageLog(logger, "group commit")

    def submit(self, op: Op, done: Done | None = None, size: int = 0) -> None:
        """Queue ``op``; ``done`` gets its result after the commit. Never blocks. ``size``: the
        bytes ``op`` holds, counted in ``pending_bytes`` until ``done`` is called."""
        if self._closing:
            if done is not None:
                done(WriterClosed("server is shutting down"))
            return
        self._pending.append((op, done, size, time.monotonic()))
        self.pending_bytes += size
        self._submitted += 1
        self._wakeup.set()
        if done is not None:
            self._waited_for += 1
            self._urgent.set()
        elif len(self._pending) >= self._max_rows:
            self._urgent.set()
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

    async def flush(self) -> None:
        """Return once everything submitted so far is committed (or failed): a consumer that
        reconnects must not be replayed what it acked a moment ago on its old connection."""
        if self._written >= self._submitted:
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._flushes.append((self._submitted, future))
        self._urgent.set()
        await future

    async def stop(self) -> None:
        """Write what is queued, then end the writer task."""
        self._closing = True
        self._wakeup.set()
        self._urgent.set()
        if self._task is not None:
            await self._task
            self._task = None
        await asyncio.get_running_loop().run_in_executor(self._executor, close_thread_connection)
        self._executor.shutdown(wait=True)

    async def _run(self) -> None:
        while True:
            await self._wakeup.wait()
            if not self._pending:
                if self._closing:
                    return
                self._wakeup.clear()
                continue
            if not self._waited_for and not self._flushes and not self._closing:
                self._urgent.clear()
                try:
                    async with asyncio.timeout(ACK_LINGER_S):
                        await self._urgent.wait()
                except TimeoutError:
                    pass
            batch = [self._pending.popleft() for _ in range(min(self._max_rows, len(self._pending)))]
            self._waited_for -= sum(1 for _, done, _, _ in batch if done is not None)
            started = time.monotonic()
            results = await self._commit([op for op, _, _, _ in batch])
            # Once per batch, the producer acks' below once per message: plain integers, no lock.
            committed = time.monotonic()
            TALLY.commit_seconds.observe(committed - started)
            TALLY.batch_rows.observe(len(batch))
            self.batches += 1
            self.rows += len(batch)
            self._written += len(batch)
            # Before the callbacks: a producer woken by its commit sees what is still held.
            self.pending_bytes -= sum(size for _, _, size, _ in batch)
            for (_, done, _, submitted), result in zip(batch, results, strict=True):
                if done is None:
                    # One of an outage's failures was logged as the outage started.
                    if isinstance(result, Exception) and outage(result) is None:
                        logger.warning("unacknowledged write failed: %s", result)
                    continue
                TALLY.producer_ack_seconds.observe(committed - submitted)
                try:
                    done(result)
                except Exception:
                    logger.exception("commit callback failed")
            if self._flushes:
                waiting = []
                for target, future in self._flushes:
                    if target <= self._written:
                        if not future.done():
                            future.set_result(None)
                    else:
                        waiting.append((target, future))
                self._flushes = waiting

    def _apply(self, ops: list[Op]) -> list[OpResult]:
        """On the writer's thread."""
        try:
            return self._apply_sync(ops)
        except (OperationalError, InterfaceError):
            connection.close()  # reconnect on the next batch (e.g. after a PostgreSQL restart)
            raise

    async def _commit(self, ops: list[Op]) -> list[OpResult]:
        try:
            results = await asyncio.get_running_loop().run_in_executor(self._executor, self._apply, ops)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            # The database is unreachable or broken: every op of the batch fails, and each
            # producer hears so (an error ack, never a false ok).
            self._outages.failed(exc, f" of {len(ops)} ops")
            return [exc] * len(ops)
        # A batch retried op by op (write_batch, after a duplicate) returns its ops' failures: one of
        # an outage is that outage going on, not its end, and it is logged as it starts (the results
        # of unacknowledged ops are not logged one by one).
        met = next((r for r in results if isinstance(r, Exception) and outage(r) is not None), None)
        if met is None:
            self._outages.succeeded()
        else:
            self._outages.failed(met, f" of {len(ops)} ops")
        return results
