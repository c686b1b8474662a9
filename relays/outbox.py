"""The outbox relay loop: claim a batch, publish it, settle it; wait for a wake-up when idle.

Decisions live in app/outbox (what to claim, in which order to publish, what a failure means);
this module only loops. Several relays may run (tasks here, ``manage.py outbox_relay``
processes); on PostgreSQL they are woken by LISTEN/NOTIFY, everywhere by commits in their own
process and by polling every ``OUTBOX_POLL_INTERVAL_S``.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from typing import Any

from django.conf import settings
from django.utils import timezone

from app.outbox import claims, notifications, wakeup
from app.outbox.claims import Settlement
from app.outbox.dispatch import TargetPool, publish_batch
from relays.database_thread import DatabaseThread
from relays.leader import process_identity
from relays.periodic import backoff_s

logger = logging.getLogger(__name__)

SETTLE_ATTEMPTS = 5
CLOSE_TIMEOUT_S = 5.0


class OutboxRelay:
    def __init__(self, *, batch_size: int | None = None, pool: TargetPool | None = None, name: str = "") -> None:
        self.holder = f"{process_identity()}:{name or uuid.uuid4().hex[:8]}"
        self.batch_size = batch_size or settings.OUTBOX_BATCH_SIZE
        self.pool = pool or TargetPool()
        self.published = 0
        self._wakeup = asyncio.Event()
        self._pruned_at = 0.0
        self._db = DatabaseThread(f"outbox-relay-{name}")

    async def run(self) -> None:
        """Relay until cancelled; never returns."""
        wakeup.register(self._wakeup)
        listener: asyncio.Task[None] | None = None
        if notifications.listens():
            listener = asyncio.create_task(notifications.listen(self._wakeup.set), name=f"{self.holder} listen")
        failures = 0
        try:
            while True:
                try:
                    self._wakeup.clear()
                    worked = await self.step()
                    failures = 0
                    if not worked:
                        await self._idle()
                except asyncio.CancelledError:
                    raise
                except Exception:
                    failures += 1
                    logger.exception("outbox relay %s failed (%d in a row)", self.holder, failures)
                    await asyncio.sleep(backoff_s(settings.OUTBOX_POLL_INTERVAL_S, failures))
        finally:
            wakeup.unregister(self._wakeup)
            if listener is not None:
                listener.cancel()
                await asyncio.wait({listener})
            try:
                async with asyncio.timeout(CLOSE_TIMEOUT_S * 3):
                    await self.pool.close()
            except TimeoutError:
                logger.warning("outbox relay %s: closing its targets timed out", self.holder)
            await self._db.close()

    async def step(self) -> bool:
        """One claim-publish-settle round; whether there was anything to do."""
        await self._prune_when_due()
        claiming = asyncio.ensure_future(
            self._db.call(claims.claim, self.holder, self.batch_size, skip_targets=self.pool.down())
        )
        try:
            events = await asyncio.shield(claiming)
        except asyncio.CancelledError:
            # The claim commits on the relay's thread anyway: hand its events straight back
            # rather than leave them (and their keys) to wait for the claim to expire.
            claimed = await claiming
            settlement = Settlement()
            settlement.release_rest(claimed, "relay stopped before publishing it")
            await self._settle(settlement)
            raise
        if not events:
            return False
        settlement = Settlement()
        renewing = asyncio.create_task(self._renew_claims())
        try:
            await publish_batch(events, self.pool, settlement)
        finally:
            renewing.cancel()
            # asyncio.wait, not ``await renewing`` under suppress(CancelledError): that would also
            # swallow a stop request for this relay arriving meanwhile, and the relay would run on.
            try:
                await asyncio.wait({renewing})
            finally:
                # Also when cancelled mid-batch: what was published is recorded, the rest goes back.
                settlement.release_rest(events, "relay stopped before publishing it")
                await asyncio.shield(self._settle(settlement))
        self.published += len(settlement.published)
        return True

    async def _renew_claims(self) -> None:
        """While a batch is published, keep its claims from expiring (a slow broker must not make
        another relay publish the same events beside this one)."""
        while True:
            await asyncio.sleep(settings.OUTBOX_CLAIM_TTL_S / 3)
            try:
                await self._db.call(claims.renew, self.holder)
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("outbox relay %s could not renew its claims", self.holder)

    async def _settle(self, settlement: Settlement) -> None:
        """Record a batch's outcome, trying a few times: if it cannot be recorded, the batch is
        published again once its claims expire."""
        for attempt in range(1, SETTLE_ATTEMPTS + 1):
            try:
                await self._db.call(claims.settle, self.holder, settlement)
                return
            except Exception:
                logger.exception("outbox relay %s could not settle a batch (attempt %d)", self.holder, attempt)
                if attempt < SETTLE_ATTEMPTS:
                    await asyncio.sleep(backoff_s(0.5, attempt))
        raise RuntimeError(f"outbox relay {self.holder}: batch left to claim expiry")

    async def _idle(self) -> None:
        """Wait for a wake-up, the poll interval, the next retry or a target's back-off end."""
        due = await self._db.call(claims.next_due, skip_targets=self.pool.down())
        waits = [settings.OUTBOX_POLL_INTERVAL_S]
        if due is not None:
            waits.append((due - timezone.now()).total_seconds())
        back = self.pool.back_in_s()
        if back is not None:
            waits.append(back)
        timeout = max(0.0, min(waits))
        # asyncio.wait, which never cancels this task itself: wait_for and timeout do, and on
        # Python 3.11 a stop request arriving just as the wake-up does could get lost between
        # their cancellation and ours.
        waiting = asyncio.ensure_future(self._wakeup.wait())
        try:
            await asyncio.wait({waiting}, timeout=timeout)
        finally:
            waiting.cancel()

    async def _prune_when_due(self) -> None:
        if time.monotonic() - self._pruned_at < settings.OUTBOX_PRUNE_INTERVAL_S:
            return
        self._pruned_at = time.monotonic()
        removed = await self._db.call(claims.prune)
        if removed:
            logger.info("pruned %d published outbox events", removed)


async def outbox_relay_loop(**options: Any) -> None:
    await OutboxRelay(**options).run()
