"""The redelivery side of a subscription's dispatcher (app/pulsar/dispatcher.py; rules in
app/pulsar/redelivery.py): its timer task, which takes back messages whose ack timeout or nack
delay came due (and wakes the due reads of held delayed messages), and the redelivery itself:
counted once more, then queued again at the head, or moved to the dead letter topic. While it is
counted (a database call) a message is in none of the dispatcher's places: it is listed here, so an
ack arriving meanwhile is still taken (``take``), and the message is then not queued again."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING

from channels.db import database_sync_to_async

from app.pulsar import services
from app.pulsar.members import Member, Pending
from app.pulsar.redelivery import Reason, dead_letters

if TYPE_CHECKING:
    from app.pulsar.dispatcher import SubscriptionDispatcher

logger = logging.getLogger(__name__)

# After a failed database call the timer task waits this long before trying again.
RETRY_S = 1.0


class Redeliveries:
    def __init__(self, dispatcher: SubscriptionDispatcher) -> None:
        self.dispatcher = dispatcher
        self._counting: dict[str, Pending] = {}  # message id -> the message, while it is counted

    def take(self, message_id: str) -> Pending | None:
        """The message being counted for its redelivery, which is then not queued again (acked)."""
        return self._counting.pop(message_id, None)

    async def run(self) -> None:
        """Ack timeouts and nacks that come due are redelivered (or dead-lettered); held delayed
        messages that come due are read again. Owned by the dispatcher: cancelled and awaited when
        it stops."""
        d = self.dispatcher
        loop = d.runtime.loop
        while True:
            if d.held.come_due():
                d.pump()
            next_due = min((t for t in (d.timers.next_due(), d.held.due_at) if t is not None), default=None)
            d.wake.clear()
            if next_due is None or next_due > loop.time():
                timeout = None if next_due is None else next_due - loop.time()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(d.wake.wait(), timeout)
                continue
            if d.lease_lapsed:
                # Paused past the lease: another process redelivers these now.
                d.lose_lease("its lease ran out before it was renewed")
                return
            taken: list[tuple[Pending, Member]] = []
            for message_id, reason in d.timers.due(loop.time()):
                if (slot := d.holders.get(message_id)) is None:
                    continue
                if reason is Reason.NACK:
                    if (item := slot.take_nacked(message_id)) is not None:
                        del d.holders[message_id]
                        taken.append((item, slot.member))
                elif (item := slot.take_unacked(message_id)) is not None:
                    d.settle(item)
                    taken.append((item, slot.member))
            try:
                await self.redeliver(taken)
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("redelivery on subscription %s of %s failed", d.subscription, d.slug)
                await asyncio.sleep(RETRY_S)

    async def redeliver(self, taken: list[tuple[Pending, Member]]) -> None:
        """Count each message once more, then queue it at the head, or move it to the dead letter
        topic when the count exceeds its consumer's maxRedeliverCount."""
        if not taken:
            return
        self._counting.update((item.message_id, item) for item, _ in taken)
        try:
            await self._count_and_requeue(taken)
        finally:
            for item, _ in taken:  # nothing stays listed after a failure
                self._counting.pop(item.message_id, None)

    async def _count_and_requeue(self, taken: list[tuple[Pending, Member]]) -> None:
        d = self.dispatcher
        epoch = d.epoch  # taken in this one: once it is over they are dropped (read again if stored)
        counts: dict[str, int] = {}
        if d.stores and not d.deleted:
            try:
                counts = await database_sync_to_async(services.count_redeliveries)(
                    d.subscription_id, [item.message_id for item, _ in taken]
                )
            except asyncio.CancelledError:
                raise
            except Exception:
                # Delivered again all the same; the stored count lags by one.
                logger.exception("counting redeliveries on subscription %s of %s failed", d.subscription, d.slug)
        back: list[Pending] = []
        dead: list[tuple[Pending, Member]] = []
        for item, member in taken:
            if self._counting.pop(item.message_id, None) is None:
                continue  # acked meanwhile
            item.count = counts.get(item.message_id, item.count + 1)
            if dead_letters(item.count, member.params.maxRedeliverCount) and not d.deleted:
                dead.append((item, member))
            else:
                back.append(item)
        d.requeue(back, epoch)
        for item, member in dead:
            try:
                await d.dead_letters.move(item, member, epoch)
            except asyncio.CancelledError:
                raise
            except Exception:
                # Not moved, not lost: delivered again, and the next messages are still moved.
                logger.exception("moving %s of subscription %s on %s to its dead letter topic failed",
                                 item.message_id, d.subscription, d.slug)
                d.requeue([item], epoch)
