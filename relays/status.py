"""Keeps this process's status viewers current: time moves topics from online to offline to unknown,
and pongs may arrive in any process, so the watched topics are re-read every ``STATUS_REFRESH_S``."""

from __future__ import annotations

import asyncio
import logging

from channels.db import database_sync_to_async
from django.conf import settings

from app.availability.services import statuses
from app.broker.runtime import BrokerRuntime

logger = logging.getLogger(__name__)


async def status_refresh_loop(runtime: BrokerRuntime) -> None:
    failures = 0
    while True:
        try:
            watched = runtime.board.watched()
            if watched:
                for status in await database_sync_to_async(statuses)(watched):
                    runtime.board.update(status)
            failures = 0
            await asyncio.sleep(settings.STATUS_REFRESH_S)
        except asyncio.CancelledError:
            raise
        except Exception:
            failures += 1
            logger.exception("status refresh failed (%d in a row)", failures)
            await asyncio.sleep(min(30.0, settings.STATUS_REFRESH_S * 2**failures))
