"""Apply what other processes announced: rights changed, topics created or deleted, credentials
revoked (app/broker/announcements.py). Every server reads the feed every
``ANNOUNCEMENT_POLL_INTERVAL_S`` on a database thread of its own, so a change made anywhere (a
command, a shell, another server) reaches this process's open connections within that interval,
with or without Redis. A lookup that the topic directory answers "no such topic" first catches
up with the feed (one read shared by every lookup waiting meanwhile), so a topic created a moment
ago elsewhere is found, and a flood of made-up names still costs no query on the shared ORM thread.

Starting, the reader first notes where the feed ends and then loads the topic directory, so no
topic created in between is missed; the ids just below that end which are not visible yet are
watched as holes (``FeedCursor.at_end``): on PostgreSQL a change may commit after a later one.
"""

from __future__ import annotations

import asyncio
import logging

from django.conf import settings

from app.broker import announcements
from app.broker.announcements import FeedCursor
from app.broker.runtime import BrokerRuntime
from app.broker.services import topic_slugs
from relays.database_thread import DatabaseThread
from relays.periodic import every

logger = logging.getLogger(__name__)

# Rows a transaction may take from insert to commit and still be applied (PostgreSQL).
HOLE_TTL_S = 60.0
PRUNE_EVERY_S = 60.0


class AnnouncementReader:
    def __init__(self, runtime: BrokerRuntime, database: DatabaseThread) -> None:
        self.runtime = runtime
        self.database = database
        self.cursor: FeedCursor | None = None
        self._lock = asyncio.Lock()
        # When the latest read that completed began: a failed read applied nothing.
        self._completed_from = float("-inf")
        self._prune_at = runtime.loop.time() + PRUNE_EVERY_S

    async def read(self) -> None:
        """Apply the announcements made since the last read."""
        async with self._lock:
            await self._read()

    async def catch_up(self) -> None:
        """Return once every announcement committed before this call has been applied."""
        asked = self.runtime.loop.time()
        async with self._lock:
            if self._completed_from <= asked:  # no read begun since we asked has completed: one must
                await self._read()

    async def _read(self) -> None:
        loop, database = self.runtime.loop, self.database
        started = loop.time()
        if self.cursor is None:
            newest = await database.call(announcements.newest_ids)
            self.runtime.directory.load(await database.call(topic_slugs))
            self.cursor = FeedCursor.at_end(newest, loop.time(), HOLE_TTL_S)
            logger.debug("topic directory loaded: %d topics", len(self.runtime.directory))
        rows = await database.call(announcements.read, self.cursor.after, list(self.cursor.holes))
        for change in self.cursor.take(rows, loop.time()):
            if change.origin == announcements.PROCESS_ID:
                continue
            try:
                self.runtime.apply(change)
            except Exception:
                # The cursor has moved past it: the changes after it must still be applied.
                logger.exception("applying announcement %d failed", change.id)
        self._completed_from = started

    async def prune(self) -> None:
        if self.runtime.loop.time() >= self._prune_at:
            self._prune_at = self.runtime.loop.time() + PRUNE_EVERY_S
            await self.database.call(announcements.prune, retention_s=settings.ANNOUNCEMENT_RETENTION_S)


async def announcement_loop(runtime: BrokerRuntime) -> None:
    database = DatabaseThread("announcements")
    reader = AnnouncementReader(runtime, database)

    async def step() -> None:
        await reader.read()
        # Only now may the directory say "no such topic" (until then lookups ask the database).
        runtime.catch_up = reader.catch_up
        await reader.prune()

    try:
        await every(settings.ANNOUNCEMENT_POLL_INTERVAL_S, step, "announcements")
    finally:
        runtime.catch_up = None
        await database.close()
