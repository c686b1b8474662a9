"""Run a periodic job in exactly one process at a time, holding a lease in the database.

The lease lives for 0.6 of the interval and is renewed every 0.2 of it, so when its holder dies
another process takes over less than one interval later. A clean shutdown releases it at once.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Awaitable, Callable

from channels.db import database_sync_to_async

from app.leases.services import acquire, release
from relays.periodic import every

logger = logging.getLogger(__name__)


def process_identity() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


async def run_as_leader(
    name: str, interval_s: float, job: Callable[[], Awaitable[None]], holder: str | None = None
) -> None:
    """Call ``job`` every ``interval_s`` while this process holds lease ``name``; never returns."""
    holder = holder or process_identity()
    loop = asyncio.get_running_loop()
    due = 0.0

    async def tick() -> None:
        nonlocal due
        leading = await database_sync_to_async(acquire)(name, holder, interval_s * 0.6)
        if leading and loop.time() >= due:
            due = loop.time() + interval_s
            await job()

    try:
        await every(interval_s / 5, tick, f"{name} loop")
    finally:
        try:
            await asyncio.shield(database_sync_to_async(release)(name, holder))
        except Exception:
            logger.exception("could not release lease %s", name)
