"""Flow control of a Pulsar consumer (docs/architecture.md 18.4): how many more messages it may be
sent now. Plain state, no I/O.

Push mode: ``receiverQueueSize`` minus the unacked messages in flight. Pull mode: the permits
received (``{"type": "permit", "permitMessages": N}``) minus the messages sent, starting at 0. Either
way a connection never holds more than ``UNACKED_PER_CONNECTION`` unacked messages, nor more than
``UNACKED_CHARS_PER_CONNECTION`` characters of their frames (kept for their redelivery): past it,
nothing more is sent until acks free room (one message at least, however large, when it holds none).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any

# Permits are summed; past this a client asking for more changes nothing.
MAX_PERMITS = 2**31 - 1


@dataclass(slots=True)
class Flow:
    pull: bool
    queue_size: int
    # UNACKED_PER_CONNECTION: what a connection may hold in flight whatever it asked for.
    limit: int
    permits: int = 0
    # UNACKED_CHARS_PER_CONNECTION: how much of their frames it may hold.
    char_limit: int = sys.maxsize

    def credit(self, in_flight: int, held_chars: int = 0) -> int:
        """How many messages may be sent now, with ``in_flight`` unacked weighing ``held_chars``."""
        if in_flight and held_chars >= self.char_limit:
            return 0
        room = self.limit - in_flight
        wanted = self.permits if self.pull else self.queue_size - in_flight
        return max(0, min(wanted, room))

    def sent(self) -> None:
        if self.pull:
            self.permits -= 1

    def permit(self, count: int) -> None:
        self.permits = min(MAX_PERMITS, self.permits + count)


def permit_count(raw: dict[str, Any]) -> int | None:
    """``permitMessages`` of a permit frame when it is a positive int, else None."""
    count = raw.get("permitMessages")
    if type(count) is not int or count <= 0:  # bool is no count
        return None
    return count
