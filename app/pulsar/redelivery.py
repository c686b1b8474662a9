"""When a message sent on a subscription comes back (docs/architecture.md 18.4). Plain state and
decisions, no I/O; the caller passes the time (the event loop's clock, in seconds).

A message sent to a consumer with ``ackTimeoutMillis`` > 0 has an ack deadline; a nacked one has a
redelivery time ``negativeAckRedeliveryDelay`` later. A message has at most one of them at a time
(it is either in flight with a consumer or waiting after a nack). When one is due, the message is
counted again; when that count exceeds ``maxRedeliverCount`` (> 0) it goes to the dead letter topic,
which must be one the subscribing principal may trust with its messages.
"""

from __future__ import annotations

import enum
import heapq

from app.broker.naming import shown


class Reason(enum.Enum):
    ACK_TIMEOUT = "ack timeout"
    NACK = "negative acknowledgement"


def ack_deadline(sent_at: float, ack_timeout_ms: int) -> float | None:
    """When an unacked message sent at ``sent_at`` is taken back, or None (no ack timeout)."""
    return sent_at + ack_timeout_ms / 1000 if ack_timeout_ms > 0 else None


def nack_due(now: float, delay_ms: int) -> float:
    return now + delay_ms / 1000


def dead_letters(count: int, max_redeliver: int) -> bool:
    """Whether a message about to be delivered for the ``count``-th time again goes to the dead
    letter topic instead."""
    return max_redeliver > 0 and count > max_redeliver


def dead_letter_topic_problem(slug: str, *, response_topic: bool, creator: str, principal: str,
                              may_produce: bool) -> str | None:
    """Why the existing topic ``slug`` cannot take the dead letters of ``principal``'s subscription,
    or None. ``creator``: the principal that created it, "" for an admin's.

    Only a topic of the principal's own or an admin's may serve: whoever else created it first
    under the name (``<topic>-<subscription>-DLQ`` is predictable) could read the dead letters, or
    refuse the principal so that they would be redelivered forever."""
    if response_topic:
        return f"dead letter topic {shown(slug)} is a response topic"
    if creator and creator != principal:
        return f"dead letter topic {shown(slug)} was created by another principal; name another deadLetterTopic"
    if not may_produce:
        return f"not allowed to publish to dead letter topic {shown(slug)}"
    return None


def dead_letter_creation_problem(slug: str, *, explicit: bool, may_add_topics: bool, allow_auto: bool) -> str | None:
    """Why a missing dead letter topic ``slug`` may not be created for a subscription, or None.

    The default name, ``<topic>-<subscription>-DLQ``, derives from a topic the principal may consume:
    any consumer may have it made. A name the consumer chose (``deadLetterTopic``) is any topic name,
    so making it takes the right to create topics (``CREATE_TOPIC_ON_MESSAGE`` and ``broker.add_topic``,
    or ``ALLOW_AUTO_TOPIC_CREATION``): a consumer must not claim free names through its dead letters."""
    if not explicit or may_add_topics or allow_auto:
        return None
    return (f"dead letter topic {shown(slug)} does not exist and this principal may not create topics; "
            "name an existing one or leave deadLetterTopic out")


class Timers:
    """At most one due time per message id; ``due`` hands out those that have come."""

    def __init__(self) -> None:
        self._due: dict[str, tuple[float, Reason]] = {}
        # (time, id) with stale entries skipped lazily: cancelling is then O(1).
        self._heap: list[tuple[float, str]] = []

    def __len__(self) -> int:
        return len(self._due)

    def schedule(self, message_id: str, when: float, reason: Reason) -> None:
        self._due[message_id] = (when, reason)
        heapq.heappush(self._heap, (when, message_id))

    def cancel(self, message_id: str) -> None:
        self._due.pop(message_id, None)
        if not self._due:
            self._heap.clear()

    def next_due(self) -> float | None:
        self._skip_stale()
        return self._heap[0][0] if self._heap else None

    def due(self, now: float) -> list[tuple[str, Reason]]:
        """The timers that have come, earliest first, removed."""
        found: list[tuple[str, Reason]] = []
        while self._heap:
            self._skip_stale()
            if not self._heap or self._heap[0][0] > now:
                break
            when, message_id = heapq.heappop(self._heap)
            found.append((message_id, self._due.pop(message_id)[1]))
        return found

    def _skip_stale(self) -> None:
        heap = self._heap
        while heap and self._due.get(heap[0][1], (None,))[0] != heap[0][0]:
            heapq.heappop(heap)
