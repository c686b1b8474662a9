"""The ping relay: every ``PING_INTERVAL_S`` the leader pings each DASF source topic's consumers."""

from __future__ import annotations

import logging

from channels.db import database_sync_to_async
from django.conf import settings

from app.availability.services import start_ping_round
from app.broker.runtime import BrokerRuntime
from consumers.probes import probe
from relays.leader import run_as_leader

logger = logging.getLogger(__name__)


async def ping_round(runtime: BrokerRuntime) -> int:
    """Mark all DASF topics pinged and send each its ping; the number of consumers reached."""
    reached = 0
    for slug in await database_sync_to_async(start_ping_round)():
        reached += runtime.deliver(slug, probe("ping"))
    logger.debug("pinged topics, %d consumers reached", reached)
    return reached


async def ping_loop(runtime: BrokerRuntime) -> None:
    async def job() -> None:
        await ping_round(runtime)

    await run_as_leader("ping", settings.PING_INTERVAL_S, job)
