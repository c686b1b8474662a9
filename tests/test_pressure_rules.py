"""Back-pressure decisions and accounting without sockets: what a pending message is counted for,
when a producer waits, the writer's count of pending bytes, and the backplane's bound in bytes."""

from __future__ import annotations

import asyncio
import sys
import uuid
from typing import Any

from django.utils import timezone

from app import codec
from app.broker.backplane import BATCH_BYTES, LayerBackplane
from app.broker.commit import GroupCommitWriter
from app.broker.hub import Delivered
from app.broker.pressure import PARSED_JSON_BYTES_PER_CHAR, held_bytes, must_wait
from app.broker.services import NewMessage
from tests.protocol import eventually

MIB = 1024 * 1024


def message(payload: str | None, properties: Any = None, context: Any = 1) -> NewMessage:
    """A pending message as the producer builds it (its frame holds everything it was sent)."""
    properties = {} if properties is None else properties
    frame = codec.dumps({"payload": payload, "properties": properties, "context": context,
                         "messageId": str(uuid.uuid4()), "publishTime": timezone.now().isoformat()})
    return NewMessage(topic_id=1, message_id=uuid.uuid4(), producer_id=None, producer_principal="anonymous",
                      properties=properties, payload=payload, context=context, publish_time=timezone.now(),
                      frame=frame)


def test_big_payload_counts_its_frame_and_payload():
    """A ~1 MiB payload is counted twice (frame and payload), plus a little for the rest."""
    op = message("p" * MIB)
    size = held_bytes(op)
    assert 2 * MIB < size < 2 * MIB + 10 * 1024


def test_wide_characters_count_their_memory():
    """A payload of 4-byte characters counts four bytes each, not one."""
    assert held_bytes(message("\U0001f600" * MIB)) > 8 * MIB


def test_properties_count_at_the_worst_parsed_rate():
    """Properties of many small values count as much as parsing them can take (empty objects)."""
    properties = {"a": [{} for _ in range(100_000)]}
    op = message(None, properties)
    assert held_bytes(op) >= PARSED_JSON_BYTES_PER_CHAR * 3 * 100_000
    assert held_bytes(op) >= sys.getsizeof(op.frame) + 100_000 * sys.getsizeof({})


def test_string_context_counts_like_a_payload():
    """A long string context is counted by its memory, not at the parsed-JSON rate."""
    small, big = held_bytes(message(None)), held_bytes(message(None, context="c" * MIB))
    assert 2 * MIB < big - small < 2 * MIB + 1024


def test_nothing_pending_never_waits():
    """A producer with nothing pending takes its next frame, however full the writer."""
    assert not must_wait(0, 10, 10**9, 10)


def test_over_its_own_limit_a_producer_waits():
    """Past PRODUCER_PENDING_BYTES a producer waits; at the limit it does not."""
    assert must_wait(11, 10, 11, 100)
    assert not must_wait(10, 10, 10, 100)


def test_over_the_writer_limit_a_producer_with_pending_bytes_waits():
    """Past WRITE_QUEUE_BYTES every producer with something pending waits."""
    assert must_wait(1, 10, 101, 100)
    assert not must_wait(1, 10, 100, 100)


async def test_writer_counts_pending_bytes_until_the_commit():
    """The writer holds an op's bytes until its commit, and its callback already sees them gone."""
    release = asyncio.Event()
    seen: list[int] = []

    def apply(ops):
        return list(ops)

    writer = GroupCommitWriter(apply=apply, limit_bytes=100)
    writer.submit(1, lambda _: seen.append(writer.pending_bytes), 60)
    writer.submit(2, lambda _: (seen.append(writer.pending_bytes), release.set()), 50)
    assert writer.pending_bytes == 110
    await asyncio.wait_for(release.wait(), 5)
    assert writer.pending_bytes == 0 and seen == [0, 0]
    await writer.stop()


async def test_stopped_writer_counts_nothing():
    """An op refused by a stopped writer is not counted as pending."""
    writer = GroupCommitWriter(apply=lambda ops: list(ops))
    await writer.stop()
    results: list[object] = []
    writer.submit(1, results.append, 1000)
    assert writer.pending_bytes == 0 and len(results) == 1


class StalledLayer:
    """A channel layer whose sends wait until released, and that records what was published."""

    def __init__(self) -> None:
        self.released = asyncio.Event()
        self.published: list[dict[str, Any]] = []

    async def group_add(self, group: str, channel: str) -> None:
        return None

    async def group_send(self, group: str, message: dict[str, Any]) -> None:
        await self.released.wait()
        self.published.append(message)


def deliver(backplane: LayerBackplane, n: int, size: int) -> None:
    backplane.deliver("t", Delivered("x" * size, str(n), n))


def sequences(messages: list[dict[str, Any]]) -> list[int]:
    flat = [m for batch in messages for m in (batch["messages"] if batch["type"] == "broker.batch" else [batch])]
    return [m["sequence"] for m in flat]


def test_backplane_drops_the_oldest_beyond_its_bytes():
    """Deliveries waiting for Redis beyond the byte bound drop the oldest; the newest stays."""
    backplane = LayerBackplane(StalledLayer(), limit_bytes=3 * MIB)
    for n in range(10):
        deliver(backplane, n, MIB)
    assert backplane.queued_bytes <= 3 * MIB and backplane.dropped == 8
    huge = LayerBackplane(StalledLayer(), limit_bytes=MIB)
    deliver(huge, 0, 4 * MIB)
    assert huge.dropped == 0


async def test_backplane_batches_are_bounded_in_bytes_and_never_dropped_in_flight():
    """A PUBLISH carries at most BATCH_BYTES (or one message); trimming never drops the batch being sent."""
    layer = StalledLayer()
    backplane = LayerBackplane(layer, limit_bytes=4 * BATCH_BYTES)
    task = asyncio.create_task(backplane._send_loop())
    try:
        for n in range(8):
            deliver(backplane, n, BATCH_BYTES // 3)
        await asyncio.sleep(0)  # the sender takes its first batch and waits on the layer
        for n in range(8, 40):
            deliver(backplane, n, BATCH_BYTES // 3)
        assert backplane.dropped > 0
        layer.released.set()
        await eventually(lambda: sequences(layer.published)[-1:] == [39], message="the queue sent")
        sent = sequences(layer.published)
        assert sent[:2] == [0, 1] and sent == sorted(sent)
        assert all(len(m.get("messages", [m])) <= 2 for m in layer.published)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


class FailingOnceLayer(StalledLayer):
    """A channel layer whose first send fails (Redis away for a moment)."""

    async def group_send(self, group: str, message: dict[str, Any]) -> None:
        if not self.released.is_set():
            self.released.set()
            raise ConnectionError("redis away")
        self.published.append(message)


async def test_backplane_batch_that_failed_is_sent_again_first():
    """A batch whose PUBLISH failed goes back to the front of the queue and is sent before newer ones."""
    layer = FailingOnceLayer()
    backplane = LayerBackplane(layer)
    task = asyncio.create_task(backplane._send_loop())
    try:
        for n in range(3):
            deliver(backplane, n, 10)
        await eventually(lambda: sequences(layer.published)[-1:] == [2], message="the retry sent")
        assert sequences(layer.published) == [0, 1, 2] and backplane.queued_bytes == 0
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
