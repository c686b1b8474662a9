"""The worker check, in every server process every WORKER_CHECK_INTERVAL_S: close this process's
worker sockets silent for WORKER_LOST_AFTER_S (their requests go back to pending at once), end the
sessions of workers whose server is gone (connected in the database, silent there too), and offer
waiting work to idle workers here. The database part is idempotent (``sessions.close_session``
lets one caller act), so every process runs it: no leader to lose."""

from __future__ import annotations

import logging

from channels.db import database_sync_to_async
from django.conf import settings
from django.utils import timezone

from app.broker.runtime import BrokerRuntime
from app.work import sessions
from relays.periodic import every

logger = logging.getLogger(__name__)


async def worker_check_loop(runtime: BrokerRuntime) -> None:
    fleet = runtime.fleet

    async def step() -> None:
        for link in fleet.silent(timezone.now(), settings.WORKER_LOST_AFTER_S):
            link.lost()
        ended = await database_sync_to_async(sessions.release_lost)()
        for worker_id, released in ended.items():
            logger.warning("worker %d lost (its server is gone?): %d requests returned", worker_id, len(released))
        if fleet.has_idle() and await database_sync_to_async(sessions.work_waiting)():
            fleet.offer_idle()

    await every(settings.WORKER_CHECK_INTERVAL_S, step, "worker check", first_wait=True)
