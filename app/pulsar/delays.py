"""Pulsar's delayed delivery on subscriptions (docs/architecture.md 18.4). Plain rules, no I/O.

A message published with ``deliverAt`` / ``deliverAfterMs`` (``Message.deliver_at``) is held back only
by ``Shared`` and ``Key_Shared`` subscriptions, as in Pulsar; other types, DASF consumers and readers
get it at once. Held messages stay in the database, not in memory (a topic may hold many): the
dispatcher reads past them, remembers only the earliest due time, and reads them again when due.

What it has read past is described by a release mark (``Mark``): a message is released when it has no
due time or its (due time, sequence) is at or below the mark. Every stored message the dispatcher has
read past (sequence at or below its ``read_through``) and that is released is queued, in flight or
acked; the others are held, in the database only. Backlog reads leave held messages out; a due read
returns the held ones that came due, in order of due time then sequence, and moves the mark past them.
The mark only moves up, so no message is released twice.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from app.pulsar.dispatch import KEY_SHARED, SHARED

HOLDING_TYPES = frozenset({SHARED, KEY_SHARED})
# A mark with this sequence releases every message due at or before its time.
ALL_SEQUENCES = 2**63 - 1


def holds_back(subscription_type: str) -> bool:
    """Whether subscriptions of this type hold delayed messages back (Pulsar: Shared, Key_Shared)."""
    return subscription_type in HOLDING_TYPES


@dataclass(frozen=True, slots=True, order=True)
class Mark:
    at: datetime
    sequence: int = ALL_SEQUENCES

    def releases(self, deliver_at: datetime | None, sequence: int) -> bool:
        return deliver_at is None or (deliver_at, sequence) <= (self.at, self.sequence)

    def advanced(self, now: datetime) -> Mark:
        """Everything due by ``now`` released (never moves back, should the clock)."""
        return max(self, Mark(now))


def held_until(subscription_type: str, deliver_at: datetime | None, sequence: int, released: Mark) -> datetime | None:
    """When a message the dispatcher reads past is held back until (to be read again then), or None:
    it goes out now. A due time already past but above the mark is held too; it is due at once."""
    if not holds_back(subscription_type) or released.releases(deliver_at, sequence):
        return None
    return deliver_at


def loop_time_of(deliver_at: datetime, *, wall_now: datetime, loop_now: float) -> float:
    """``deliver_at`` on the event loop's clock (the dispatcher's timers run on it)."""
    return loop_now + max(0.0, (deliver_at - wall_now).total_seconds())
