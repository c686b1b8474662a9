"""The delayed messages a ``Shared`` or ``Key_Shared`` dispatcher holds back (docs/architecture.md
18.4; the rules in app/pulsar/delays.py). Other types hold nothing: every method lets all through.

Held messages stay in the database: this keeps only the release mark and the earliest due time,
which the dispatcher's timer task watches (``due_at``, on the event loop's clock). When it comes,
``releasing`` is set until the due read (``read_due``) has found every message due by then.
"""

from __future__ import annotations

import asyncio
from datetime import datetime

from channels.db import database_sync_to_async
from django.utils import timezone

from app.broker.hub import Delivered
from app.pulsar import services
from app.pulsar.delays import Mark, held_until, holds_back, loop_time_of
from app.pulsar.members import Pending


class HeldMessages:
    def __init__(self, subscription_type: str, loop: asyncio.AbstractEventLoop, wake: asyncio.Event) -> None:
        self.type = subscription_type
        self.active = holds_back(subscription_type)
        self.loop = loop
        self.wake = wake  # the dispatcher's timer task
        self.released = Mark(timezone.now())
        self.due_at: float | None = None
        self.releasing = False
        self._resets = 0  # a due read begun before a reset brings back nothing

    def reset(self) -> None:
        """Nothing read past yet (serving from the cursor on, or standing by)."""
        self._resets += 1
        self.released = Mark(timezone.now())
        self.due_at = None
        self.releasing = False

    @property
    def holding(self) -> bool:
        """Whether messages read past are held (else the mark may move to any time)."""
        return self.releasing or self.due_at is not None

    def mark_for_read(self) -> Mark | None:
        """What a backlog read may return (None: everything, for types that hold nothing)."""
        if not self.active:
            return None
        if not self.holding:
            self.released = self.released.advanced(timezone.now())
        return self.released

    def takes(self, item: Delivered) -> bool:
        """Whether the live message ``item``, read past now, is held (else it is queued)."""
        if not self.active or item.deliver_at is None or item.sequence is None:
            return False
        if not self.holding:
            self.released = self.released.advanced(timezone.now())
        until = held_until(self.type, item.deliver_at, item.sequence, self.released)
        if until is not None:
            self.hold(until)
        return until is not None

    def hold(self, until: datetime) -> None:
        """A message read past is held until ``until``."""
        due = loop_time_of(until, wall_now=timezone.now(), loop_now=self.loop.time())
        if self.due_at is None or due < self.due_at:
            self.due_at = due
            self.wake.set()

    def come_due(self) -> bool:
        """Called by the timer task: whether the earliest held message is due now (a due read starts)."""
        if self.due_at is None or self.due_at > self.loop.time():
            return False
        self.due_at = None
        self.releasing = True
        return True

    async def read_due(self, subscription_id: int, through: int, limit: int) -> list[Pending]:
        """The held messages that came due, at most ``limit``, in order of due time then sequence
        (none when it was reset meanwhile: what it read belongs to what was forgotten)."""
        resets = self._resets
        due = await database_sync_to_async(services.due_messages)(
            subscription_id, released=self.released, now=timezone.now(), through=through, limit=limit
        )
        if resets != self._resets:
            return []
        self.released = due.released
        self.releasing = due.more
        if due.held_next is not None:
            self.hold(due.held_next)
        return [Pending(r.message_id, r.sequence, r.frame, count=r.redelivery_count) for r in due.replays]
