"""The outbox relay loop: claim batches, publish them, settle them; wait for a wake-up when idle.

Decisions live in app/outbox (what to claim, in which order to publish, what a failure means);
this module only loops. Several relays may run (tasks here, ``manage.py outbox_relay``
processes); on PostgreSQL they are woken by LISTEN/NOTIFY, everywhere by commits in their own
process and by polling every ``OUTBOX_POLL_INTERVAL_S``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.conf import settings
from django.utils import timezone

from app.outbox import claims, notifications, wakeup
from app.outbox.claims import Settlement
from app.outbox.cloudevents import Outbound
from app.outbox.dispatch import KeyChains, Publishing, TargetPool
from relays.database_thread import DatabaseThread
from relays.leader import process_identity
from relays.periodic import backoff_s

logger = logging.getLogger(__name__)

SETTLE_ATTEMPTS = 5
CLOSE_TIMEOUT_S = 5.0
# Batches claimed and not yet published: one published while the next ones are claimed (and the
# one before settled). Three rather than two absorb the jitter of either side on a busy machine.
BATCHES_IN_FLIGHT = 3
STOPPED = "relay stopped before publishing it"


@dataclass
class _Batch:
    events: list[Outbound]
    settlement: Settlement
    publishing: Publishing


class OutboxRelay:
    def __init__(self, *, batch_size: int | None = None, pool: TargetPool | None = None, name: str = "") -> None:
        self._name = f"{process_identity()}:{name or uuid.uuid4().hex[:8]}"
        self.holder = self._name
        self.batch_size = batch_size or settings.OUTBOX_BATCH_SIZE
        self.pool = pool or TargetPool()
        self.published = 0
        self._wakeup = asyncio.Event()
        self._pruned_at = 0.0
        self._db = DatabaseThread(f"outbox-relay-{name}")
        self._inflight: list[_Batch] = []
        self._chains = KeyChains()
        self._due: datetime | None = None

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
                    await self.step()
                    failures = 0
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
        """Claim, publish and settle until a claim comes back empty and nothing is in flight;
        whether there was anything to publish.

        Batches overlap: the next one is claimed while one is published, and a published one is
        settled with the claim of the one after it, in one transaction. A key's events in a later
        batch wait for that key's events in the earlier one (``KeyChains``)."""
        await self._prune_when_due()
        worked = False
        claiming = True
        renewing = asyncio.create_task(self._renew_claims())
        try:
            while True:
                done = self._done_in_order()
                if self._wakeup.is_set():
                    self._wakeup.clear()  # before the claim: a commit after it wakes the relay again
                    claiming = True
                claiming = claiming or bool(done)
                room = self.batch_size if claiming and len(self._inflight) - len(done) < BATCHES_IN_FLIGHT else 0
                if not done and not room:
                    if not self._inflight:
                        return worked
                    await self._wait_for_progress()
                    continue
                events = await self._settle_and_claim(done, room, first=not worked and not self._inflight)
                if events:
                    worked = True
                    settlement = Settlement()
                    self._inflight.append(_Batch(events, settlement, self._chains.start(events, self.pool, settlement)))
                if len(events) < room:
                    # Claimed dry: claim again once a batch is done or a commit wakes the relay.
                    claiming = False
        except asyncio.CancelledError:
            # A failure to record the batches (logged, their claims expire) must not replace the
            # stop request: raised instead, run() would log it and relay on.
            with contextlib.suppress(Exception):
                await self._abandon()
            raise
        except BaseException:
            await self._abandon()
            raise
        finally:
            renewing.cancel()
            # asyncio.wait, not ``await renewing`` under suppress(CancelledError): that would also
            # swallow a stop request for this relay arriving meanwhile, and the relay would run on.
            await asyncio.wait({renewing})

    def _done_in_order(self) -> list[_Batch]:
        """The batches done before every batch still publishing. A later batch is recorded only
        after the earlier ones: until then a key's stopped event stays 'processing' under this
        relay's name, which lets a claim take that key's later events (``behind_own``) with no
        chain left to hold them back."""
        done: list[_Batch] = []
        for batch in self._inflight:
            if not batch.publishing.done.done():
                break
            done.append(batch)
        return done

    async def _wait_for_progress(self) -> None:
        """Until the earliest batch in flight is done or a commit wakes the relay."""
        waking = asyncio.ensure_future(self._wakeup.wait())
        progress: set[asyncio.Future[Any]] = {waking, self._inflight[0].publishing.done}
        try:
            await asyncio.wait(progress, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waking.cancel()

    async def _settle_and_claim(self, done: list[_Batch], limit: int, first: bool = False) -> list[Outbound]:
        """Record the outcome of the ``done`` batches and claim up to ``limit`` events (key heads
        only if ``first`` after a wake-up)."""
        settlement = Settlement()
        for batch in done:
            # Only a key's task that raised (a bug, logged) leaves events without an outcome.
            batch.settlement.release_rest(batch.events, "publishing its key failed")
            settlement.extend(batch.settlement)
        calling = asyncio.ensure_future(self._db.call(
            # Woken from idle, this claim is on the way from a commit to its publish: heads only, a
            # round trip less; the claims made while they are published take the events behind them.
            claims.settle_and_claim, self.holder, settlement, limit, skip_targets=self.pool.down(),
            due_if_none=len(done) == len(self._inflight), successors=not first,
        ))
        try:
            events, self._due = await asyncio.shield(calling)
        except asyncio.CancelledError:
            # The call commits on the relay's thread anyway: hand its events straight back rather
            # than leave them (and their keys) to wait for the claim to expire. As in step(), a
            # failure here (logged; the claims expire, step() retries the batches) must not replace
            # the stop request.
            with contextlib.suppress(Exception):
                claimed: list[Outbound] = []
                try:
                    claimed, _ = await calling
                except Exception:
                    await self._settle(settlement)
                self._recorded(done)
                released = Settlement()
                released.release_rest(claimed, STOPPED)
                await self._settle(released)
            raise
        except Exception:
            logger.exception("outbox relay %s could not settle and claim", self.holder)
            self._due = None
            try:
                await self._settle(settlement)
                self._recorded(done)
            finally:
                # The claim may have committed with only its answer lost: this relay no longer knows
                # all its name holds. It gives back what is in flight and takes a new name, so that
                # it never claims behind those events; their claims expire and are taken again, in order.
                await self._abandon()
                self._rename()
            return []
        self._recorded(done)
        return events

    def _rename(self) -> None:
        self._inflight = []
        self._chains = KeyChains()
        self.holder = f"{self._name}.{uuid.uuid4().hex[:8]}"

    def _recorded(self, done: list[_Batch]) -> None:
        for batch in done:
            self._retrieve(batch)
            self._inflight.remove(batch)
            self._chains.forget(batch.publishing)
            self.published += len(batch.settlement.published)

    def _retrieve(self, batch: _Batch) -> None:
        """Read a finished batch's outcome: asyncio logs one never read as an error (a stopped
        batch's is a CancelledError), and a key's task that raised is a bug to log."""
        outcome = batch.publishing.done
        if outcome.cancelled() or outcome.exception() is not None:
            return
        for result in outcome.result():
            if isinstance(result, Exception):
                logger.error("outbox relay %s: publishing a key failed", self.holder, exc_info=result)

    async def _abandon(self) -> None:
        """Stopped or failed with batches in flight: stop them, record what was done and release
        the rest. Should that fail, take a new name: this relay no longer knows what its old name
        holds, so it must not claim behind those events (their claims expire and are taken over)."""
        inflight = list(self._inflight)
        self._chains = KeyChains()
        if not inflight:
            return
        for batch in inflight:
            batch.publishing.done.cancel()
        await asyncio.wait({batch.publishing.done for batch in inflight})
        for batch in inflight:
            self._retrieve(batch)
            batch.settlement.release_rest(batch.events, STOPPED)
        try:
            await asyncio.shield(self._settle_and_forget(inflight))
        except BaseException:
            self._rename()
            raise

    async def _settle_and_forget(self, batches: list[_Batch]) -> None:
        settlement = Settlement()
        for batch in batches:
            settlement.extend(batch.settlement)
        await self._settle(settlement)
        self._recorded(batches)

    async def _renew_claims(self) -> None:
        """While batches are published, keep their claims from expiring (a slow broker must not
        make another relay publish the same events beside this one)."""
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
        waits = [settings.OUTBOX_POLL_INTERVAL_S]
        if self._due is not None:
            waits.append((self._due - timezone.now()).total_seconds())
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
