"""Plain rules of Pulsar subscriptions: who gets a message, flow-control credit, redelivery timers,
dead letters and consumer query parameters (docs/architecture.md 18.2-18.4)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from app.pulsar.dispatch import Candidate, Dispatch, KeyMap, RoundRobin, first_attached
from app.pulsar.flow import Flow, permit_count
from app.pulsar.params import ConsumerParams, consumer_problem
from app.pulsar.redelivery import (
    Reason,
    Timers,
    ack_deadline,
    dead_letter_creation_problem,
    dead_letter_topic_problem,
    dead_letters,
    nack_due,
)


def c(id_: int, credit: int = 1, unacked: int = 0) -> Candidate:
    return Candidate(id_, credit, unacked)


# --- who gets a message ------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("candidates", "expected"),
    [([], None), ([c(1), c(2)], 1), ([c(1, credit=0), c(2)], None)],
    ids=["nobody", "first-attached", "first-without-credit-waits"],
)
def test_failover_sends_to_the_first_attached_only(candidates: list[Candidate], expected: int | None) -> None:
    """Exclusive / Failover: the first attached consumer gets the message, or it waits."""
    assert first_attached(candidates) == expected


def test_failover_next_in_attach_order_takes_over() -> None:
    """When the active consumer is gone, the next in attach order is active."""
    rule = Dispatch("Failover", 10)
    assert rule.pick("", [c(1), c(2), c(3)]) == 1
    assert rule.pick("", [c(2), c(3)]) == 2


def test_shared_round_robin() -> None:
    """Shared: consumers take turns in attach order."""
    rr = RoundRobin()
    assert [rr.pick([c(1), c(2), c(3)]) for _ in range(4)] == [1, 2, 3, 1]


def test_shared_skips_consumers_without_credit() -> None:
    """Shared: a consumer without credit is skipped; nobody with credit: the message waits."""
    rr = RoundRobin()
    assert [rr.pick([c(1), c(2, credit=0), c(3)]) for _ in range(3)] == [1, 3, 1]
    assert rr.pick([c(1, credit=0)]) is None


def test_key_shared_key_sticks_to_its_consumer() -> None:
    """Key_Shared: every message of a key goes to the consumer its first message went to."""
    keys = KeyMap(10)
    first = keys.pick("a", [c(1), c(2)])
    keys.sent("a")
    assert first == 1
    assert [keys.pick("a", [c(1, unacked=5), c(2)]) for _ in range(3)] == [1, 1, 1]


def test_key_shared_new_key_goes_to_the_least_loaded() -> None:
    """Key_Shared: a new key picks the consumer with credit and the fewest unacked."""
    assert KeyMap(10).pick("b", [c(1, unacked=3), c(2, unacked=1), c(3, credit=0)]) == 2


def test_key_shared_owner_without_credit_waits() -> None:
    """Key_Shared: a key whose consumer has no credit waits rather than moving."""
    keys = KeyMap(10)
    assert keys.pick("a", [c(1), c(2)]) == 1
    assert keys.pick("a", [c(1, credit=0), c(2)]) is None


def test_key_shared_consumer_leaving_frees_its_keys() -> None:
    """Key_Shared: the keys of a consumer that left go to another one."""
    rule = Dispatch("Key_Shared", 10)
    assert rule.pick("a", [c(1), c(2, unacked=1)]) == 1
    rule.left(1)
    assert rule.pick("a", [c(2, unacked=1)]) == 2


def test_key_shared_map_evicts_settled_keys() -> None:
    """Key_Shared: a full map evicts the oldest key with nothing in flight."""
    keys = KeyMap(2)
    for key in ("a", "b"):
        keys.pick(key, [c(1)])
        keys.sent(key)
    keys.settled("a")
    assert keys.pick("c", [c(1)]) == 1
    assert keys.owner("a") is None and keys.owner("b") == 1 and len(keys) == 2


def test_key_shared_full_map_of_keys_in_flight_waits() -> None:
    """Key_Shared: when every mapped key has something in flight, a new key waits."""
    keys = KeyMap(1)
    keys.pick("a", [c(1)])
    keys.sent("a")
    assert keys.pick("b", [c(1)]) is None


def test_key_shared_without_key_is_the_empty_key() -> None:
    """Key_Shared: messages without a key share the key "" (one consumer)."""
    rule = Dispatch("Key_Shared", 10)
    assert {rule.pick("", [c(1), c(2)]) for _ in range(3)} == {1}


# --- credit ---------------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("flow", "in_flight", "credit"),
    [
        (Flow(pull=False, queue_size=2, limit=100), 0, 2),
        (Flow(pull=False, queue_size=2, limit=100), 2, 0),
        (Flow(pull=False, queue_size=50, limit=10), 4, 6),
        (Flow(pull=True, queue_size=1000, limit=100), 0, 0),
        (Flow(pull=True, queue_size=1000, limit=100, permits=3), 7, 3),
        (Flow(pull=True, queue_size=1000, limit=5, permits=9), 3, 2),
    ],
    ids=["push-empty", "push-full", "push-capped-by-limit", "pull-no-permits", "pull-permits",
         "pull-capped-by-limit"],
)
def test_credit(flow: Flow, in_flight: int, credit: int) -> None:
    """Push: receiverQueueSize minus in flight; pull: permits; both capped by UNACKED_PER_CONNECTION."""
    assert flow.credit(in_flight) == credit


def test_pull_credit_spent_by_sends_not_restored_by_acks() -> None:
    """Pull mode: each message sent spends a permit; acks give none back."""
    flow = Flow(pull=True, queue_size=1000, limit=100)
    flow.permit(3)
    for _ in range(3):
        flow.sent()
    assert flow.credit(0) == 0


@pytest.mark.parametrize(
    ("raw", "count"),
    [({"permitMessages": 3}, 3), ({"permitMessages": 0}, None), ({"permitMessages": -1}, None),
     ({"permitMessages": "3"}, None), ({"permitMessages": True}, None), ({}, None)],
    ids=["three", "zero", "negative", "string", "bool", "missing"],
)
def test_permit_count_is_a_positive_int(raw: dict[str, object], count: int | None) -> None:
    """permitMessages must be a positive int."""
    assert permit_count(raw) == count


# --- redelivery -------------------------------------------------------------------------------------

def test_ack_deadline_only_with_a_timeout() -> None:
    """ackTimeoutMillis 0 sets no deadline; otherwise sent time plus the timeout."""
    assert ack_deadline(10.0, 0) is None
    assert ack_deadline(10.0, 300) == pytest.approx(10.3)
    assert nack_due(10.0, 200) == pytest.approx(10.2)


@pytest.mark.parametrize(
    ("count", "max_redeliver", "dead"),
    [(1, 0, False), (50, 0, False), (1, 1, False), (2, 1, True), (3, 3, False), (4, 3, True)],
)
def test_dead_letter_when_count_exceeds_max(count: int, max_redeliver: int, dead: bool) -> None:
    """A message goes to the dead letter topic when its next count exceeds maxRedeliverCount (> 0)."""
    assert dead_letters(count, max_redeliver) is dead


@pytest.mark.parametrize(
    ("response_topic", "creator", "may_produce", "problem"),
    [
        (False, "user:1", True, None),  # the subscriber's own
        (False, "", True, None),  # an admin's the subscriber may publish to
        (False, "", False, "not allowed to publish"),
        (False, "user:1", False, "not allowed to publish"),  # its own, the right revoked
        (False, "user:2", True, "created by another principal"),  # squatted, public
        (False, "user:2", False, "created by another principal"),  # squatted, private
        (True, "user:1", True, "response topic"),
    ],
)
def test_dead_letter_topic_only_own_or_an_admins(response_topic: bool, creator: str, may_produce: bool,
                                                 problem: str | None) -> None:
    """An existing topic takes user:1's dead letters only if user:1 or an admin created it and user:1 may publish."""
    found = dead_letter_topic_problem("t-s-DLQ", response_topic=response_topic, creator=creator,
                                      principal="user:1", may_produce=may_produce)
    assert found is None if problem is None else problem in (found or "")


@pytest.mark.parametrize(
    ("explicit", "may_add_topics", "allow_auto", "allowed"),
    [
        (False, False, False, True),  # the default <topic>-<sub>-DLQ: any consumer
        (True, True, False, True),  # a chosen name: a principal that may create topics
        (True, False, True, True),  # a chosen name: ALLOW_AUTO_TOPIC_CREATION
        (True, False, False, False),  # a chosen name, no right to create topics
    ],
)
def test_missing_dead_letter_topic_creation(explicit: bool, may_add_topics: bool, allow_auto: bool,
                                            allowed: bool) -> None:
    """A missing dead letter topic is made under the default name for anyone, under a chosen one only with the right."""
    found = dead_letter_creation_problem("t-x", explicit=explicit, may_add_topics=may_add_topics, allow_auto=allow_auto)
    assert (found is None) is allowed


def test_timers_due_in_time_order() -> None:
    """Due timers come out earliest first; later ones stay."""
    timers = Timers()
    timers.schedule("b", 2.0, Reason.NACK)
    timers.schedule("a", 1.0, Reason.ACK_TIMEOUT)
    timers.schedule("c", 5.0, Reason.NACK)
    assert timers.due(2.5) == [("a", Reason.ACK_TIMEOUT), ("b", Reason.NACK)]
    assert timers.next_due() == 5.0 and len(timers) == 1


def test_cancelled_timer_never_due() -> None:
    """An acked message's deadline is cancelled and never comes."""
    timers = Timers()
    timers.schedule("a", 1.0, Reason.ACK_TIMEOUT)
    timers.cancel("a")
    assert timers.due(9.0) == [] and timers.next_due() is None


def test_rescheduled_timer_keeps_only_the_new_time() -> None:
    """A message nacked after its ack deadline was set is due at the nack time only."""
    timers = Timers()
    timers.schedule("a", 1.0, Reason.ACK_TIMEOUT)
    timers.schedule("a", 3.0, Reason.NACK)
    assert timers.due(2.0) == []
    assert timers.due(3.0) == [("a", Reason.NACK)]


# --- consumer parameters --------------------------------------------------------------------------

def test_consumer_defaults() -> None:
    """Defaults: Exclusive, queue 1000, no ack timeout, nack delay 60 s, no dead letters, push mode."""
    params = ConsumerParams.from_query(b"")
    assert (params.subscriptionType, params.receiverQueueSize, params.ackTimeoutMillis) == ("Exclusive", 1000, 0)
    assert (params.negativeAckRedeliveryDelay, params.maxRedeliverCount, params.pullMode) == (60_000, 0, False)
    assert params.dead_letter_topic("t", "s") == "t-s-DLQ"


@pytest.mark.parametrize(
    "query",
    [b"subscriptionType=Sharded", b"receiverQueueSize=ten", b"receiverQueueSize=0",
     b"receiverQueueSize=99999999", b"ackTimeoutMillis=-1", b"deadLetterTopic=a/b", b"maxRedeliverCount=1.5"],
    ids=["type", "queue-word", "queue-zero", "queue-over-limit", "negative-timeout", "dlq-name", "count-float"],
)
def test_bad_consumer_params_refused(query: bytes) -> None:
    """Unknown type, malformed numbers, out-of-range queue sizes, bad dead letter names: refused."""
    with pytest.raises(ValidationError):
        ConsumerParams.from_query(query)


def test_full_dead_letter_topic_name_read() -> None:
    """A full Pulsar topic name for deadLetterTopic names its last part."""
    params = ConsumerParams.from_query(b"deadLetterTopic=persistent://public/default/dead")
    assert params.deadLetterTopic == "dead"


def test_default_dead_letter_name_must_be_a_topic_name() -> None:
    """With dead letters on, a subscription name that makes no topic name needs deadLetterTopic."""
    params = ConsumerParams.from_query(b"maxRedeliverCount=1")
    assert consumer_problem(params, "t", "sub.1") is not None
    assert consumer_problem(params, "t", "sub-1") is None
    assert consumer_problem(ConsumerParams.from_query(b""), "t", "sub.1") is None
