"""One subscription's dispatcher in this process (docs/architecture.md 18.3, 18.4).

It is the hub's subscriber for the subscription: it gets every live message of the topic once and
reads the backlog from the database by cursor (``read_through``: every stored message up to it is
queued here, in flight, or acked). It sends only to consumers with credit (app/pulsar/flow.py),
chosen by the subscription type's rule (app/pulsar/dispatch.py), keeps each consumer's unacked
messages, and owns the timers of ack timeouts and nacks (app/pulsar/redeliveries.py). A nacked
message waiting for its redelivery still counts against its consumer's credit, as an unacked one (so
a consumer holds at most its credit's worth of frames here, nacked or not). A consumer leaving puts
its unacked and nacked messages back at the head of the queue (app/pulsar/waiting.py), counted once
more. ``Shared`` and ``Key_Shared`` hold delayed messages back until due (app/pulsar/held.py).

Under ``disabled`` nothing is stored: live messages wait here, at most the largest
``receiverQueueSize`` of the consumers, the oldest dropped (one WARNING per stretch of drops).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import uuid
from typing import TYPE_CHECKING, Any

from channels.db import database_sync_to_async
from django.conf import settings

from app.broker.delivery import needs_resync
from app.broker.hub import Delivered
from app.broker.services import SubscriptionAck
from app.broker.topics import TopicView
from app.pulsar import services
from app.pulsar.dead_letters import DeadLetters
from app.pulsar.dispatch import EXCLUSIVE, Dispatch
from app.pulsar.flow import Flow
from app.pulsar.held import HeldMessages
from app.pulsar.lease_clock import LeaseClock
from app.pulsar.members import Member, Pending, Slot, by_sequence
from app.pulsar.redeliveries import RETRY_S, Redeliveries
from app.pulsar.redelivery import Reason, Timers, ack_deadline, nack_due
from app.pulsar.tasks import TaskOwner
from app.pulsar.waiting import Waiting
from app.server.metrics import TALLY

if TYPE_CHECKING:
    from app.broker.runtime import BrokerRuntime

logger = logging.getLogger(__name__)

# Backlog read per query at most.
BACKLOG_PAGE = 500


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
        self.queue = Waiting(self.dispatch.by_key)
        self.read_through = 0
        self._more_in_db = False
        self._behind: int | None = None
        self._fetching = False
        self.timers = Timers()
        self.holders: dict[str, Slot] = {}  # message id -> the slot it is in flight or nacked with
        self.wake = asyncio.Event()
        self.held = HeldMessages(subscription_type, runtime.loop, self.wake)
        self._timer_task: asyncio.Task[None] | None = None
        self.serving = False  # holds the subscription's lease: dispatches
        # Moved on by every start and stand-by: what work begun before (a backlog read, a
        # redelivery's count) brings back is dropped, the queue having been cleared since.
        self.epoch = 0
        self.lease = LeaseClock(runtime.loop, self._deadline_passed)  # moved by the registry's renewals
        self.deleted = False  # unsubscribed: nothing more is written for it
        # Set by the registry (app/pulsar/subscriptions.py).
        self.owner = ""  # the principal that created the subscription
        self.started: asyncio.Task[Any] | None = None
        self.closing = False  # takes no new consumer (its last one left, or it was unsubscribed)
        self.stopped = False
        self.closed = asyncio.Event()
        self.dead_letters = DeadLetters(runtime, self)
        self.redeliveries = Redeliveries(self)

    # --- members ---------------------------------------------------------------------------

    def add(self, member: Member) -> Slot:
        params = member.params
        flow = Flow(pull=params.pullMode, queue_size=params.receiverQueueSize, limit=self.runtime.unacked_limit,
                    char_limit=settings.UNACKED_CHARS_PER_CONNECTION)
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

    async def remove(self, member: Member) -> bool:
        """``member`` left: its unacked and nacked messages come back, counted once more. True when
        it was the last one: the dispatcher is closing from then on (no consumer joins it, so none
        can join with another subscription type while this one still serves the old one)."""
        slot = self.slot_of(member)
        if slot is None:
            return False
        self.slots.remove(slot)
        last = not self.slots
        if last:
            self.closing = True
        self.dispatch.left(slot.id)
        items, nacked = slot.take_all()
        for item in items:
            self.settle(item)
        for item in nacked:
            self.timers.cancel(item.message_id)
            self.holders.pop(item.message_id, None)
            items.append(item)
        if items and (self.slots or self.stores):
            await self.redeliveries.redeliver([(item, member) for item in items])
        return last

    def evict_all(self, reason: str) -> None:
        """Close every consumer with 1011 (they reconnect, and are judged afresh)."""
        for slot in list(self.slots):
            slot.member.evict(reason)

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
        dropped = self.queue.add_live(Pending(item.message_id, None, item.text, live=item), self.window)
        if dropped is not None and self.queue.dropped == 1:
            logger.warning("subscription %s on %s: %d messages waiting for consumers with credit; dropping "
                           "the oldest until the queue empties (first: %s)",
                           self.subscription, self.slug, len(self.queue) + 1, dropped.message_id)
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
        if not self.serving:
            return
        candidates = [slot.candidate() for slot in self.slots]
        slots = {slot.id: slot for slot in self.slots}
        credit = sum(c.credit for c in candidates)
        # One line ("") but under Key_Shared, where a message whose consumer has no credit waits,
        # and so do the later messages of its key (their order is kept); other keys go on.
        for key in self.queue.keys():
            while credit > 0 and self.queue.first(key) is not None:
                target = self.dispatch.pick(key, candidates)
                if target is None:
                    break
                # Before every send: a process paused past its lease (another one serves now) finds
                # out here, before it sends anything it queued meanwhile.
                now = self.runtime.loop.time()
                if not self.lease.may_act(now):
                    self.lose_lease("its lease ran out before it was renewed")
                    return
                self._send(slots[target], self.queue.pop_first(key), now)
                candidates = [slot.candidate() for slot in self.slots]
                credit -= 1
            if credit <= 0:
                return

    def _send(self, slot: Slot, item: Pending, now: float) -> None:
        slot.hold(item)
        slot.flow.sent()
        self.holders[item.message_id] = slot
        self.dispatch.sent(item.key if self.dispatch.by_key else "")
        deadline = ack_deadline(now, slot.member.params.ackTimeoutMillis)
        if deadline is not None:
            self.timers.schedule(item.message_id, deadline, Reason.ACK_TIMEOUT)
            self.wake.set()
        slot.member.send(item.frame())

    async def _fetch(self) -> None:
        """Read held messages that came due (ahead of what is queued), then the backlog after
        ``read_through``, until the database has no more or the queue is full."""
        epoch = self.epoch
        try:
            while (self._more_in_db or self.held.releasing) and not self.deleted and len(self.queue) < self.window:
                limit = min(BACKLOG_PAGE, self.window - len(self.queue))
                if self.held.releasing:
                    due = await self.held.read_due(self.subscription_id, self.read_through, limit)
                    if epoch != self.epoch:
                        break
                    self.queue.put_first(due)
                    self._send_queued()
                    continue
                self._more_in_db = False
                page = await database_sync_to_async(services.backlog)(
                    self.subscription_id, after=self.read_through, limit=limit, released=self.held.mark_for_read()
                )
                if epoch != self.epoch:
                    break  # stood by meanwhile (and maybe serving again, from the cursor): read anew
                for replay in page.replays:
                    if replay.sequence > self.read_through:
                        self.read_through = replay.sequence
                        if replay.redelivery_count:
                            TALLY.redeliveries += 1
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
        """Redelivered ``negativeAckRedeliveryDelay`` later; False when not in flight with ``member``.
        Until then it stays with ``member`` (its credit), nacked."""
        slot = self.slot_of(member)
        item = self._take(member, message_id)
        if item is None or slot is None:
            return False
        slot.park(item)
        self.holders[message_id] = slot
        due = nack_due(self.runtime.loop.time(), member.params.negativeAckRedeliveryDelay)
        self.timers.schedule(message_id, due, Reason.NACK)
        self.wake.set()
        self.pump()
        return True

    def permit(self, member: Member, count: int) -> None:
        slot = self.slot_of(member)
        if slot is not None:
            slot.flow.permit(count)
            self.pump()

    def _take(self, member: Member, message_id: str) -> Pending | None:
        slot = self.slot_of(member)
        item = slot.take_unacked(message_id) if slot is not None else None
        if item is not None:
            self.settle(item)
        return item

    def _take_back(self, message_id: str) -> Pending | None:
        """A message waiting for redelivery (nacked, being counted, or queued again), no longer waiting."""
        slot = self.holders.get(message_id)
        if slot is not None and (item := slot.take_nacked(message_id)) is not None:
            self.timers.cancel(message_id)
            del self.holders[message_id]
            return item
        return self.queue.take_back(message_id) or self.redeliveries.take(message_id)

    def settle(self, item: Pending) -> None:
        """``item`` is no longer in flight."""
        self.timers.cancel(item.message_id)
        self.holders.pop(item.message_id, None)
        self.dispatch.settled(item.key if self.dispatch.by_key else "")

    # --- serving or not --------------------------------------------------------------------------

    def _deadline_passed(self) -> None:
        if self.serving:
            self.lose_lease("its lease ran out before it was renewed")

    @property
    def lease_lapsed(self) -> bool:
        """Serving, but past the lease deadline: it must stand by before doing anything more."""
        return self.serving and not self.lease.may_act(self.runtime.loop.time())

    def lose_lease(self, why: str) -> None:
        """Another process may serve now: stand by (it redelivers what was in flight here). Exclusive
        consumers are closed (1011, reconnect): another process may accept one now, two may not be."""
        logger.warning("subscription %s on %s: lease lost (%s), standing by", self.subscription, self.slug, why)
        self.runtime.hub.unsubscribe(self.slug, self)
        self.stand_by()
        if self.type == EXCLUSIVE:
            self.evict_all("the subscription's lease was lost; reconnect")

    def start_serving(self, acked_through: int) -> None:
        """This process holds the lease: dispatch from the cursor on (what is stored comes from the
        database, read after ``acked_through``)."""
        self.epoch += 1
        self.read_through = acked_through
        self._more_in_db = self.stores
        self.held.reset()
        if self.stores:
            self.queue.clear()  # read again, in order, from the database
        self.serving = True
        self._timer_task = self.spawn(self.redeliveries.run())
        self.pump()

    def stand_by(self) -> None:
        """Another process serves the subscription: forget what was queued and in flight here
        (that process redelivers it from the database)."""
        self.serving = False
        self.epoch += 1
        self.lease.cancel()
        if self._timer_task is not None:
            self._timer_task.cancel()
            self._timer_task = None
        for slot in self.slots:
            for item in slot.take_all()[0]:
                self.settle(item)
        self.holders.clear()
        self.queue.clear()
        self.timers = Timers()
        self.held.reset()

    def requeue(self, items: list[Pending], epoch: int | None = None) -> None:
        """Put messages back at the head of the queue, in publish order; taken back in ``epoch``
        (when given), they are dropped once it is over: what is stored is read again instead."""
        if epoch is not None and epoch != self.epoch:
            return
        self.queue.put_first(by_sequence(items))
        self.pump()
