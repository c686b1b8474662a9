"""Plain decisions of the reader endpoint (app/pulsar/reader.py, docs/architecture.md 18.5)."""

from __future__ import annotations

import uuid

import pytest
from django.conf import settings
from pydantic import ValidationError

from app.broker.hub import Delivered
from app.pulsar.reader import (
    InFlight,
    Live,
    ReaderParams,
    Start,
    StartPosition,
    WaitingLive,
    history_page_size,
    live_action,
    start_after,
)


def test_defaults_are_latest_and_1000() -> None:
    """Without parameters a reader starts at latest with receiverQueueSize 1000."""
    params = ReaderParams.from_query(b"")
    assert params.start == StartPosition(Start.LATEST) and params.receiverQueueSize == 1000


def test_message_id_read_in_canonical_form() -> None:
    """A message id however spelled becomes the id as delivered."""
    value = uuid.uuid4()
    params = ReaderParams.from_query(f"messageId={str(value).upper()}".encode())
    assert params.messageId == str(value) and params.start == StartPosition(Start.AFTER_MESSAGE, value)


@pytest.mark.parametrize("query", [b"messageId=first", b"receiverQueueSize=0", b"receiverQueueSize=x"])
def test_bad_values_refused(query: bytes) -> None:
    """A messageId that is no position, or a receiverQueueSize below 1 or unreadable, is refused."""
    with pytest.raises(ValidationError):
        ReaderParams.from_query(query)


def test_queue_size_bounded_by_unacked_limit() -> None:
    """receiverQueueSize may be at most UNACKED_PER_CONNECTION."""
    most = settings.UNACKED_PER_CONNECTION
    assert ReaderParams.from_query(f"receiverQueueSize={most}".encode()).receiverQueueSize == most
    with pytest.raises(ValidationError):
        ReaderParams.from_query(f"receiverQueueSize={most + 1}".encode())


def test_start_positions() -> None:
    """earliest starts after 0, latest after the last sequence, an id after its own sequence."""
    assert start_after(StartPosition(Start.EARLIEST), last_sequence=9, message_sequence=None) == 0
    assert start_after(StartPosition(Start.LATEST), last_sequence=9, message_sequence=None) == 9
    named = StartPosition(Start.AFTER_MESSAGE, uuid.uuid4())
    assert start_after(named, last_sequence=9, message_sequence=4) == 4


@pytest.mark.parametrize(("position", "sequence", "credit", "reading", "action"), [
    (5, 6, 1, False, Live.SEND),
    (5, 5, 1, False, Live.SKIP),
    (5, 3, 0, True, Live.SKIP),
    (5, 8, 1, False, Live.READ_LATER),  # a gap: the database has 6 and 7
    (5, 6, 0, False, Live.READ_LATER),  # no credit: read it once acks free some
    (5, 6, 1, True, Live.READ_LATER),  # a history read is under way: it sends it in order
    (0, 1, 1, False, Live.SEND),
], ids=["next", "duplicate", "old", "gap", "no-credit", "reading", "first"])
def test_live_action(position: int, sequence: int, credit: int, reading: bool, action: Live) -> None:
    """A live stored message is sent only when it is the next one, with credit, and no read runs."""
    assert live_action(position, sequence, credit=credit, reading=reading) is action


def test_history_page_never_exceeds_credit() -> None:
    """A history page holds no more than the credit, and at least one message."""
    assert history_page_size(3, 500, 1_000_000, 100) == 3
    assert history_page_size(1000, 500, 1_000_000, 100) == 500
    assert history_page_size(1000, 500, 1000, 100) == 10


def test_in_flight_credit() -> None:
    """Credit is receiverQueueSize minus what is sent and unacked; an unknown ack frees nothing."""
    flight = InFlight(2)
    flight.sent("a")
    flight.sent("b")
    assert flight.credit == 0
    assert not flight.ack("c") and flight.credit == 0
    assert flight.ack("a") and flight.credit == 1
    assert not flight.ack("a")


def test_waiting_live_drops_oldest() -> None:
    """At most ``size`` live messages wait; the oldest is pushed out first and counted."""
    waiting = WaitingLive(2)
    items = [Delivered("{}", str(n), None) for n in range(3)]
    assert waiting.add(items[0]) is None and waiting.add(items[1]) is None
    assert waiting.add(items[2]) is items[0] and waiting.dropped == 1
    assert [waiting.take(), waiting.take(), waiting.take()] == [items[1], items[2], None]
    assert waiting.dropped == 0
