"""The client's decisions without a socket: back-off, consumer ack bookkeeping, producer acks, addresses."""

from __future__ import annotations

import asyncio

import pytest

from switchyard_client.acks import Ledger, OnAck, OnDelivery
from switchyard_client.addresses import Server, TopicName
from switchyard_client.backoff import Backoff
from switchyard_client.errors import SendError
from switchyard_client.frames import ProducerAck
from switchyard_client.link import Dialer
from switchyard_client.producer import Acks, Producer, _Pending

pytestmark = pytest.mark.database_agnostic


def test_backoff_doubles_up_to_its_maximum_within_the_upper_half() -> None:
    """Each delay lies in the upper half of a step that doubles until the maximum."""
    low = Backoff(0.1, 1.0, rand=lambda: 0.0)
    high = Backoff(0.1, 1.0, rand=lambda: 1.0)
    assert [round(low.next_delay(), 3) for _ in range(6)] == [0.05, 0.1, 0.2, 0.4, 0.5, 0.5]
    assert [round(high.next_delay(), 3) for _ in range(6)] == [0.1, 0.2, 0.4, 0.8, 1.0, 1.0]


def test_backoff_reset_starts_again_from_the_initial_delay() -> None:
    """After a connection that worked, the next delay is the first step again."""
    backoff = Backoff(0.1, 10.0, rand=lambda: 1.0)
    for _ in range(5):
        backoff.next_delay()
    backoff.reset()
    assert backoff.next_delay() == pytest.approx(0.1)


def test_backoff_survives_many_attempts() -> None:
    """A server down for days does not overflow the exponent."""
    backoff = Backoff(0.1, 10.0, attempts=10_000, rand=lambda: 1.0)
    assert backoff.next_delay() == 10.0


def test_a_new_delivery_is_surfaced() -> None:
    """A message the application never saw is handed over."""
    assert Ledger().delivered("m") is OnDelivery.SURFACE


def test_an_ack_of_a_message_in_flight_is_sent() -> None:
    """Acking a message delivered on the current connection sends the ack."""
    ledger = Ledger()
    ledger.delivered("m")
    assert ledger.acked("m") is OnAck.SEND


def test_a_redelivery_of_a_held_message_is_not_surfaced_again() -> None:
    """After a reconnect, a message the application holds unacked comes back but is not handed over twice."""
    ledger = Ledger()
    ledger.delivered("m")
    ledger.connection_lost()
    assert ledger.delivered("m") is OnDelivery.HOLD
    assert ledger.acked("m") is OnAck.SEND


def test_an_ack_while_not_in_flight_waits_for_the_redelivery() -> None:
    """An ack made between connections is sent when the broker redelivers the message."""
    ledger = Ledger()
    ledger.delivered("m")
    ledger.connection_lost()
    assert ledger.acked("m") is OnAck.DEFER
    assert ledger.delivered("m") is OnDelivery.ACK


def test_an_ack_lost_with_its_connection_is_sent_again() -> None:
    """A message acked on a connection that then broke is acked again, not surfaced, when it returns."""
    ledger = Ledger()
    ledger.delivered("m")
    assert ledger.acked("m") is OnAck.SEND
    ledger.connection_lost()
    assert ledger.delivered("m") is OnDelivery.ACK


def test_a_redelivery_on_the_same_connection_is_surfaced_again() -> None:
    """A message delivered twice on one connection was taken back by the broker (its ack timeout):
    the application gets it again, and its ack is sent once."""
    ledger = Ledger()
    ledger.delivered("m")
    assert ledger.delivered("m") is OnDelivery.SURFACE
    assert ledger.acked("m") is OnAck.SEND
    assert ledger.acked("m") is OnAck.NONE


def test_a_second_ack_sends_nothing() -> None:
    """Acking a message twice sends one ack."""
    ledger = Ledger()
    ledger.delivered("m")
    ledger.acked("m")
    assert ledger.acked("m") is OnAck.NONE


def test_a_nacked_message_is_surfaced_again_when_redelivered() -> None:
    """A message given back is handed over again on its redelivery."""
    ledger = Ledger()
    ledger.delivered("m")
    assert ledger.nacked("m") is True
    assert ledger.delivered("m") is OnDelivery.SURFACE


def test_acked_ids_are_remembered_within_a_bound() -> None:
    """The memory of acked ids is bounded: the oldest are forgotten."""
    ledger = Ledger(acked_memory=3)
    for name in "abcd":
        ledger.delivered(name)
        ledger.acked(name)
    ledger.connection_lost()
    assert ledger.delivered("a") is OnDelivery.SURFACE
    assert ledger.delivered("d") is OnDelivery.ACK


def _pending(acks: Acks, context: int, message_id: str, resent: bool = False) -> asyncio.Future[str]:
    future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    acks.pending[context] = _Pending("{}", message_id, future, generation=1, resent=resent, context=context)
    return future


async def test_an_ok_ack_resolves_its_send_with_the_id() -> None:
    """An ok ack settles the send with the same context."""
    acks = Acks()
    future = _pending(acks, 7, "id-7")
    acks.settle(ProducerAck(messageId="id-7", context=7, result="ok"))
    assert future.result() == "id-7" and not acks.pending


async def test_an_error_ack_raises_send_error() -> None:
    """An error ack settles the send with SendError carrying the result and message."""
    acks = Acks()
    future = _pending(acks, 1, "id-1")
    acks.settle(ProducerAck(messageId="id-1", context=1, result="send-error:8", errorMsg="no delay here"))
    with pytest.raises(SendError) as raised:
        future.result()
    assert (raised.value.result, raised.value.message) == ("send-error:8", "no delay here")


async def test_a_duplicate_of_a_resent_message_means_it_was_stored() -> None:
    """A message sent again after a reconnect whose id is stored already counts as sent."""
    acks = Acks()
    future = _pending(acks, 1, "id-1", resent=True)
    acks.settle(ProducerAck(messageId="id-1", context=1, result="send-error:duplicate messageId",
                            errorMsg="duplicate messageId"))
    assert future.result() == "id-1"


async def test_a_duplicate_of_a_first_send_is_an_error() -> None:
    """A duplicate id on a message sent once is the broker's refusal, not a success."""
    acks = Acks()
    future = _pending(acks, 1, "id-1")
    acks.settle(ProducerAck(messageId="id-1", context=1, result="send-error:duplicate messageId",
                            errorMsg="duplicate messageId"))
    with pytest.raises(SendError):
        future.result()


async def test_an_ack_nobody_waits_for_is_dropped() -> None:
    """An ack with an unknown or foreign context changes nothing."""
    acks = Acks()
    future = _pending(acks, 1, "id-1")
    acks.settle(ProducerAck(messageId="x", context=99, result="ok"))
    acks.settle(ProducerAck(messageId="x", context="one", result="ok"))
    acks.settle(ProducerAck(messageId="x", context=True, result="ok"))
    assert not future.done() and list(acks.pending) == [1]


async def test_a_send_cancelled_as_its_ack_comes_is_cancelled() -> None:
    """A cancelled send raises CancelledError even when its ack came in the same loop iteration."""
    producer = Producer(Dialer({}), "ws://127.0.0.1:9/unused", "t", send_timeout_s=30)
    sending = asyncio.create_task(producer.send(b"x"))
    await asyncio.sleep(0)  # the send is submitted (no connection: nothing goes out) and waits for its ack
    [entry] = producer._acks.pending.values()
    entry.future.set_result(entry.message_id)
    sending.cancel()
    with pytest.raises(asyncio.CancelledError):
        await sending


@pytest.mark.parametrize(("url", "ws", "http"), [
    ("ws://h:8000", "ws://h:8000", "http://h:8000"),
    ("http://h:8000/", "ws://h:8000", "http://h:8000"),
    ("https://h/switchyard/", "wss://h/switchyard", "https://h/switchyard"),
    ("wss://h", "wss://h", "https://h"),
])
def test_server_urls_follow_the_scheme(url: str, ws: str, http: str) -> None:
    """A server URL of any scheme gives its websocket and HTTP bases, keeping a path prefix."""
    server = Server.parse(url)
    assert (server.ws, server.http) == (ws, http)


@pytest.mark.parametrize("url", ["h:8000", "ftp://h", "ws://"])
def test_a_server_url_without_scheme_or_host_is_refused(url: str) -> None:
    """Anything but ws, wss, http or https with a host is a ValueError."""
    with pytest.raises(ValueError):
        Server.parse(url)


def test_topic_names_take_pulsars_full_form() -> None:
    """A bare name goes to persistent/public/default; a full name keeps its parts."""
    server = Server.parse("ws://h")
    assert server.pulsar("producer", TopicName.parse("t")) == "ws://h/ws/v2/producer/persistent/public/default/t"
    assert server.pulsar("consumer", TopicName.parse("non-persistent://a/b/t"), "s", {"x": "1"}) == \
        "ws://h/ws/v2/consumer/non-persistent/a/b/t/s?x=1"


@pytest.mark.parametrize("name", ["a/b", "persistent://a/b", "", "a/b/c/d"])
def test_malformed_topic_names_are_refused(name: str) -> None:
    """A name with one or three slashes, or none at all, is a ValueError."""
    with pytest.raises(ValueError):
        TopicName.parse(name)
