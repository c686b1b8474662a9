"""The reader endpoint's decisions (docs/architecture.md 18.5): its query parameters, where it
starts, and what it does with a message given its flow-control credit. Plain code, no I/O.

A reader keeps no state on the server: no cursor, no delivery rows. Its position is the highest
sequence it has sent; what it has not sent yet it reads from the database by sequence, so a reader
that does not ack costs no memory on stored topics. On a ``disabled`` topic nothing is stored, and
at most ``receiverQueueSize`` live messages wait in memory for credit.
"""

from __future__ import annotations

import enum
import uuid
from collections import deque
from dataclasses import dataclass

from django.conf import settings
from pydantic import field_validator

from app.broker.delivery import replay_page_size
from app.broker.hub import Delivered
from app.pulsar.params import JavaInt, QueryParams

EARLIEST = "earliest"
LATEST = "latest"


class Start(enum.Enum):
    EARLIEST = EARLIEST
    LATEST = LATEST
    AFTER_MESSAGE = "after message"


@dataclass(frozen=True, slots=True)
class StartPosition:
    kind: Start
    # Set for AFTER_MESSAGE: the reader starts after this stored message (exclusive, Pulsar's default).
    message_id: uuid.UUID | None = None


class ReaderParams(QueryParams):
    """``/ws/v2/reader/...`` query parameters (Pulsar's names); ``readerName`` only shows in logs."""

    messageId: str = LATEST
    receiverQueueSize: JavaInt = 1000
    readerName: str | None = None

    @field_validator("messageId")
    @classmethod
    def _position(cls, value: str) -> str:
        if value in (EARLIEST, LATEST):
            return value
        try:
            # Canonical form: the id as Switchyard delivered it, however the client spelled it.
            return str(uuid.UUID(value))
        except ValueError:
            raise ValueError("must be earliest, latest or a message id as delivered") from None

    @field_validator("receiverQueueSize")
    @classmethod
    def _queue_size(cls, value: int) -> int:
        most: int = settings.UNACKED_PER_CONNECTION
        if not 1 <= value <= most:
            raise ValueError(f"must be between 1 and {most}")
        return value

    @property
    def start(self) -> StartPosition:
        if self.messageId == EARLIEST:
            return StartPosition(Start.EARLIEST)
        if self.messageId == LATEST:
            return StartPosition(Start.LATEST)
        return StartPosition(Start.AFTER_MESSAGE, uuid.UUID(self.messageId))


def start_after(start: StartPosition, *, last_sequence: int, message_sequence: int | None) -> int:
    """The sequence a reader of a stored topic starts after: 0 for ``earliest``, the topic's last
    sequence at attach for ``latest``, the given stored message's sequence for a message id."""
    if start.kind is Start.EARLIEST:
        return 0
    if start.kind is Start.LATEST:
        return last_sequence
    assert message_sequence is not None, "a message id is resolved to its sequence at the handshake"
    return message_sequence


class Live(enum.Enum):
    """What a reader does with a live stored message."""

    SEND = "send"
    SKIP = "skip"  # sent already (by a history page), or before the start position
    READ_LATER = "read later"  # not sent now: read from the database, with what is missing before it


def live_action(position: int, sequence: int, *, credit: int, reading: bool) -> Live:
    """A live message with ``sequence`` reaches a reader that has sent everything up to
    ``position``. It is sent only when it is the very next one, the reader has credit and no
    history read is under way; otherwise it is left to the database (a later read sends it in
    order), so nothing waits in memory."""
    if sequence <= position:
        return Live.SKIP
    if reading or credit <= 0 or sequence > position + 1:
        return Live.READ_LATER
    return Live.SEND


def history_page_size(credit: int, most: int, budget_bytes: int, average_bytes: int | None) -> int:
    """How many stored messages a reader fetches next: no more than its credit, and a page that
    fits its send queue as a consumer's replay does (app/broker/delivery.py)."""
    return max(1, min(credit, replay_page_size(most, budget_bytes, average_bytes)))


class InFlight:
    """Message ids sent and not acked yet; the credit is what ``receiverQueueSize`` leaves."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._ids: set[str] = set()

    @property
    def credit(self) -> int:
        return self.size - len(self._ids)

    def sent(self, message_id: str) -> None:
        self._ids.add(message_id)

    def ack(self, message_id: str) -> bool:
        """Free the credit of a sent message; False when it is not one in flight."""
        if message_id not in self._ids:
            return False
        self._ids.discard(message_id)
        return True


class WaitingLive:
    """Live messages of a ``disabled`` topic waiting for credit: at most ``size``, the oldest
    dropped first (nothing stored could replace them, and memory stays bounded)."""

    def __init__(self, size: int) -> None:
        self._items: deque[Delivered] = deque()
        self.size = size
        self.dropped = 0  # since the queue was last empty

    def __len__(self) -> int:
        return len(self._items)

    def add(self, item: Delivered) -> Delivered | None:
        """Queue ``item``; the oldest one it pushed out, if any."""
        self._items.append(item)
        if len(self._items) <= self.size:
            return None
        self.dropped += 1
        return self._items.popleft()

    def take(self) -> Delivered | None:
        """The oldest waiting message, or None."""
        if not self._items:
            return None
        item = self._items.popleft()
        if not self._items:
            self.dropped = 0
        return item
