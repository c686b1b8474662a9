"""This process's consumer connections per topic, and who gets a message (no I/O).

The hub delivers to local connections directly; nothing here awaits. Fan-out is the DASF default:
every connection of a topic gets every message. Connections of one subscription that asked for
``subscriptionType=Shared`` share the messages round-robin instead.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Protocol


@dataclass(frozen=True, slots=True)
class Delivered:
    """A message as it goes to consumers: serialised once, shared by every connection."""

    text: str
    message_id: str
    # None when the topic's policy stores nothing (there is nothing to ack or replay).
    sequence: int | None


class Subscriber(Protocol):
    principal: str
    subscription: str
    shared: bool

    def offer(self, item: Delivered) -> None: ...

    def grant_consume(self) -> None: ...


@dataclass(slots=True)
class _SharedGroup:
    members: list[Subscriber] = field(default_factory=list)
    turn: int = 0

    def next(self) -> Subscriber:
        self.turn = (self.turn + 1) % len(self.members)
        return self.members[self.turn]


@dataclass(slots=True)
class _TopicSubscribers:
    exclusive: list[Subscriber] = field(default_factory=list)
    shared: dict[str, _SharedGroup] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.exclusive or self.shared)

    def targets(self) -> Iterator[Subscriber]:
        yield from self.exclusive
        for group in self.shared.values():
            yield group.next()


class Hub:
    def __init__(self) -> None:
        self._topics: dict[str, _TopicSubscribers] = {}
        # Connections to topics they may not consume (yet), e.g. a requester's socket on a
        # response topic that exists only once its request is published.
        self._waiting: dict[str, set[Subscriber]] = {}

    def subscribe(self, slug: str, sub: Subscriber) -> None:
        subs = self._topics.setdefault(slug, _TopicSubscribers())
        if sub.shared:
            subs.shared.setdefault(sub.subscription, _SharedGroup()).members.append(sub)
        else:
            subs.exclusive.append(sub)

    def unsubscribe(self, slug: str, sub: Subscriber) -> None:
        self._waiting.get(slug, set()).discard(sub)
        if not self._waiting.get(slug, True):
            del self._waiting[slug]
        subs = self._topics.get(slug)
        if subs is None:
            return
        if sub.shared:
            group = subs.shared.get(sub.subscription)
            if group is not None and sub in group.members:
                group.members.remove(sub)
                if not group.members:
                    del subs.shared[sub.subscription]
        elif sub in subs.exclusive:
            subs.exclusive.remove(sub)
        if not subs:
            del self._topics[slug]

    def wait(self, slug: str, sub: Subscriber) -> None:
        self._waiting.setdefault(slug, set()).add(sub)

    def grant(self, slug: str, principal: str) -> None:
        """``principal`` may now consume ``slug``: attach its waiting connections."""
        for sub in [s for s in self._waiting.get(slug, ()) if s.principal == principal]:
            self._waiting[slug].discard(sub)
            sub.grant_consume()
        if not self._waiting.get(slug, True):
            del self._waiting[slug]

    def has_shared_peer(self, slug: str, sub: Subscriber) -> bool:
        """Another connection of the same shared subscription is already attached."""
        subs = self._topics.get(slug)
        group = subs.shared.get(sub.subscription) if subs else None
        return group is not None and any(m is not sub for m in group.members)

    def publish(self, slug: str, item: Delivered) -> int:
        subs = self._topics.get(slug)
        if not subs:
            return 0
        count = 0
        for sub in list(subs.targets()):
            sub.offer(item)
            count += 1
        return count

    def connection_count(self, slug: str) -> int:
        subs = self._topics.get(slug)
        if not subs:
            return 0
        return len(subs.exclusive) + sum(len(g.members) for g in subs.shared.values())
