"""Keeps this process's status viewers current: time moves topics from online to offline to unknown,
and pongs may arrive in any process, so the watched topics are re-read every ``STATUS_REFRESH_S``."""

from __future__ import annotations

from channels.db import database_sync_to_async
from django.conf import settings

from app.availability.services import statuses
from app.broker.runtime import BrokerRuntime
from relays.periodic import every


async def status_refresh_loop(runtime: BrokerRuntime) -> None:
    async def refresh() -> None:
        watched = runtime.board.watched()
        if watched:
            for status in await database_sync_to_async(statuses)(watched):
                runtime.board.update(status, runtime.loop.time())

    await every(settings.STATUS_REFRESH_S, refresh, "status refresh")
