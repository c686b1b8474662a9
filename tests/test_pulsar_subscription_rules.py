"""Plain rules of Pulsar subscriptions from the review and attack findings: query parameters read as
Java reads them, the ack timeout floor, names, owners, credit of nacked messages, the waiting queue;
and, against the database, expiry and SUBSCRIPTIONS_PER_PRINCIPAL (docs/architecture.md 18.2-18.4)."""

from __future__ import annotations

from datetime import timedelta
from http import HTTPStatus
from typing import Any

import pytest
from django.utils import timezone
from pydantic import ValidationError

from app.pulsar.flow import Flow
from app.pulsar.handshake import subscription_owner_refusal
from app.pulsar.members import Pending, Slot
from app.pulsar.params import ConsumerParams, consumer_problem, subscription_name_problem
from app.pulsar.producers import ProducerParams
from app.pulsar.reader import ReaderParams
from app.pulsar.waiting import Waiting

PARAMS = [(ConsumerParams, "receiverQueueSize"), (ReaderParams, "receiverQueueSize"),
          (ProducerParams, "maxPendingMessages")]

# --- query parameters as Java reads them -------------------------------------------------------


@pytest.mark.parametrize(("model", "name"), PARAMS, ids=["consumer", "reader", "producer"])
@pytest.mark.parametrize("value", ["1.0", " 5 ", "5 ", "1_000", "+5", "0x10", "٥", "", "1e3"],
                         ids=["float", "spaces", "trailing-space", "underscore", "plus", "hex", "arabic-digit",
                              "empty", "exponent"])
def test_ints_are_digits_only(model: Any, name: str, value: str) -> None:
    """An int parameter is an optional '-' and ASCII digits, on every Pulsar path; anything else is refused."""
    with pytest.raises(ValidationError):
        model.model_validate({name: value})


@pytest.mark.parametrize(("model", "name"), PARAMS, ids=["consumer", "reader", "producer"])
def test_plain_digits_are_ints(model: Any, name: str) -> None:
    """Digits are read as the int they spell."""
    assert getattr(model.model_validate({name: "07"}), name) == 7


@pytest.mark.parametrize(("value", "expected"),
                         [("true", True), ("TRUE", True), ("True", True), ("yes", False), ("on", False),
                          ("1", False), ("false", False), ("", False)])
def test_booleans_as_java_parses_them(value: str, expected: bool) -> None:
    """"true" in any case is true, anything else false (Java's Boolean.parseBoolean), on consumers and producers."""
    assert ConsumerParams.model_validate({"pullMode": value}).pullMode is expected
    assert ProducerParams.model_validate({"batchingEnabled": value}).batchingEnabled is expected


@pytest.mark.parametrize(("value", "ok"), [("0", True), ("1", False), ("999", False), ("1000", True)])
def test_ack_timeout_floor(settings: Any, value: str, ok: bool) -> None:
    """ackTimeoutMillis is 0 (off) or at least MIN_ACK_TIMEOUT_MS (1000 by default, as Pulsar)."""
    settings.MIN_ACK_TIMEOUT_MS = 1000
    if ok:
        assert ConsumerParams.model_validate({"ackTimeoutMillis": value}).ackTimeoutMillis == int(value)
    else:
        with pytest.raises(ValidationError, match="MIN_ACK_TIMEOUT_MS"):
            ConsumerParams.model_validate({"ackTimeoutMillis": value})


def test_dead_letter_topic_may_not_be_the_topic() -> None:
    """deadLetterTopic naming the subscribed topic is a problem, with or without maxRedeliverCount."""
    for query in (b"deadLetterTopic=t", b"deadLetterTopic=persistent://public/default/t&maxRedeliverCount=2"):
        assert "itself" in (consumer_problem(ConsumerParams.from_query(query), "t", "s") or "")
    assert consumer_problem(ConsumerParams.from_query(b"deadLetterTopic=u&maxRedeliverCount=2"), "t", "s") is None


def test_subscription_name_length() -> None:
    """A subscription name has 1 to 200 characters."""
    assert subscription_name_problem("s" * 200) is None
    assert "200 characters" in (subscription_name_problem("s" * 201) or "")
    assert subscription_name_problem("") == "empty subscription name"


# --- owners --------------------------------------------------------------------------------------


@pytest.mark.parametrize(("owner", "principal", "superuser", "allowed"),
                         [("user:1", "user:1", False, True), ("user:1", "user:2", False, False),
                          ("user:1", "user:2", True, True), ("anonymous", "anonymous", False, True),
                          ("anonymous", "user:2", False, False), ("", "user:2", False, True)],
                         ids=["owner", "other", "superuser", "anonymous-shared", "anonymous-owned", "no-owner"])
def test_subscription_belongs_to_its_creator(owner: str, principal: str, superuser: bool, allowed: bool) -> None:
    """Only the creating principal (or a superuser) attaches; others get 403."""
    refusal = subscription_owner_refusal("s", owner, principal, superuser)
    if allowed:
        assert refusal is None
    else:
        assert refusal is not None and refusal.status == HTTPStatus.FORBIDDEN
        assert "belongs to another principal" in refusal.reason


# --- credit and the waiting queue --------------------------------------------------------------


def item(n: int, key: str = "", count: int = 0) -> Pending:
    return Pending(f"m{n}", n, f'{{"key":"{key}"}}', count=count)


def test_nacked_messages_count_against_credit() -> None:
    """A consumer's nacked messages waiting for redelivery use its credit, as unacked ones."""
    slot = Slot(1, member=None, flow=Flow(pull=False, queue_size=3, limit=100))  # type: ignore[arg-type]
    slot.ready = True
    slot.hold(item(1))
    slot.park(item(2))
    slot.park(item(3))
    assert slot.candidate().credit == 0
    slot.take_nacked("m3")
    assert slot.candidate().credit == 1


def test_pull_mode_nacked_count_against_the_connection_limit() -> None:
    """In pull mode nacked messages count against UNACKED_PER_CONNECTION."""
    slot = Slot(1, member=None, flow=Flow(pull=True, queue_size=1000, limit=2))  # type: ignore[arg-type]
    slot.ready = True
    slot.flow.permit(10)
    slot.park(item(1))
    slot.park(item(2))
    assert slot.candidate().credit == 0


def test_held_frames_bound_the_credit() -> None:
    """Past UNACKED_CHARS_PER_CONNECTION of held frames no more is sent; one message always may go."""
    flow = Flow(pull=False, queue_size=100, limit=100, char_limit=20)
    slot = Slot(1, member=None, flow=flow)  # type: ignore[arg-type]
    slot.ready = True
    big = Pending("m1", 1, "x" * 50)
    assert slot.candidate().credit == 100  # nothing held: even a frame over the limit goes
    slot.hold(big)
    assert slot.candidate().credit == 0
    slot.take_unacked("m1")
    assert (slot.held_chars, slot.candidate().credit) == (0, 100)


def test_taking_everything_frees_the_held_characters() -> None:
    """A consumer leaving gives back its unacked and nacked messages, and holds nothing after."""
    slot = Slot(1, member=None, flow=Flow(pull=False, queue_size=10, limit=100))  # type: ignore[arg-type]
    slot.hold(item(1))
    slot.park(item(2))
    unacked, nacked = slot.take_all()
    assert ([p.message_id for p in unacked], [p.message_id for p in nacked], slot.held_chars) == (["m1"], ["m2"], 0)


def test_key_shared_waits_per_key_in_order() -> None:
    """Under Key_Shared each key has its own line, in order; put_first goes ahead within its key."""
    waiting = Waiting(by_key=True)
    for n, key in enumerate(["a", "b", "a", "b"]):
        waiting.append(item(n, key))
    waiting.put_first([item(-2, "b", count=1), item(-1, "b", count=1)])
    assert waiting.keys() == ["a", "b"] and len(waiting) == 6
    assert [waiting.pop_first("b").message_id for _ in range(4)] == ["m-2", "m-1", "m1", "m3"]
    assert waiting.keys() == ["a"] and waiting.first("b") is None


def test_take_back_finds_only_redelivered_messages() -> None:
    """An ack crossing a redelivery takes the waiting message out; other ids find nothing."""
    waiting = Waiting(by_key=False)
    waiting.append(item(1))
    waiting.put_first([item(0, count=1)])
    assert waiting.take_back("m1") is None and waiting.take_back("nope") is None
    taken = waiting.take_back("m0")
    assert taken is not None and taken.message_id == "m0"
    assert [i.message_id for i in waiting] == ["m1"] and waiting.take_back("m0") is None


def test_live_drops_counted_per_stretch() -> None:
    """Live messages beyond the bound push the oldest out; the count starts again once the queue emptied."""
    waiting = Waiting(by_key=False)
    dropped = [waiting.add_live(item(n), 2) for n in range(4)]
    assert [d.message_id if d else None for d in dropped] == [None, None, "m0", "m1"] and waiting.dropped == 2
    waiting.pop_first()
    waiting.pop_first()
    assert waiting.dropped == 0 and not waiting


# --- storage: expiry and the subscription limit ------------------------------------------------


def test_expiry_spares_a_subscription_whose_lease_is_held(settings: Any) -> None:
    """An idle-looking subscription whose lease is held (a process serves it) does not expire; one without does."""
    from app.leases.services import acquire
    from app.pulsar.models import Subscription
    from app.pulsar.services import expire_subscriptions, lease_name, open_subscription
    from tests.test_subscription_store import topic_of

    settings.SUBSCRIPTION_TTL_S = 60.0
    topic = topic_of()
    served = open_subscription(topic.pk, "served", "Shared", "anonymous")
    idle = open_subscription(topic.pk, "idle", "Shared", "anonymous")
    Subscription.objects.filter(pk__in=[served.id, idle.id]).update(last_active=timezone.now() - timedelta(hours=1))
    assert acquire(lease_name(topic.pk, served.id), "somewhere:1", 30)
    expire_subscriptions()
    assert set(Subscription.objects.filter(topic=topic).values_list("name", flat=True)) == {"served"}


def test_subscriptions_per_principal_counted_at_creation(settings: Any) -> None:
    """SUBSCRIPTIONS_PER_PRINCIPAL counts a principal's subscriptions over all topics, at creation only."""
    from app.pulsar.services import SubscriptionRefused, open_subscription
    from tests.protocol import make_user
    from tests.test_subscription_store import topic_of

    settings.SUBSCRIPTIONS_PER_PRINCIPAL = 2
    user = make_user()
    principal = f"user:{user.pk}"
    first, second = topic_of(), topic_of()
    open_subscription(first.pk, "a", "Shared", principal, user)
    open_subscription(second.pk, "b", "Shared", principal, user)
    with pytest.raises(SubscriptionRefused, match="subscription limit"):
        open_subscription(second.pk, "c", "Shared", principal, user)
    assert open_subscription(first.pk, "a", "Shared", principal, user).created_by == principal
