"""What a subscription's dispatcher keeps per message and per consumer (app/pulsar/dispatcher.py)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from app import codec
from app.broker.hub import Delivered
from app.pulsar.dispatch import Candidate
from app.pulsar.flow import Flow
from app.pulsar.params import ConsumerParams


class Member(Protocol):
    """A consumer connection of the subscription."""

    principal: str
    user: Any
    params: ConsumerParams

    def send(self, text: str) -> None: ...

    def recheck_rights(self) -> None: ...

    def evict(self, reason: str) -> None:
        """Close the connection with 1011 (reconnect): this process can no longer serve it."""


@dataclass(slots=True, eq=False)
class Pending:
    """A message of the subscription not yet acked, queued or in flight."""

    message_id: str
    sequence: int | None
    text: str  # the shared frame, without redeliveryCount
    count: int = 0
    live: Delivered | None = None
    _key: str | None = None

    def frame(self) -> str:
        if self.count == 0 and self.live is not None:
            return self.live.first_delivery_text()  # built once, shared by every subscription
        return self.text[:-1] + f',"redeliveryCount":{self.count}}}'

    @property
    def key(self) -> str:
        """The producer's ``key`` ("" when none); read only by Key_Shared."""
        if self._key is None:
            found = codec.loads(self.text).get("key")
            self._key = found if isinstance(found, str) else ""
        return self._key


@dataclass(slots=True, eq=False)
class Slot:
    """One consumer of the subscription and the messages it holds: sent and not acked, or nacked and
    waiting for their redelivery (still unacked as far as credit goes, Pulsar's sense). Their frames
    are kept for the redelivery, so what they weigh is bounded too (``Flow.char_limit``)."""

    id: int
    member: Member
    flow: Flow
    unacked: dict[str, Pending] = field(default_factory=dict)
    nacked: dict[str, Pending] = field(default_factory=dict)
    # Characters of the frames held (unacked and nacked).
    held_chars: int = 0
    ready: bool = False  # accepted: frames may be sent

    def candidate(self) -> Candidate:
        held = len(self.unacked) + len(self.nacked)
        credit = self.flow.credit(held, self.held_chars) if self.ready else 0
        return Candidate(self.id, credit, len(self.unacked))

    def hold(self, item: Pending) -> None:
        """``item`` was sent to this consumer (again: counted once)."""
        previous = self.unacked.get(item.message_id)
        if previous is not None:
            self.held_chars -= len(previous.text)
        self.unacked[item.message_id] = item
        self.held_chars += len(item.text)

    def park(self, item: Pending) -> None:
        """``item``, taken from it a moment ago, was nacked: it waits here for its redelivery."""
        self.nacked[item.message_id] = item
        self.held_chars += len(item.text)

    def take_unacked(self, message_id: str) -> Pending | None:
        item = self.unacked.pop(message_id, None)
        if item is not None:
            self.held_chars -= len(item.text)
        return item

    def take_nacked(self, message_id: str) -> Pending | None:
        item = self.nacked.pop(message_id, None)
        if item is not None:
            self.held_chars -= len(item.text)
        return item

    def take_all(self) -> tuple[list[Pending], list[Pending]]:
        """Everything it holds, (unacked, nacked), no longer held."""
        unacked, nacked = list(self.unacked.values()), list(self.nacked.values())
        self.unacked.clear()
        self.nacked.clear()
        self.held_chars = 0
        return unacked, nacked


def by_sequence(items: Iterable[Pending]) -> list[Pending]:
    listed = list(items)
    if all(item.sequence is not None for item in listed):
        listed.sort(key=lambda item: item.sequence or 0)
    return listed
