"""Publishing a claimed batch (app/outbox/dispatch.py) with an in-memory target: no broker, no loop
of the relay, just the order and failure rules."""

from __future__ import annotations

from dataclasses import dataclass, field

from django.utils import timezone

from app.outbox.claims import Settlement
from app.outbox.cloudevents import Outbound
from app.outbox.dispatch import TargetPool, publish_batch
from app.outbox.targets import PublishRejected, Target, TargetUnavailable


@dataclass
class MemoryTarget:
    """Records what it publishes; refuses or fails on the event types it is told to."""

    name: str = "memory"
    refuse: set[str] = field(default_factory=set)
    down: set[str] = field(default_factory=set)
    connects: int = 0
    published: list[int] = field(default_factory=list)

    async def connect(self) -> None:
        self.connects += 1

    async def publish(self, event: Outbound) -> None:
        if event.type in self.refuse:
            raise PublishRejected("refused")
        if event.type in self.down:
            raise TargetUnavailable("gone")
        self.published.append(event.pk)

    async def close(self) -> None:
        pass


def _event(pk: int, key: str | None, type: str = "ok", target: str = "memory") -> Outbound:
    return Outbound(pk=pk, id=str(pk), source="/s", type=type, time=timezone.now(), datacontenttype=None,
                    dataschema=None, subject=None, data=None, key=key, target=target, destination="")


def _pool(target: MemoryTarget) -> TargetPool:
    def factory(name: str) -> Target:
        return target

    return TargetPool(factory)


async def test_refused_event_stops_only_its_key() -> None:
    """A refused event fails, its successors are released, other keys are published in order."""
    target = MemoryTarget(refuse={"bad"})
    events = [_event(1, "a"), _event(2, "b", "bad"), _event(3, "a"), _event(4, "b"), _event(5, None)]
    settlement = Settlement()
    await publish_batch(events, _pool(target), settlement)
    assert sorted(target.published) == [1, 3, 5]  # keys go side by side
    assert target.published.index(1) < target.published.index(3)  # a key in order
    assert [pk for pk, _ in settlement.failed] == [2]
    assert settlement.released == [(4, "waiting for event 2 of its key")]


async def test_unreachable_target_releases_the_rest_and_backs_off() -> None:
    """An unreachable target releases the key's remaining events and is not tried again at once."""
    target = MemoryTarget(down={"gone"})
    pool = _pool(target)
    settlement = Settlement()
    await publish_batch([_event(1, "a", "gone"), _event(2, "a")], pool, settlement)
    assert target.published == [] and not settlement.failed
    assert [pk for pk, _ in settlement.released] == [1, 2]
    assert pool.down() == {"memory"}
    again = Settlement()
    await publish_batch([_event(3, "c")], pool, again)
    assert target.connects == 1 and [pk for pk, _ in again.released] == [3]
