"""The worker check, in every server process every WORKER_CHECK_INTERVAL_S: close this process's
worker sockets silent for WORKER_LOST_AFTER_S (their requests go back to pending at once), reconcile
the others with the database (``sessions.reconcile``), end the sessions of workers whose server is
gone or that stopped polling (connected in the database, silent there too), and offer waiting work
to idle workers here. The database part is idempotent (each session ends once), so every process
runs it: no leader to lose."""

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
        beliefs = fleet.beliefs()
        if beliefs:
            links, believed = zip(*beliefs, strict=True)
            fleet.settle(list(links), await database_sync_to_async(sessions.reconcile)(list(believed)))
        for worker_id, end in (await database_sync_to_async(sessions.release_lost)()).items():
            if end.released:
                logger.warning("worker %d (%s) lost: %d requests returned", worker_id, end.via, len(end.released))
            else:  # a polling worker that stopped calling, with nothing running: how polling ends
                logger.info("worker %d (%s) silent: disconnected", worker_id, end.via)
        if fleet.has_idle() and await database_sync_to_async(sessions.work_waiting)():
            fleet.offer_idle(every=True)

    await every(settings.WORKER_CHECK_INTERVAL_S, step, "worker check", first_wait=True)
