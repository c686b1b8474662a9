"""Replay reads of attaching consumers served together (app/broker/replays.py), against the real database."""

from __future__ import annotations

import asyncio
import threading
import uuid

import pytest
from django.db import connection
from django.utils import timezone

from app.broker import services
from app.broker.models import Message, Topic
from app.broker.policy import StorePolicy
from app.broker.replays import MAX_REQUESTS, ReplayReads
from app.broker.services import NewMessage, ReplayRequest, outstanding_pages, write_batch
from tests.databases import BACKEND
from tests.protocol import make_topic

TIMEOUT_S = 10.0


def stored_topic(count: int) -> Topic:
    """A cache topic holding ``count`` messages."""
    topic = Topic.objects.get(slug=make_topic(policy="cache", dasf=False))
    write_batch([NewMessage(topic.pk, uuid.uuid4(), None, "anonymous", {}, "cGF5", None, timezone.now(), "{}")
                 for _ in range(count)])
    return topic


def request(topic: Topic, principal: str = "anonymous", **fields: object) -> ReplayRequest:
    return ReplayRequest(topic.pk, StorePolicy.CACHE, principal, **fields)  # type: ignore[arg-type]


def test_equal_requests_in_one_read_each_count_their_redelivery():
    """Two equal requests served together count two redeliveries, as two reads of their own would."""
    topic = stored_topic(2)
    first, second = outstanding_pages([request(topic), request(topic)])
    assert [r.redelivery_count for r in first.replays] == [1, 1]
    assert [r.redelivery_count for r in second.replays] == [2, 2]


def test_each_request_gets_its_own_page():
    """Requests for other positions and principals in one read get their own pages."""
    topic = stored_topic(3)
    whole, rest, none = outstanding_pages([
        request(topic, redelivery=False), request(topic, after=2, redelivery=False),
        ReplayRequest(topic.pk, StorePolicy.DISABLED, "anonymous"),
    ])
    assert [r.sequence for r in whole.replays] == [1, 2, 3] and whole.last_sequence == 3
    assert [r.sequence for r in rest.replays] == [3]
    assert none.replays == [] and none.last_sequence == 0


async def test_requests_arriving_together_share_a_transaction():
    """Consumers attaching at once are read for together, MAX_REQUESTS at a time."""
    topic = await asyncio.to_thread(stored_topic, 1)
    reads = ReplayReads()
    async with asyncio.timeout(TIMEOUT_S):
        pages = await asyncio.gather(*(reads.read(request(topic, redelivery=False))
                                       for _ in range(2 * MAX_REQUESTS + 1)))
    assert reads.reads == 3
    assert {tuple(r.sequence for r in page.replays) for page in pages} == {(1,)}


async def test_a_cancelled_waiter_drops_out_and_the_others_are_served():
    """A consumer gone while it waited is not read for; the one beside it still gets its page."""
    topic = await asyncio.to_thread(stored_topic, 1)
    reads = ReplayReads()
    first = asyncio.ensure_future(reads.read(request(topic, redelivery=False)))
    gone = asyncio.ensure_future(reads.read(request(topic, "user:gone", redelivery=False)))
    kept = asyncio.ensure_future(reads.read(request(topic, "user:kept", redelivery=False)))
    await asyncio.sleep(0)  # all three queued; the first read is running
    gone.cancel()
    async with asyncio.timeout(TIMEOUT_S):
        await first
        page = await kept
    assert [r.sequence for r in page.replays] == [1] and gone.cancelled()


async def test_a_failed_read_fails_each_waiter_and_the_next_read_works(monkeypatch: pytest.MonkeyPatch):
    """When the database fails a read, each waiter gets the error; later requests are read again."""
    topic = await asyncio.to_thread(stored_topic, 1)
    reads = ReplayReads()

    def broken(requests: list[ReplayRequest]) -> list[services.ReplayPage]:
        raise RuntimeError("database gone")

    monkeypatch.setattr(services, "outstanding_pages", broken)
    async with asyncio.timeout(TIMEOUT_S):
        results = await asyncio.gather(reads.read(request(topic)), reads.read(request(topic)),
                                       return_exceptions=True)
    assert [str(result) for result in results] == ["database gone"] * 2
    monkeypatch.undo()
    async with asyncio.timeout(TIMEOUT_S):
        page = await reads.read(request(topic, redelivery=False))
    assert [r.sequence for r in page.replays] == [1]


async def test_stop_cancels_the_waiting_requests():
    """Stopping ends the read in progress and cancels every request, leaving no task behind."""
    topic = await asyncio.to_thread(stored_topic, 1)
    reads = ReplayReads()
    waiters = [asyncio.ensure_future(reads.read(request(topic))) for _ in range(3)]
    await asyncio.sleep(0)
    async with asyncio.timeout(TIMEOUT_S):
        await reads.stop()
        done = await asyncio.gather(*waiters, return_exceptions=True)
    assert all(isinstance(result, asyncio.CancelledError) for result in done)
    assert not [t for t in asyncio.all_tasks() if t.get_name() == "replay-reads"]


def delete_elsewhere(message_pk: int) -> None:
    """Delete a message on another connection, committed (as another principal's cache ack does)."""
    def delete() -> None:
        try:
            Message.objects.filter(pk=message_pk).delete()
        finally:
            connection.close()

    thread = threading.Thread(target=delete)
    thread.start()
    thread.join(TIMEOUT_S)
    assert not thread.is_alive(), "the delete did not finish"


@pytest.mark.skipif(BACKEND != "postgres", reason="on SQLite the replay's transaction holds the write lock")
def test_a_message_acked_away_while_its_redelivery_is_counted_is_left_out(monkeypatch: pytest.MonkeyPatch):
    """A message deleted (a cache ack) while its redelivery is counted makes no error: the page is read again."""
    topic = stored_topic(2)
    first_pk = Message.objects.filter(topic=topic).order_by("sequence").values_list("pk", flat=True)[0]
    count = services._count_redelivery
    deleted: list[int] = []

    def count_after_a_delete(message_pks: list[int], principal: str) -> dict[int, int]:
        if not deleted:
            deleted.append(first_pk)
            delete_elsewhere(first_pk)
        return count(message_pks, principal)

    monkeypatch.setattr(services, "_count_redelivery", count_after_a_delete)
    page = outstanding_pages([request(topic)])[0]
    assert [(r.sequence, r.redelivery_count) for r in page.replays] == [(2, 1)]
