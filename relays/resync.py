"""Catch up consumers whose topic's database sequence ran ahead of what reached them.

The fast path (hub, backplane) may lose messages: a full channel, a Redis restart. Every
``RESYNC_INTERVAL_S`` this process reads the last sequence of each topic it has consumers for, and
each connection that stayed behind for a whole interval replays the missing messages from the
database.
"""

from __future__ import annotations

from channels.db import database_sync_to_async
from django.conf import settings

from app.broker.runtime import BrokerRuntime
from app.broker.services import keep_response_topics, last_sequences
from relays.periodic import every


async def resync_loop(runtime: BrokerRuntime) -> None:
    async def resync() -> None:
        slugs = runtime.hub.topics()
        if not slugs:
            return
        for slug, last in (await database_sync_to_async(last_sequences)(slugs)).items():
            for subscriber in runtime.hub.subscribers(slug):
                subscriber.resync(last)
        # A requester may have moved here from another process, whose disconnect then scheduled
        # its response topic for collection.
        await database_sync_to_async(keep_response_topics)(slugs)

    await every(settings.RESYNC_INTERVAL_S, resync, "resync", first_wait=True)
