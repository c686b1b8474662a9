"""The ping relays: every ``PING_INTERVAL_S`` the leader pings each DASF source topic's consumers,
and every process pings a topic soon after a consumer attached to it (app/availability/attach_pings.py)."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from channels.db import database_sync_to_async
from django.conf import settings

from app.availability.services import start_attach_pings, start_ping_round
from app.broker.runtime import BrokerRuntime
from consumers.probes import probe
from relays.leader import run_as_leader
from relays.periodic import backoff_s

logger = logging.getLogger(__name__)

# Backoff base after a failure (the database is away): pings lost meanwhile are the rounds' job.
ATTACH_PING_RETRY_S = 1.0


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


async def send_attach_pings(runtime: BrokerRuntime) -> int:
    """Send the attach pings that are due (marked in the database first, so the pongs answer them);
    the number of consumers reached here."""
    assert runtime.attach_pings is not None
    due = runtime.attach_pings.due(runtime.loop.time())
    if not due:
        return 0
    reached = 0
    for slug in await database_sync_to_async(start_attach_pings)([ping.topic_id for ping in due]):
        reached += runtime.deliver(slug, probe("ping"))
    logger.debug("attach pings to %d topics, %d consumers reached", len(due), reached)
    return reached


async def attach_ping_loop(runtime: BrokerRuntime) -> None:
    """Send attach pings as they fall due (runtime.request_attach_ping); never returns."""
    pings, requested = runtime.attach_pings, runtime.attach_ping_requested
    if pings is None:
        return
    failures = 0
    while True:
        try:
            requested.clear()
            await send_attach_pings(runtime)
            failures = 0
            wait_s = pings.wait_s(runtime.loop.time())
            if wait_s != 0:
                # A request made meanwhile set the event again: no wake-up is lost.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(wait_s):
                        await requested.wait()
        except asyncio.CancelledError:
            raise
        except Exception:
            failures += 1
            logger.exception("attach pings failed (%d in a row)", failures)
            await asyncio.sleep(backoff_s(ATTACH_PING_RETRY_S, failures))
