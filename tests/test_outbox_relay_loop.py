"""The relay loop (relays/outbox.py) with an in-memory target: no broker; what a stop in the middle of
overlapping batches leaves behind."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from app.outbox.cloudevents import Outbound
from app.outbox.dispatch import TargetPool
from app.outbox.emit import emit
from app.outbox.models import OutboxEvent, Status
from app.outbox.targets import Target
from tests.outbox import running_relays
from tests.protocol import eventually


@dataclass
class HeldTarget:
    """Publishes at once, except the events of ``held`` types, which wait for good."""

    name: str = "memory"
    held: set[str] = field(default_factory=set)
    published: list[int] = field(default_factory=list)

    async def connect(self) -> None:
        pass

    async def publish(self, event: Outbound) -> None:
        if event.type in self.held:
            await asyncio.Event().wait()
        self.published.append(event.pk)

    async def close(self) -> None:
        pass


async def test_stop_with_batches_in_flight_records_them_and_releases_the_rest(empty_outbox: None) -> None:
    """Stopped while key k0's first event hangs, with three batches in flight (each holding a k0 event
    chained behind it), a relay has recorded every confirmed event as published and handed k0's events
    back; none stays processing."""
    target = HeldTarget(held={"com.example.hangs"})

    def factory(name: str) -> Target:
        return target

    def one(key: str, type: str = "com.example.ok") -> OutboxEvent:
        return emit(type, "/tests/relay-loop", key=key, target="topic")

    held = [one("k0", "com.example.hangs"), one("k0")]
    others = []
    for key in ("k1", "k2", "k3"):
        others.append(one(key))
        held.append(one("k0"))
    async with running_relays(batch_size=2, pool=TargetPool(factory)) as [relay]:
        await eventually(lambda: sorted(target.published) == [row.pk for row in others], 10, "the others published")
    assert not OutboxEvent.objects.filter(status=Status.PROCESSING).exists()
    published = OutboxEvent.objects.filter(status=Status.PUBLISHED).values_list("pk", flat=True)
    assert set(published) == {row.pk for row in others}
    assert relay.published == len(others)
    assert OutboxEvent.objects.get(pk=held[0].pk).last_error == "relay stopped before publishing it"
    assert set(OutboxEvent.objects.filter(pk__in=[row.pk for row in held]).values_list("status", "attempts")) == {
        (Status.PENDING, 0)
    }
