"""The ``/ws/work-requests/`` feed's loop: while this process has watchers, read the work request
changes from the outbox (app/work/changes.py) and hand them to them (app/work/feed.py).

A read follows every outbox commit of this process (the outbox's own wake-up), on PostgreSQL every
commit anywhere (its LISTEN/NOTIFY, a connection held only while someone watches), a watcher
catching up, and at the latest every ``WORK_FEED_POLL_INTERVAL_S``. Under a stream of commits it
reads at most every ``MIN_READ_GAP_S``. With nobody watching it does nothing and keeps no cursor:
the next watcher starts it afresh from the outbox's end.
"""

from __future__ import annotations

import asyncio
import logging

from django.conf import settings

from app.broker.announcements import FeedCursor
from app.broker.runtime import BrokerRuntime
from app.outbox import notifications, wakeup
from app.work import changes
from app.work.feed import WorkFeed
from relays.announcements import HOLE_TTL_S
from relays.database_thread import DatabaseThread
from relays.periodic import backoff_s

logger = logging.getLogger(__name__)

# Outbox rows per read (every source's: ids and work request data); a full read is followed by
# another at once.
READ_ROWS = 1000
MIN_READ_GAP_S = 0.05


async def work_feed_loop(runtime: BrokerRuntime) -> None:
    feed = runtime.work_feed
    database = DatabaseThread("work-feed")
    try:
        while True:
            await feed.watched.wait()
            await _serve(feed, database)
    finally:
        await database.close()


async def _serve(feed: WorkFeed, database: DatabaseThread) -> None:
    """Read while anyone watches."""
    loop = asyncio.get_running_loop()
    wakeup.register(feed.wakeup)
    listener = None
    if notifications.listens():
        listener = asyncio.create_task(notifications.listen(feed.wakeup.set), name="work-feed-listen")
    cursor: FeedCursor | None = None
    failures = 0
    try:
        while feed.watchers:
            feed.wakeup.clear()
            started = loop.time()
            number = feed.read_starting()
            try:
                cursor = await _read(feed, database, cursor)
                failures = 0
            except asyncio.CancelledError:
                raise
            except Exception:
                failures += 1
                logger.exception("reading work request changes failed (%d in a row)", failures)
                await asyncio.sleep(backoff_s(settings.WORK_FEED_POLL_INTERVAL_S, failures))
                continue
            feed.read_done(number)
            await _idle(feed, started)
    finally:
        wakeup.unregister(feed.wakeup)
        if listener is not None:
            listener.cancel()
            await asyncio.wait({listener})


async def _read(feed: WorkFeed, database: DatabaseThread, cursor: FeedCursor | None) -> FeedCursor:
    """Hand out the changes committed since the last read; a new cursor starts at the outbox's end."""
    loop = asyncio.get_running_loop()
    if cursor is None:
        return FeedCursor.at_end(await database.call(changes.newest_ids), loop.time(), HOLE_TTL_S)
    while True:
        rows = await database.call(changes.read_changes, cursor.after, list(cursor.holes), READ_ROWS)
        for row in cursor.take(rows, loop.time()):
            if row.event is not None:
                feed.publish(row.event)
        if len(rows) < READ_ROWS:
            return cursor


async def _idle(feed: WorkFeed, started: float) -> None:
    """Wait for a wake-up or the poll interval, and at least until MIN_READ_GAP_S after ``started``."""
    # asyncio.wait, which never cancels this task itself (relays/outbox.py says why).
    waiting = asyncio.ensure_future(feed.wakeup.wait())
    try:
        await asyncio.wait({waiting}, timeout=settings.WORK_FEED_POLL_INTERVAL_S)
    finally:
        waiting.cancel()
    await asyncio.sleep(max(0.0, started + MIN_READ_GAP_S - asyncio.get_running_loop().time()))
