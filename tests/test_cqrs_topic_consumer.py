"""The CQRS replica's topic source in this process, its socket a stand-in that records what is sent
(relays/cqrs_topic_consumer.py), and the reconnection loop both sources share
(relays/cqrs_receiver.py): dead letters hold their instance until the last nack, what is logged,
the bounded inbox and the back-off. The replica's database is the real one."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from collections.abc import AsyncIterator, Iterator
from typing import Any, cast

import pytest
from websockets.datastructures import Headers
from websockets.exceptions import InvalidStatus
from websockets.http11 import Response

from app.cqrs.events import CONTENT_TYPE
from app.cqrs.topic import DeadLetterNacks, ack_frame, connection_end, nack_frame
from relays.cqrs_receiver import Ended, Unavailable, reconnecting
from relays.cqrs_topic_consumer import TopicConsumer, _Inbox, _Session
from tests.apps.cqrs_replica import models as replica
from tests.cqrs_replica import new_pk, wire
from tests.protocol import eventually

MAX_REDELIVER = 2


class Socket:
    """What the session sends, in order."""

    def __init__(self) -> None:
        self.sent: list[str] = []
        self.closed: tuple[int, str] | None = None

    async def send(self, frame: str) -> None:
        self.sent.append(frame)

    async def close(self, code: int, reason: str) -> None:
        self.closed = (code, reason)


def delivery(message_id: str, data: dict[str, Any], redeliveries: int = 0) -> str:
    """A frame of the server: a ``cqrs.<cqrs_id>.<signal>`` CloudEvent carrying ``data``."""
    event = {"specversion": "1.0", "id": message_id, "source": "/cqrs", "datacontenttype": CONTENT_TYPE,
             "type": f"cqrs.{data['cqrs_id']}.{str(data['signal_type']).lower()}", "data": data}
    return json.dumps({"messageId": message_id, "payload": base64.b64encode(json.dumps(event).encode()).decode(),
                       "publishTime": "2026-01-02T03:04:05Z", "redeliveryCount": redeliveries})


@pytest.fixture
async def topic() -> AsyncIterator[tuple[TopicConsumer, _Session, Socket]]:
    """A consumer and one session of it on a stand-in socket (its database thread closed after)."""
    consumer = TopicConsumer(topic="cqrs", subscription="replica", url="ws://127.0.0.1:9", token=None)
    socket = Socket()
    session = _Session(cast(Any, socket), DeadLetterNacks(MAX_REDELIVER), "cqrs-replica-DLQ")
    yield consumer, session, socket
    await consumer.receiver.end_session()
    await consumer.receiver.close()


def broken_save(pk: int) -> dict[str, Any]:
    """A SAVE of ``test_author`` ``pk`` that app/cqrs/apply.py dead-letters (no instance_data)."""
    return {"signal_type": "SAVE", "cqrs_id": "test_author", "instance_pk": pk}


async def test_instance_is_held_until_the_dead_letters_last_nack(
        topic: tuple[TopicConsumer, _Session, Socket]) -> None:
    """A dead-lettered A, then B of its instance: B is neither applied nor acked until A's last nack is sent."""
    consumer, session, socket = topic
    pk = new_pk()
    await asyncio.wait_for(consumer._frame(delivery("a", broken_save(pk)), session), 10)
    await asyncio.wait_for(consumer._frame(delivery("b", wire("test_author", pk, 1, name="after A")), session), 10)
    await eventually(lambda: socket.sent == [nack_frame("a")], message="A's first nack")
    await consumer._frame(delivery("a", broken_save(pk), redeliveries=1), session)  # nacked again: not the last
    assert socket.sent == [nack_frame("a")] * 2
    assert not replica.Author.objects.filter(pk=pk).exists(), "B applied before A left for good"
    await consumer._frame(delivery("a", broken_save(pk), redeliveries=2), session)  # the nack that moves it
    await eventually(lambda: len(socket.sent) == 4, message="B acked")
    assert socket.sent == [nack_frame("a")] * 3 + [ack_frame("b")]
    assert replica.Author.objects.get(pk=pk).name == "after A"


async def test_held_deliveries_are_dropped_when_the_session_ends_before_the_last_nack(
        topic: tuple[TopicConsumer, _Session, Socket]) -> None:
    """The connection ends between A's first and last nack: B, held behind A, is neither applied nor acked
    (both come back with the next connection, B behind A)."""
    consumer, session, socket = topic
    pk = new_pk()
    await asyncio.wait_for(consumer._frame(delivery("a", broken_save(pk)), session), 10)
    await asyncio.wait_for(consumer._frame(delivery("b", wire("test_author", pk, 1, name="after A")), session), 10)
    await eventually(lambda: socket.sent == [nack_frame("a")], message="A's first nack")
    await asyncio.wait_for(consumer.receiver.end_session(), 10)
    assert socket.sent == [nack_frame("a")] and len(consumer.receiver.order) == 0
    assert not replica.Author.objects.filter(pk=pk).exists()


async def test_delivery_past_half_its_redeliveries_is_a_warning(
        topic: tuple[TopicConsumer, _Session, Socket], caplog: pytest.LogCaptureFixture) -> None:
    """A delivery redelivered maxRedeliverCount / 2 times or more is a WARNING naming the redeliveries left."""
    consumer, session, socket = topic
    other = {"signal_type": "SAVE", "cqrs_id": "not_replicated_here", "instance_pk": 1}
    with caplog.at_level(logging.DEBUG, "relays.cqrs_topic_consumer"):
        await consumer._frame(delivery("fresh", other, redeliveries=0), session)
        await consumer._frame(delivery("worn", other, redeliveries=1), session)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == ["CQRS consumer: message worn was redelivered 1 times (each connection that ends before it "
                        "is acked counts one): 1 more and the server moves it to cqrs-replica-DLQ unapplied"]
    assert socket.sent == [ack_frame("fresh"), ack_frame("worn")]


def refused(status: int) -> InvalidStatus:
    return InvalidStatus(Response(status, "refused", Headers(), b'{"error": "subscription held by another"}'))


def test_standby_refusals_after_the_first_are_info() -> None:
    """A 409 is a WARNING, the 409s right after it INFO; another refusal in between makes the next 409 a WARNING."""
    consumer = TopicConsumer(topic="cqrs", subscription="replica", url="ws://127.0.0.1:9", token=None)
    levels = []
    for status in (409, 409, 409, 403, 409):
        trouble = consumer._unavailable(refused(status))
        assert trouble is not None
        levels.append(trouble.level)
    assert levels == [logging.WARNING, logging.INFO, logging.INFO, logging.WARNING, logging.WARNING]


def test_refused_400_names_the_prefetch_count() -> None:
    """A 400 refusal says what most likely caused it: CQRS_PREFETCH_COUNT above the server's UNACKED_PER_CONNECTION."""
    consumer = TopicConsumer(topic="cqrs", subscription="replica", url="ws://127.0.0.1:9", token=None)
    trouble = consumer._unavailable(refused(400))
    assert trouble is not None
    assert "CQRS_PREFETCH_COUNT" in trouble.reason and "UNACKED_PER_CONNECTION" in trouble.reason


async def test_token_over_plain_ws_to_another_host_is_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    """A consumer sending its token over ws:// to a host that is not this one warns once, at its start."""
    consumer = TopicConsumer(topic="cqrs", subscription="replica", url="ws://192.0.2.1:9", token="k3y")
    with caplog.at_level(logging.WARNING, "relays.cqrs_topic_consumer"):
        running = asyncio.create_task(consumer.run())
        try:
            await eventually(lambda: any("unencrypted" in r.getMessage() for r in caplog.records))
        finally:
            running.cancel()
            await asyncio.wait({running})
    [line] = [r.getMessage() for r in caplog.records if "unencrypted" in r.getMessage()]
    assert "192.0.2.1" in line and "wss://" in line and "k3y" not in line


async def test_give_back_closes_the_connection_and_says_so() -> None:
    """Giving back closes with 1000; the session's end then says the replica closed it, not the server."""
    socket = Socket()
    session = _Session(cast(Any, socket), DeadLetterNacks(MAX_REDELIVER), "cqrs-replica-DLQ")
    await session.give_back([])
    assert socket.closed is not None and socket.closed[0] == 1000 and session.gave_back
    assert connection_end(session.gave_back, 1000, "unsettled messages given back").startswith("closed the connection")
    assert connection_end(False, 1011, "evicted") == "the server closed the connection (1011 evicted)"


# --- the inbox ------------------------------------------------------------------------------------------


async def test_inbox_holds_back_the_reader_when_full() -> None:
    """Past its bound a put waits until a get made room; a frame larger than the bound is taken alone."""
    inbox = _Inbox(10)
    await inbox.put("a" * 6)
    blocked = asyncio.create_task(inbox.put("b" * 6))
    done, _ = await asyncio.wait({blocked}, timeout=0.1)
    assert not done and inbox.chars == 6
    assert await inbox.get() == "a" * 6
    await asyncio.wait_for(blocked, 5)
    assert await inbox.get() == "b" * 6
    await asyncio.wait_for(inbox.put("c" * 50), 5)  # empty: taken whatever its size
    inbox.end()
    assert [await inbox.get(), await inbox.get()] == ["c" * 50, None]


# --- reconnecting -------------------------------------------------------------------------------------


@pytest.fixture
def quick_backoff(settings: Any) -> Iterator[None]:
    settings.CQRS_RECONNECT_BASE_S = 0.001
    settings.CQRS_RECONNECT_STABLE_S = 3600.0
    yield


async def reconnect_lines(outcomes: list[bool], caplog: pytest.LogCaptureFixture) -> list[str]:
    """The WARNINGs of ``reconnecting`` over sessions that return at once, having received or not."""
    left = list(outcomes)
    finished = asyncio.Event()

    async def session() -> Ended:
        if not left:
            finished.set()
            await asyncio.Event().wait()
        return Ended("closed at once", left.pop(0))

    def unavailable(error: BaseException) -> Unavailable | None:
        return None

    with caplog.at_level(logging.WARNING, "relays.cqrs_receiver"):
        loop = asyncio.create_task(reconnecting(session, unavailable))
        try:
            await asyncio.wait_for(finished.wait(), 10)
        finally:
            loop.cancel()
            await asyncio.wait({loop})
    return [r.getMessage() for r in caplog.records if r.name == "relays.cqrs_receiver"]


async def test_sessions_closed_at_once_back_off(quick_backoff: None, caplog: pytest.LogCaptureFixture) -> None:
    """Sessions that end at once without receiving anything count as failures in a row (growing back-off)."""
    assert await reconnect_lines([False, False, False], caplog) == [
        f"CQRS consumer: closed at once, reconnecting ({n} in a row)" for n in (1, 2, 3)]


async def test_session_that_received_resets_the_back_off(quick_backoff: None,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    """A session that received something starts the back-off again from the shortest."""
    assert await reconnect_lines([False, False, True, False], caplog) == [
        "CQRS consumer: closed at once, reconnecting (1 in a row)",
        "CQRS consumer: closed at once, reconnecting (2 in a row)",
        "CQRS consumer: closed at once, reconnecting",
        "CQRS consumer: closed at once, reconnecting (1 in a row)"]
