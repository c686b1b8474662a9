"""Deletes response topics whose ``garbage_collect_on`` has passed, and Pulsar subscriptions idle
for SUBSCRIPTION_TTL_S, removes what deleted subscriptions held, and deletes leases that expired
long ago (one process at a time)."""

from __future__ import annotations

import logging

from channels.db import database_sync_to_async
from django.conf import settings

from app.broker.services import collect_response_topics
from app.leases.services import collect_expired
from app.pulsar.services import expire_subscriptions, release_pending
from relays.leader import run_as_leader

logger = logging.getLogger(__name__)


async def garbage_collection_loop() -> None:
    async def job() -> None:
        removed = await database_sync_to_async(collect_response_topics)()
        if removed:
            logger.info("removed %d response topics", removed)
        expired = await database_sync_to_async(expire_subscriptions)()
        if expired:
            logger.info("deleted %d idle subscriptions", expired)
        released = await database_sync_to_async(release_pending)()
        if released:
            logger.info("removed %d messages no subscription holds any more", released)
        leases = await database_sync_to_async(collect_expired)()
        if leases:
            logger.info("deleted %d leases expired long ago", leases)

    await run_as_leader("garbage-collection", settings.GC_INTERVAL_S, job)
