"""Publishing a claimed batch (app/outbox/dispatch.py) with an in-memory target: no broker, no loop
of the relay, just the order and failure rules."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from django.utils import timezone

from app.outbox.claims import Settlement
from app.outbox.cloudevents import Outbound
from app.outbox.dispatch import KeyChains, TargetPool, publish_batch
from app.outbox.targets import PublishDeferred, PublishRejected, Target, TargetUnavailable


@dataclass
class MemoryTarget:
    """Records what it publishes; refuses or fails on the event types it is told to."""

    name: str = "memory"
    refuse: set[str] = field(default_factory=set)
    down: set[str] = field(default_factory=set)
    defer: set[str] = field(default_factory=set)
    connects: int = 0
    published: list[int] = field(default_factory=list)

    async def connect(self) -> None:
        self.connects += 1

    async def publish(self, event: Outbound) -> None:
        if event.type in self.refuse:
            raise PublishRejected("refused")
        if event.type in self.down:
            raise TargetUnavailable("gone")
        if event.type in self.defer:
            raise PublishDeferred("nacked")
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


@dataclass
class GatedTarget(MemoryTarget):
    """A MemoryTarget whose publishes of ``held`` types wait until ``gate`` opens."""

    held: set[str] = field(default_factory=set)
    gate: asyncio.Event = field(default_factory=asyncio.Event)

    async def publish(self, event: Outbound) -> None:
        if event.type in self.held:
            await self.gate.wait()
        await super().publish(event)


async def test_later_batch_waits_for_its_keys_earlier_batch() -> None:
    """Batches in flight together: a key's event of the second batch goes after its first-batch
    event; another key's event of the second batch does not wait for it."""
    target = GatedTarget(held={"slow"})
    chains, pool = KeyChains(), _pool(target)
    first, second = Settlement(), Settlement()
    one = chains.start([_event(1, "a", "slow")], pool, first)
    two = chains.start([_event(2, "a"), _event(3, "b")], pool, second)
    async with asyncio.timeout(5):
        await two.by_key["b"]
    assert target.published == [3] and not two.by_key["a"].done()
    target.gate.set()
    async with asyncio.timeout(5):
        await asyncio.gather(one.done, two.done)
    assert target.published == [3, 1, 2]
    assert (first.published, sorted(second.published)) == ([1], [2, 3])


async def test_stopped_key_releases_its_events_of_later_batches() -> None:
    """A key refused in the first batch has its events of the second batch released, not published."""
    target = MemoryTarget(refuse={"bad"})
    chains, pool = KeyChains(), _pool(target)
    first, second = Settlement(), Settlement()
    one = chains.start([_event(1, "a", "bad"), _event(2, "b")], pool, first)
    two = chains.start([_event(3, "a"), _event(4, "b")], pool, second)
    async with asyncio.timeout(5):
        await asyncio.gather(one.done, two.done)
    assert target.published == [2, 4]
    assert [pk for pk, _ in first.failed] == [1]
    assert second.released == [(3, "waiting for event 1 of its key")]


async def test_deferred_event_stops_only_its_key_and_keeps_the_target() -> None:
    """A deferred (nacked) event and its key's successors go back; other keys go on; the target stays up."""
    target = MemoryTarget(defer={"nacked"})
    pool = _pool(target)
    settlement = Settlement()
    events = [_event(1, "a"), _event(2, "b"), _event(3, "a", "nacked"), _event(4, "b"), _event(5, "a"), _event(6, "c")]
    await publish_batch(events, pool, settlement)
    assert sorted(target.published) == [1, 2, 4, 6]
    assert [pk for pk, _ in settlement.deferred] == [3]
    assert settlement.released == [(5, "waiting for event 3 of its key")]
    assert not settlement.failed and pool.down() == set() and target.connects == 1
