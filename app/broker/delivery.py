"""Decisions a consumer connection makes about sequences (pure functions, no I/O).

Stored messages carry a per-topic sequence. A connection remembers the highest one it has sent;
anything at or below it is a duplicate, and a jump means the fast path lost messages that the
database still has.
"""

from __future__ import annotations


def is_duplicate(last_sent: int, sequence: int | None) -> bool:
    return sequence is not None and sequence <= last_sent


def has_gap(last_sent: int, sequence: int | None) -> bool:
    """A stored message arrived with earlier stored ones missing in between."""
    return sequence is not None and last_sent > 0 and sequence > last_sent + 1


def needs_resync(last_sent: int, database_last: int, behind_at_last_check: int | None) -> bool:
    """The database was ahead at the previous check too, and we still have not caught up with
    what it had then: the messages are not merely in flight, they were lost on the way."""
    return behind_at_last_check is not None and last_sent < behind_at_last_check <= database_last
