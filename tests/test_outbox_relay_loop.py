"""The relay loop (relays/outbox.py) with an in-memory target: no broker; what a stop in the middle of
overlapping batches leaves behind."""

from __future__ import annotations

import asyncio
import gc
from dataclasses import dataclass, field

import pytest
from django.db import OperationalError
from django.test import override_settings

from app.outbox import claims
from app.outbox.cloudevents import Outbound
from app.outbox.dispatch import TargetPool
from app.outbox.emit import emit
from app.outbox.models import OutboxEvent, Status
from app.outbox.targets import PublishDeferred, Target
from relays import outbox as outbox_relay
from relays.outbox import OutboxRelay
from tests.outbox import running_relays
from tests.protocol import eventually


@dataclass
class HeldTarget:
    """Holds the events of ``held`` types for good, nacks those of ``deferred`` types, publishes the rest."""

    name: str = "memory"
    deferred: set[str] = field(default_factory=set)
    held: set[str] = field(default_factory=set)
    published: list[int] = field(default_factory=list)

    async def connect(self) -> None:
        pass

    async def publish(self, event: Outbound) -> None:
        if event.type in self.deferred:
            raise PublishDeferred("nacked")
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


async def test_a_later_batch_done_first_does_not_let_a_key_overtake_its_nacked_event(empty_outbox: None) -> None:
    """Key k0's first event nacked in a batch still publishing (another key hangs), the batch after it
    (k0's second event, released behind the nack) done first: k0's second event is not published before
    its first."""
    target = HeldTarget(deferred={"com.example.nacked"}, held={"com.example.hangs"})

    def factory(name: str) -> Target:
        return target

    def one(key: str, type: str = "com.example.ok") -> OutboxEvent:
        return emit(type, "/tests/relay-loop", key=key, target="topic")

    # A back-off long enough that the nacked event is not tried again within the test.
    with override_settings(OUTBOX_BACKOFF_BASE_S=60.0, OUTBOX_BACKOFF_MAX_S=60.0):
        first, _, second, quick = one("k0", "com.example.nacked"), one("kx", "com.example.hangs"), one("k0"), one("ky")
        async with running_relays(batch_size=2, pool=TargetPool(factory)):
            await eventually(lambda: quick.pk in target.published, 10, "the second batch's other key published")
            # A commit after the second batch is done: whatever the relay claims next is published
            # before this one.
            sentinel = one("kz")
            await eventually(lambda: sentinel.pk in target.published, 10, "an event emitted afterwards published")
    assert second.pk not in target.published
    assert OutboxEvent.objects.get(pk=first.pk).status == Status.RETRY


async def test_stop_mid_publish_leaves_no_unretrieved_exception(
    empty_outbox: None, caplog: pytest.LogCaptureFixture
) -> None:
    """A relay stopped while a batch publishes leaves no future whose exception asyncio logs as never
    retrieved."""
    target = HeldTarget(held={"com.example.hangs"})

    def factory(name: str) -> Target:
        return target

    row = emit("com.example.hangs", "/tests/relay-loop", key="k0", target="topic")
    async with running_relays(batch_size=2, pool=TargetPool(factory)):
        await eventually(
            lambda: OutboxEvent.objects.get(pk=row.pk).status == Status.PROCESSING, 10, "the event claimed"
        )
    gc.collect()
    assert [r.getMessage() for r in caplog.records if "never retrieved" in r.getMessage()] == []


async def test_stop_while_the_database_refuses_the_settlement_still_stops(
    empty_outbox: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A relay stopped mid-publish whose settlement then fails (database gone) still ends, cancelled: the
    failure does not replace the stop request and leave it running."""
    target = HeldTarget(held={"com.example.hangs"})

    def factory(name: str) -> Target:
        return target

    def refused(*args: object, **kwargs: object) -> int:
        raise OperationalError("database gone")

    row = emit("com.example.hangs", "/tests/relay-loop", key="k0", target="topic")
    relay = OutboxRelay(name="refused", batch_size=2, pool=TargetPool(factory))
    running = asyncio.create_task(relay.run())
    try:
        await eventually(
            lambda: OutboxEvent.objects.get(pk=row.pk).status == Status.PROCESSING, 10, "the event claimed"
        )
        monkeypatch.setattr(outbox_relay, "SETTLE_ATTEMPTS", 1)
        monkeypatch.setattr(claims, "settle", refused)
        running.cancel()
        await asyncio.wait({running}, timeout=10)
        assert running.cancelled()
    finally:
        if not running.done():
            running.cancel()
            await asyncio.wait({running}, timeout=10)


async def test_a_claim_whose_answer_is_lost_does_not_let_a_key_overtake_it(
    empty_outbox: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A claim that committed but whose answer was lost (the connection dropped) leaves events the relay
    does not know it holds: a later event of their key is not published before them, and they are
    published, in order, once their claims expire."""
    target = HeldTarget()

    def factory(name: str) -> Target:
        return target

    real = claims.settle_and_claim
    lost: list[int] = []

    def answer_lost(*args: object, **kwargs: object) -> object:
        result = real(*args, **kwargs)  # type: ignore[arg-type]
        events, _ = result  # type: ignore[misc]
        if events and not lost:
            lost.extend(event.pk for event in events)
            raise OperationalError("connection lost before the answer")
        return result

    monkeypatch.setattr(claims, "settle_and_claim", answer_lost)
    with override_settings(OUTBOX_CLAIM_TTL_S=1.0):
        first, second = (emit("com.example.ok", "/tests/relay-loop", key="k0", target="topic") for _ in range(2))
        async with running_relays(batch_size=1, pool=TargetPool(factory)):
            await eventually(lambda: bool(lost), 10, "a claim's answer lost")
            later = emit("com.example.ok", "/tests/relay-loop", key="k0", target="topic")
            await eventually(lambda: later.pk in target.published, 15, "the later event published")
    assert lost == [first.pk]
    assert target.published == [first.pk, second.pk, later.pk]
