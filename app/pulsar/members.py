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
    id: int
    member: Member
    flow: Flow
    unacked: dict[str, Pending] = field(default_factory=dict)
    # Nacked and waiting for their redelivery: still unacked as far as credit goes (Pulsar's sense).
    nacked: dict[str, Pending] = field(default_factory=dict)
    ready: bool = False  # accepted: frames may be sent

    def candidate(self) -> Candidate:
        held = len(self.unacked) + len(self.nacked)
        return Candidate(self.id, self.flow.credit(held) if self.ready else 0, len(self.unacked))


def by_sequence(items: Iterable[Pending]) -> list[Pending]:
    listed = list(items)
    if all(item.sequence is not None for item in listed):
        listed.sort(key=lambda item: item.sequence or 0)
    return listed
