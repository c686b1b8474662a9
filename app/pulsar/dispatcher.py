"""One subscription's dispatcher in this process (docs/architecture.md 18.3, 18.4).

It is the hub's subscriber for the subscription: it gets every live message of the topic once and
reads the backlog from the database by cursor (``read_through``: every stored message up to it is
queued here, in flight, or acked). It sends only to consumers with credit (app/pulsar/flow.py),
chosen by the subscription type's rule (app/pulsar/dispatch.py), keeps each consumer's unacked
messages, and owns the timers of ack timeouts and nacks (app/pulsar/redelivery.py). A consumer
leaving puts its unacked messages back at the head of the queue, counted once more.
``Shared`` and ``Key_Shared`` hold delayed messages back until due (app/pulsar/held.py).

Under ``disabled`` nothing is stored: live messages wait here, at most the largest
``receiverQueueSize`` of the consumers, the oldest dropped with a WARNING.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import uuid
from collections import deque
from typing import TYPE_CHECKING, Any

from channels.db import database_sync_to_async
from django.conf import settings

from app.broker.delivery import needs_resync
from app.broker.hub import Delivered
from app.broker.services import SubscriptionAck
from app.broker.topics import TopicView
from app.pulsar import services
from app.pulsar.dead_letters import DeadLetters
from app.pulsar.dispatch import Dispatch
from app.pulsar.flow import Flow
from app.pulsar.held import HeldMessages
from app.pulsar.members import Member, Pending, Slot, by_sequence
from app.pulsar.redelivery import Reason, Timers, ack_deadline, dead_letters, nack_due
from app.pulsar.tasks import TaskOwner

if TYPE_CHECKING:
    from app.broker.runtime import BrokerRuntime

logger = logging.getLogger(__name__)

# Backlog read per query at most.
BACKLOG_PAGE = 500
# After a failed database call the dispatcher waits this long before trying again.
RETRY_S = 1.0


class SubscriptionDispatcher(TaskOwner):
    shared = False  # the hub gives it every message of the topic

    def __init__(self, runtime: BrokerRuntime, topic: TopicView, name: str, subscription_type: str) -> None:
        super().__init__()
        self.runtime = runtime
        self.topic = topic
        self.slug = topic.slug
        self.subscription = name
        self.principal = f"subscription:{name}"  # hub bookkeeping only; members carry the rights
        self.type = subscription_type
        self.stores = topic.policy.stores
        self.subscription_id = 0
        self.dispatch = Dispatch(subscription_type, settings.KEY_SHARED_MAX_KEYS)
        self._ids = itertools.count(1)
        self.slots: list[Slot] = []
        self.queue: deque[Pending] = deque()
        self.read_through = 0
        self._more_in_db = False
        self._behind: int | None = None
        self._fetching = False
        self.timers = Timers()
        self._holders: dict[str, Slot] = {}  # message id -> the slot it is in flight with
        self._nacked: dict[str, tuple[Pending, Member]] = {}
        self._wake = asyncio.Event()
        self.held = HeldMessages(subscription_type, runtime.loop, self._wake)
        self._timer_task: asyncio.Task[None] | None = None
        self.serving = False  # holds the subscription's lease: dispatches
        self.deleted = False  # unsubscribed: nothing more is written for it
        # Set by the registry (app/pulsar/subscriptions.py).
        self.started: asyncio.Task[Any] | None = None
        self.closing = False
        self.closed = asyncio.Event()
        self.dead_letters = DeadLetters(runtime, self)

    # --- members ---------------------------------------------------------------------------

    def add(self, member: Member) -> Slot:
        params = member.params
        flow = Flow(pull=params.pullMode, queue_size=params.receiverQueueSize, limit=self.runtime.unacked_limit)
        slot = Slot(next(self._ids), member, flow)
        self.slots.append(slot)
        return slot

    def slot_of(self, member: Member) -> Slot | None:
        return next((slot for slot in self.slots if slot.member is member), None)

    def ready(self, member: Member) -> None:
        """``member``'s socket is accepted: it may be sent messages."""
        slot = self.slot_of(member)
        if slot is not None:
            slot.ready = True
            self.pump()

    async def remove(self, member: Member) -> None:
        """``member`` left: its unacked messages come back, counted once more."""
        slot = self.slot_of(member)
        if slot is None:
            return
        self.slots.remove(slot)
        self.dispatch.left(slot.id)
        items = list(slot.unacked.values())
        slot.unacked.clear()
        for item in items:
            self._settle(item)
        if items and (self.slots or self.stores):
            await self._redeliver([(item, member) for item in items])

    @property
    def window(self) -> int:
        """Messages waiting here at most: the largest receiverQueueSize of the consumers."""
        return max((slot.member.params.receiverQueueSize for slot in self.slots), default=1)

    # --- the hub's subscriber ----------------------------------------------------------------

    def offer(self, item: Delivered) -> None:
        if self.deleted:
            return
        if item.sequence is None:
            self._offer_live(item)
            return
        if item.sequence <= self.read_through:
            return  # queued already (read from the database, or a duplicate)
        if self._fetching or self._more_in_db or item.sequence != self.read_through + 1 or (
            len(self.queue) >= self.window
        ):
            self._more_in_db = True  # the database has it: read it in order
        else:
            self.read_through = item.sequence
            if not self.held.takes(item):
                self.queue.append(Pending(item.message_id, item.sequence, item.text, live=item))
        self.pump()

    def _offer_live(self, item: Delivered) -> None:
        if len(self.queue) >= self.window:
            dropped = self.queue.popleft()
            logger.warning("subscription %s on %s: %d messages waiting, dropped the oldest (%s)",
                           self.subscription, self.slug, len(self.queue) + 1, dropped.message_id)
        self.queue.append(Pending(item.message_id, None, item.text, live=item))
        self.pump()

    def grant_consume(self) -> None:
        """Dispatchers never wait for a topic."""

    def recheck_rights(self) -> None:
        """Its consumers watch the topic themselves (standbys too, which the hub does not reach
        through the dispatcher)."""

    def resync(self, database_last: int) -> None:
        """Called every resync interval with the topic's last sequence in the database."""
        if not self.stores or self.deleted:
            return
        if database_last <= self.read_through:
            self._behind = None
        elif needs_resync(self.read_through, database_last, self._behind):
            self._behind = None
            self._more_in_db = True
            self.pump()
        else:
            self._behind = database_last

    # --- sending ------------------------------------------------------------------------------

    def pump(self) -> None:
        """Send what waits to consumers with credit; read more from the database when there is room."""
        if not self.serving:
            return
        if self.queue:
            self._send_queued()
        if self.stores and (self._more_in_db or self.held.releasing) and not self._fetching and not self.deleted:
            credit = sum(slot.candidate().credit for slot in self.slots)
            if len(self.queue) < min(credit, self.window):
                self._fetching = True
                self.spawn(self._fetch())

    def _send_queued(self) -> None:
        candidates = [slot.candidate() for slot in self.slots]
        slots = {slot.id: slot for slot in self.slots}
        if not any(c.credit for c in candidates):
            return
        if not self.dispatch.by_key:
            while self.queue:
                target = self.dispatch.pick("", candidates)
                if target is None:
                    return
                self._send(slots[target], self.queue.popleft())
                candidates = [slot.candidate() for slot in self.slots]
            return
        # Key_Shared: a message whose consumer has no credit waits, and so do the later messages
        # of its key (their order is kept); other keys go on.
        kept: deque[Pending] = deque()
        blocked: set[str] = set()
        while self.queue and any(c.credit for c in candidates):
            item = self.queue.popleft()
            target = None if item.key in blocked else self.dispatch.pick(item.key, candidates)
            if target is None:
                blocked.add(item.key)
                kept.append(item)
                continue
            self._send(slots[target], item)
            candidates = [slot.candidate() for slot in self.slots]
        kept.extend(self.queue)
        self.queue = kept

    def _send(self, slot: Slot, item: Pending) -> None:
        slot.unacked[item.message_id] = item
        slot.flow.sent()
        self._holders[item.message_id] = slot
        self.dispatch.sent(item.key if self.dispatch.by_key else "")
        deadline = ack_deadline(self.runtime.loop.time(), slot.member.params.ackTimeoutMillis)
        if deadline is not None:
            self.timers.schedule(item.message_id, deadline, Reason.ACK_TIMEOUT)
            self._wake.set()
        slot.member.send(item.frame())

    async def _fetch(self) -> None:
        """Read held messages that came due (ahead of what is queued), then the backlog after
        ``read_through``, until the database has no more or the queue is full."""
        try:
            while (self._more_in_db or self.held.releasing) and not self.deleted and len(self.queue) < self.window:
                limit = min(BACKLOG_PAGE, self.window - len(self.queue))
                if self.held.releasing:
                    self.queue.extendleft(reversed(await self.held.read_due(self.subscription_id,
                                                                            self.read_through, limit)))
                    self._send_queued()
                    continue
                self._more_in_db = False
                page = await database_sync_to_async(services.backlog)(
                    self.subscription_id, after=self.read_through, limit=limit, released=self.held.mark_for_read()
                )
                for replay in page.replays:
                    if replay.sequence > self.read_through:
                        self.read_through = replay.sequence
                        self.queue.append(Pending(replay.message_id, replay.sequence, replay.frame,
                                                  count=replay.redelivery_count))
                if len(page.replays) >= limit:
                    self._more_in_db = True
                else:
                    self.read_through = max(self.read_through, page.last_sequence)
                if page.held_next is not None:
                    self.held.hold(page.held_next)
                self._send_queued()
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("reading the backlog of subscription %s on %s failed", self.subscription, self.slug)
            self._more_in_db = True
            await asyncio.sleep(RETRY_S)
        finally:
            self._fetching = False
        self.pump()

    # --- what consumers say -----------------------------------------------------------------

    def ack(self, member: Member, message_id: str) -> bool:
        """False when ``member`` has no such message in flight. A message taken back a moment ago
        (ack timeout, nack) and waiting to be redelivered may still be acked: the ack crossed it."""
        item = self._take(member, message_id) or self._take_back(message_id)
        if item is None:
            return False
        if self.stores and not self.deleted:
            self.runtime.writer.submit(SubscriptionAck(
                self.topic.id, self.topic.policy, self.subscription_id, uuid.UUID(message_id), member.principal
            ))
        self.pump()
        return True

    def nack(self, member: Member, message_id: str) -> bool:
        """Redelivered ``negativeAckRedeliveryDelay`` later; False when not in flight with ``member``."""
        item = self._take(member, message_id)
        if item is None:
            return False
        self._nacked[message_id] = (item, member)
        due = nack_due(self.runtime.loop.time(), member.params.negativeAckRedeliveryDelay)
        self.timers.schedule(message_id, due, Reason.NACK)
        self._wake.set()
        self.pump()
        return True

    def permit(self, member: Member, count: int) -> None:
        slot = self.slot_of(member)
        if slot is not None:
            slot.flow.permit(count)
            self.pump()

    def _take(self, member: Member, message_id: str) -> Pending | None:
        slot = self.slot_of(member)
        item = slot.unacked.pop(message_id, None) if slot is not None else None
        if item is not None:
            self._settle(item)
        return item

    def _take_back(self, message_id: str) -> Pending | None:
        """A message waiting for redelivery, no longer waiting."""
        nacked = self._nacked.pop(message_id, None)
        if nacked is not None:
            self.timers.cancel(message_id)
            return nacked[0]
        for item in self.queue:
            if item.message_id == message_id and item.count > 0:
                self.queue.remove(item)
                return item
        return None

    def _settle(self, item: Pending) -> None:
        """``item`` is no longer in flight."""
        self.timers.cancel(item.message_id)
        self._holders.pop(item.message_id, None)
        self.dispatch.settled(item.key if self.dispatch.by_key else "")

    # --- serving or not --------------------------------------------------------------------------

    def start_serving(self, acked_through: int) -> None:
        """This process holds the lease: dispatch from the cursor on (what is stored comes from the
        database, read after ``acked_through``)."""
        self.read_through = acked_through
        self._more_in_db = self.stores
        self.held.reset()
        if self.stores:
            self.queue.clear()  # read again, in order, from the database
        self.serving = True
        self._timer_task = self.spawn(self.run_timers())
        self.pump()

    def stand_by(self) -> None:
        """Another process serves the subscription: forget what was queued and in flight here
        (that process redelivers it from the database)."""
        self.serving = False
        if self._timer_task is not None:
            self._timer_task.cancel()
            self._timer_task = None
        for slot in self.slots:
            for item in slot.unacked.values():
                self._settle(item)
            slot.unacked.clear()
        self.queue.clear()
        self._nacked.clear()
        self.timers = Timers()
        self.held.reset()

    # --- redelivery ----------------------------------------------------------------------------

    async def run_timers(self) -> None:
        """Ack timeouts and nacks that come due are redelivered (or dead-lettered); held delayed
        messages that come due are read again. Owned by the dispatcher: cancelled and awaited when
        it stops."""
        loop = self.runtime.loop
        while True:
            if self.held.come_due():
                self.pump()
            next_due = min((t for t in (self.timers.next_due(), self.held.due_at) if t is not None), default=None)
            self._wake.clear()
            if next_due is None or next_due > loop.time():
                timeout = None if next_due is None else next_due - loop.time()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout)
                continue
            taken: list[tuple[Pending, Member]] = []
            for message_id, reason in self.timers.due(loop.time()):
                if reason is Reason.NACK:
                    if (nacked := self._nacked.pop(message_id, None)) is not None:
                        taken.append(nacked)
                elif (slot := self._holders.get(message_id)) is not None:
                    if (item := slot.unacked.pop(message_id, None)) is not None:
                        self._settle(item)
                        taken.append((item, slot.member))
            try:
                await self._redeliver(taken)
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("redelivery on subscription %s of %s failed", self.subscription, self.slug)
                await asyncio.sleep(RETRY_S)

    async def _redeliver(self, taken: list[tuple[Pending, Member]]) -> None:
        """Count each message once more, then queue it at the head, or move it to the dead letter
        topic when the count exceeds its consumer's maxRedeliverCount."""
        if not taken:
            return
        counts: dict[str, int] = {}
        if self.stores and not self.deleted:
            try:
                counts = await database_sync_to_async(services.count_redeliveries)(
                    self.subscription_id, [item.message_id for item, _ in taken]
                )
            except asyncio.CancelledError:
                raise
            except Exception:
                # Delivered again all the same; the stored count lags by one.
                logger.exception("counting redeliveries on subscription %s of %s failed", self.subscription, self.slug)
        back: list[Pending] = []
        for item, member in taken:
            item.count = counts.get(item.message_id, item.count + 1)
            if dead_letters(item.count, member.params.maxRedeliverCount) and not self.deleted:
                await self.dead_letters.move(item, member)
            else:
                back.append(item)
        self.requeue(back)

    def requeue(self, items: list[Pending]) -> None:
        """Put messages back at the head of the queue, in publish order."""
        self.queue.extendleft(reversed(by_sequence(items)))
        self.pump()
