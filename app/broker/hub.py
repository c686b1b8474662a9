"""This process's consumer connections per topic, and who gets a message (no I/O).

The hub delivers to local connections directly; nothing here awaits. Fan-out is the DASF default:
every connection of a topic gets every message. Connections of one subscription that asked for
``subscriptionType=Shared`` share the messages round-robin instead.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

# Watchers of this name are told of rights changes on every topic (it can be no topic's name).
ANY_TOPIC = "*"


@dataclass(slots=True, eq=False)
class Delivered:
    """A message as it goes to consumers: serialised once, shared by every connection."""

    text: str
    message_id: str
    # None when the topic's policy stores nothing (there is nothing to ack or replay).
    sequence: int | None
    # Pulsar's delayed delivery: Shared and Key_Shared subscriptions hold the message back until
    # then (Message.deliver_at); None for every message published without deliverAt/deliverAfterMs.
    deliver_at: datetime | None = None
    _first_delivery: str | None = field(default=None, repr=False)

    def first_delivery_text(self) -> str:
        """The frame as the Pulsar paths send it the first time: with ``"redeliveryCount":0``.
        Spliced before the closing brace (``text`` is a JSON object the broker wrote, without that
        field), built at most once per message and shared by every Pulsar-path consumer."""
        if self._first_delivery is None:
            self._first_delivery = self.text[:-1] + ',"redeliveryCount":0}'
        return self._first_delivery


class Watcher(Protocol):
    """Any connection that caches rights on a topic."""

    principal: str

    def recheck_rights(self) -> None: ...


class Subscriber(Watcher, Protocol):
    subscription: str
    shared: bool

    def offer(self, item: Delivered) -> None: ...

    def grant_consume(self) -> None: ...

    def resync(self, database_last: int) -> None: ...


def _shared_key(sub: Subscriber) -> tuple[str, str]:
    # Per principal: two users picking the same subscription name must not share messages
    # (one's ack would remove the other's message).
    return (sub.principal, sub.subscription)


@dataclass(slots=True)
class _SharedGroup:
    members: list[Subscriber] = field(default_factory=list)
    turn: int = 0

    def next(self) -> Subscriber:
        self.turn = (self.turn + 1) % len(self.members)
        return self.members[self.turn]


@dataclass(slots=True)
class _TopicSubscribers:
    # A dict as an ordered set: subscribing twice keeps one entry (one offer per message).
    exclusive: dict[Subscriber, None] = field(default_factory=dict)
    shared: dict[tuple[str, str], _SharedGroup] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.exclusive or self.shared)

    def targets(self) -> Iterator[Subscriber]:
        yield from self.exclusive
        for group in self.shared.values():
            yield group.next()


class Hub:
    def __init__(self, on_presence: Callable[[str, bool], None] | None = None) -> None:
        self._topics: dict[str, _TopicSubscribers] = {}
        # Connections to topics they may not consume (yet), e.g. a requester's socket on a
        # response topic that exists only once its request is published.
        self._waiting: dict[str, set[Subscriber]] = {}
        # Producers, told when rights on their topic change.
        self._watchers: dict[str, set[Watcher]] = {}
        # Called with (slug, True) when this process gets its first consumer of a topic and
        # (slug, False) when the last one leaves: the backplane joins / leaves the topic's group.
        self._on_presence = on_presence
        self._present: set[str] = set()

    def _presence_changed(self, slug: str) -> None:
        present = slug in self._topics or slug in self._waiting
        if present == (slug in self._present):
            return
        if present:
            self._present.add(slug)
        else:
            self._present.discard(slug)
        if self._on_presence is not None:
            self._on_presence(slug, present)

    def watch(self, slug: str, watcher: Watcher) -> None:
        self._watchers.setdefault(slug, set()).add(watcher)

    def unwatch(self, slug: str, watcher: Watcher) -> None:
        watchers = self._watchers.get(slug)
        if watchers is not None:
            watchers.discard(watcher)
            if not watchers:
                del self._watchers[slug]

    def connections(self, slug: str, *, every_topic: bool = True) -> list[Watcher]:
        """Every local connection that holds rights on ``slug``, and with ``every_topic`` those that
        watch every topic."""
        found: list[Watcher] = list(self._watchers.get(slug, ()))
        if every_topic:
            found.extend(self._watchers.get(ANY_TOPIC, ()))
        found.extend(self._waiting.get(slug, ()))
        found.extend(self.subscribers(slug))
        return found

    def subscribers(self, slug: str) -> list[Subscriber]:
        subs = self._topics.get(slug)
        if not subs:
            return []
        return [*subs.exclusive, *(m for g in subs.shared.values() for m in g.members)]

    def topics(self) -> list[str]:
        """Topics with attached consumers in this process."""
        return list(self._topics)

    def subscribe(self, slug: str, sub: Subscriber) -> None:
        """Attach ``sub`` to ``slug``; attaching it again changes nothing."""
        subs = self._topics.setdefault(slug, _TopicSubscribers())
        if sub.shared:
            group = subs.shared.setdefault(_shared_key(sub), _SharedGroup())
            if sub not in group.members:  # one subscription's connections: a short list
                group.members.append(sub)
        else:
            subs.exclusive[sub] = None
        self._presence_changed(slug)

    def unsubscribe(self, slug: str, sub: Subscriber) -> None:
        self._waiting.get(slug, set()).discard(sub)
        if not self._waiting.get(slug, True):
            del self._waiting[slug]
        subs = self._topics.get(slug)
        if subs is None:
            self._presence_changed(slug)
            return
        if sub.shared:
            group = subs.shared.get(_shared_key(sub))
            if group is not None and sub in group.members:
                group.members.remove(sub)
                if not group.members:
                    del subs.shared[_shared_key(sub)]
        else:
            subs.exclusive.pop(sub, None)
        if not subs:
            del self._topics[slug]
        self._presence_changed(slug)

    def wait(self, slug: str, sub: Subscriber) -> None:
        self._waiting.setdefault(slug, set()).add(sub)
        self._presence_changed(slug)

    def is_waiting(self, slug: str, sub: Subscriber) -> bool:
        return sub in self._waiting.get(slug, ())

    def unwait(self, slug: str, sub: Subscriber) -> None:
        waiting = self._waiting.get(slug)
        if waiting is not None:
            waiting.discard(sub)
            if not waiting:
                del self._waiting[slug]
        self._presence_changed(slug)

    def grant(self, slug: str, principal: str) -> None:
        """``principal`` may now consume ``slug``: attach its waiting connections."""
        for sub in [s for s in self._waiting.get(slug, ()) if s.principal == principal]:
            self._waiting[slug].discard(sub)
            sub.grant_consume()
        if not self._waiting.get(slug, True):
            del self._waiting[slug]
        self._presence_changed(slug)

    def has_shared_peer(self, slug: str, sub: Subscriber) -> bool:
        """Another connection of the same shared subscription is already attached."""
        subs = self._topics.get(slug)
        group = subs.shared.get(_shared_key(sub)) if subs else None
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
        return len(self.subscribers(slug))
