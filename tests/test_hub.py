"""The per-process hub: who gets a message, without sockets."""

from __future__ import annotations

from dataclasses import dataclass, field

from app.broker.hub import ANY_TOPIC, Delivered, Hub


@dataclass(eq=False)
class Sub:
    principal: str = "anonymous"
    subscription: str = "s"
    shared: bool = False
    got: list[str] = field(default_factory=list)
    granted: int = 0

    def offer(self, item: Delivered) -> None:
        self.got.append(item.message_id)

    def grant_consume(self) -> None:
        self.granted += 1


def item(n: int) -> Delivered:
    return Delivered(text="{}", message_id=str(n), sequence=n)


def test_fan_out_to_every_exclusive_subscriber():
    """Every plain connection of a topic gets every message."""
    hub, a, b = Hub(), Sub(), Sub()
    hub.subscribe("t", a)
    hub.subscribe("t", b)
    assert hub.publish("t", item(1)) == 2
    assert a.got == b.got == ["1"]


def test_shared_round_robin():
    """Members of one shared subscription take turns."""
    hub, a, b = Hub(), Sub(shared=True), Sub(shared=True)
    hub.subscribe("t", a)
    hub.subscribe("t", b)
    for n in range(4):
        hub.publish("t", item(n))
    assert sorted(a.got + b.got) == ["0", "1", "2", "3"] and len(a.got) == len(b.got) == 2


def test_other_topics_are_untouched():
    """A message reaches only its own topic's subscribers."""
    hub, a = Hub(), Sub()
    hub.subscribe("a", a)
    assert hub.publish("b", item(1)) == 0 and a.got == []


def test_unsubscribe_forgets_the_connection():
    """After unsubscribe nothing is delivered and the topic entry is gone."""
    hub, a = Hub(), Sub(shared=True)
    hub.subscribe("t", a)
    hub.unsubscribe("t", a)
    assert hub.publish("t", item(1)) == 0 and hub.connection_count("t") == 0


def test_grant_attaches_only_that_principal():
    """Waiting connections of the granted principal are attached; others keep waiting."""
    hub, mine, theirs = Hub(), Sub(principal="user:1"), Sub(principal="user:2")
    hub.wait("t", mine)
    hub.wait("t", theirs)
    hub.grant("t", "user:1")
    assert (mine.granted, theirs.granted) == (1, 0)
    hub.grant("t", "user:1")
    assert mine.granted == 1


def test_shared_groups_are_per_principal():
    """Two principals using the same shared subscription name each get every message."""
    hub, a, b = Hub(), Sub(principal="user:1", shared=True), Sub(principal="user:2", shared=True)
    hub.subscribe("t", a)
    hub.subscribe("t", b)
    hub.publish("t", item(1))
    assert a.got == b.got == ["1"]


def test_every_topic_watchers_skip_response_topic_changes():
    """Watchers of every topic (status viewers) hear of source topic changes, not response topics'."""
    hub, viewer, producer = Hub(), Sub(), Sub()
    hub.watch(ANY_TOPIC, viewer)
    hub.watch("t", producer)
    assert hub.connections("t") == [producer, viewer]
    assert hub.connections("t", every_topic=False) == [producer]


def test_subscribing_twice_delivers_once():
    """A subscriber attached twice is offered each message once, and one unsubscribe detaches it."""
    hub, a = Hub(), Sub()
    hub.subscribe("t", a)
    hub.subscribe("t", a)
    hub.publish("t", item(1))
    hub.unsubscribe("t", a)
    assert a.got == ["1"] and hub.topics() == []


def test_shared_member_subscribing_twice_is_one_member():
    """A shared subscription's member attached twice takes one turn, and one unsubscribe detaches it."""
    hub, a, b = Hub(), Sub(shared=True), Sub(shared=True)
    for sub in (a, a, b):
        hub.subscribe("t", sub)
    for n in range(4):
        hub.publish("t", item(n))
    hub.unsubscribe("t", a)
    assert len(a.got) == len(b.got) == 2 and hub.subscribers("t") == [b]
