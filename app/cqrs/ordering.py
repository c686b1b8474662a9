"""Per-instance order on the replica: while a message for one instance (``cqrs_id``, ``instance_pk``)
waits for its retry, later messages for that instance wait behind it, in arrival order, and are
handled only once the retry is settled (applied or dead-lettered). Other instances go on.

Without it a retried message would be applied after newer changes of its instance: a retried SYNC
applies whatever its revision (old data over a newer SAVE), a retried SAVE after a DELETE recreates
the row. The held messages are unacked deliveries, so there are never more than the channel's
prefetch count of them.
"""

from __future__ import annotations

import json
from collections import deque
from typing import Generic, TypeVar

from app.cqrs.payload import read_body

M = TypeVar("M")
Key = tuple[str, str]


def instance_key(body: bytes) -> Key | None:
    """The instance a body is about; None for a body that is no payload (nothing to order)."""
    raw = read_body(body)
    if isinstance(raw, str) or not isinstance(raw.get("cqrs_id"), str):
        return None
    # The pk as JSON: equal pks compare equal whatever their type on the wire (int, str, list).
    return raw["cqrs_id"], json.dumps(raw.get("instance_pk"), sort_keys=True)


class InstanceOrder(Generic[M]):
    """The instances with a message waiting for its retry, and the messages held behind each."""

    def __init__(self) -> None:
        self._held: dict[Key, deque[M]] = {}

    def busy(self, key: Key | None) -> bool:
        return key is not None and key in self._held

    def hold(self, key: Key, message: M) -> None:
        """Keep ``message`` until the instance's earlier messages are settled."""
        self._held[key].append(message)

    def block(self, key: Key | None) -> None:
        """A message of ``key`` waits for its retry: later ones are held from now on."""
        if key is not None:
            self._held.setdefault(key, deque())

    def next(self, key: Key | None) -> M | None:
        """The next held message of ``key`` (the key stays blocked while it is handled), or None
        when there is none left: the key is free again."""
        if key is None:
            return None
        held = self._held.get(key)
        if not held:
            self._held.pop(key, None)
            return None
        return held.popleft()

    def abandon(self, key: Key | None) -> list[M]:
        """Free ``key`` and return its held messages in order (to be given back to the broker)."""
        if key is None:
            return []
        return list(self._held.pop(key, ()))

    def __len__(self) -> int:
        return sum(len(held) for held in self._held.values())
