"""Decisions a consumer connection makes about sequences (pure functions, no I/O).

Stored messages carry a per-topic sequence. A connection remembers the highest one it has sent;
anything at or below it is a duplicate, and a jump means the fast path lost messages that the
database still has. Replays are fetched in pages sized to fit the connection's send queue.
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


# A replay's first page, before any frame size is known (each may be up to MAX_FRAME_BYTES).
FIRST_REPLAY_PAGE = 16


def replay_page_size(most: int, budget_bytes: int, average_bytes: int | None) -> int:
    """How many stored messages a replay fetches next: at most ``most``, about ``budget_bytes`` at
    the average frame size seen so far (a few while none is known), and at least one."""
    if average_bytes is None:
        return max(1, min(most, FIRST_REPLAY_PAGE))
    return max(1, min(most, budget_bytes // max(1, average_bytes)))
