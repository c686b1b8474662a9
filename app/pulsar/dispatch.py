"""Which consumer of a subscription gets a message (docs/architecture.md 18.3). Plain state and
decisions, no I/O.

Consumers are given in attach order, each with its credit (app/pulsar/flow.py) and its unacked
messages in flight. ``None`` means the message waits (no consumer may take it now).

- ``Exclusive``: one consumer (a second is refused at the handshake).
- ``Failover``: the first attached consumer gets everything; the next in attach order takes over
  when it leaves (its unacked messages come back first, put there by the dispatcher).
- ``Shared``: round robin over the consumers with credit.
- ``Key_Shared``: a key's first message picks the consumer with credit and the fewest unacked; the
  key stays with it while it is connected. The map holds at most ``max_keys`` keys; a new key
  evicts the oldest with nothing in flight, and waits when every key has something in flight. A
  message without a key has the key "".
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

EXCLUSIVE = "Exclusive"
FAILOVER = "Failover"
SHARED = "Shared"
KEY_SHARED = "Key_Shared"


@dataclass(frozen=True, slots=True)
class Candidate:
    id: int
    credit: int
    unacked: int


def first_attached(candidates: Sequence[Candidate]) -> int | None:
    """Exclusive and Failover: the first attached consumer, when it has credit."""
    if candidates and candidates[0].credit > 0:
        return candidates[0].id
    return None


class RoundRobin:
    def __init__(self) -> None:
        self._last: int | None = None

    def pick(self, candidates: Sequence[Candidate]) -> int | None:
        """The next consumer with credit after the one picked last (in attach order)."""
        ready = [c.id for c in candidates if c.credit > 0]
        if not ready:
            return None
        after = [i for i in ready if self._last is not None and i > self._last]
        self._last = after[0] if after else ready[0]
        return self._last


class KeyMap:
    def __init__(self, max_keys: int) -> None:
        self.max_keys = max_keys
        self._owner: dict[str, int] = {}  # insertion order: oldest first
        self._in_flight: Counter[str] = Counter()

    def __len__(self) -> int:
        return len(self._owner)

    def owner(self, key: str) -> int | None:
        return self._owner.get(key)

    def pick(self, key: str, candidates: Sequence[Candidate]) -> int | None:
        """The consumer for a message with ``key``; a new key is assigned here."""
        owner = self._owner.get(key)
        if owner is not None:
            for candidate in candidates:
                if candidate.id == owner:
                    return owner if candidate.credit > 0 else None
            del self._owner[key]  # its consumer left without the dispatcher saying so
        ready = [c for c in candidates if c.credit > 0]
        if not ready or not self._room():
            return None
        chosen = min(ready, key=lambda c: c.unacked).id  # min keeps the first of equals
        self._owner[key] = chosen
        return chosen

    def _room(self) -> bool:
        if len(self._owner) < self.max_keys:
            return True
        for key in self._owner:
            if not self._in_flight[key]:
                del self._owner[key]
                return True
        return False

    def sent(self, key: str) -> None:
        self._in_flight[key] += 1

    def settled(self, key: str) -> None:
        """A message of ``key`` is no longer in flight (acked, nacked, timed out, taken back)."""
        if self._in_flight[key] <= 1:
            del self._in_flight[key]
        else:
            self._in_flight[key] -= 1

    def forget(self, consumer: int) -> None:
        """``consumer`` left: its keys go to whoever gets their next message."""
        for key in [k for k, owner in self._owner.items() if owner == consumer]:
            del self._owner[key]


class Dispatch:
    """The rule of one subscription type, with the state it keeps."""

    def __init__(self, subscription_type: str, max_keys: int) -> None:
        self.type = subscription_type
        self.round_robin = RoundRobin()
        self.keys = KeyMap(max_keys)

    @property
    def by_key(self) -> bool:
        return self.type == KEY_SHARED

    def pick(self, key: str, candidates: Sequence[Candidate]) -> int | None:
        if self.type == SHARED:
            return self.round_robin.pick(candidates)
        if self.type == KEY_SHARED:
            return self.keys.pick(key, candidates)
        return first_attached(candidates)

    def sent(self, key: str) -> None:
        if self.by_key:
            self.keys.sent(key)

    def settled(self, key: str) -> None:
        if self.by_key:
            self.keys.settled(key)

    def left(self, consumer: int) -> None:
        self.keys.forget(consumer)
