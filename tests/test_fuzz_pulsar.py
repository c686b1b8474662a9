"""Fuzzing the Pulsar websocket endpoints (/ws/v2/ producer, consumer, reader on a topic with Pulsar
semantics) with generated frames: each gets a well-formed refusal (producer: a ``send-error`` ack;
consumer and reader: an ``error:`` frame) or a correct answer, or the close the protocol documents
(1000 after an ``unsubscribe``, 1009 past the hard frame limit); the server stays up, a bystander pair
keeps delivering, the server logs no ERROR and its memory stays bounded (tests/fuzz_sockets.py)."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator

import pytest
from hypothesis import given, note
from hypothesis import strategies as st
from websockets.sync.client import ClientConnection

from tests.frame_strategies import (
    CONTEXTS,
    INTEGERS,
    JSON,
    PAYLOADS,
    TEXT,
    VALUES,
    message_ids,
    shaped,
)
from tests.fuzz_acks import (
    ACTIONS,
    MESSAGES,
    Action,
    Ledger,
    Rules,
    Side,
    assert_owed_redelivered,
    await_deliveries,
    check_server,
    consumer,
    fuzz_consumer,
    open_ws,
    publish,
)
from tests.fuzz_sockets import (
    CLOSE_TOO_BIG,
    TEST_TIMEOUT_S,
    Endpoint,
    Fuzzed,
    ack_probe,
    acks_probe,
    assert_memory_bounded,
    fuzz_frames,
    fuzzed,
    fuzzed_server,
    judge_ack,
    judge_error,
    producer_probe,
    refuses_probe,
)

# Hypothesis warns of the reprs of large frames when it reports a failure: large frames are meant.
pytestmark = [pytest.mark.filterwarnings("ignore::hypothesis.errors.HypothesisWarning"),
              pytest.mark.timeout(TEST_TIMEOUT_S)]

PREFIX = "v2/{kind}/persistent/public/default"
CLOSE_NORMAL = 1000  # after an unsubscribe that was taken


# The storing topics (Pulsar semantics) of the ack fuzzing.
ACK_TOPICS = {"cache": "fuzz-acks-cache", "store": "fuzz-acks-store"}


@pytest.fixture(scope="module")
def state(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fuzzed]:
    extra = tuple(("dasf_topic", slug, "--new", "--no-dasf", "--store-messages", policy)
                  for policy, slug in ACK_TOPICS.items())
    # The ack fuzzing opens several sockets an example, faster than the default connect rate.
    yield from fuzzed_server(tmp_path_factory, "fuzz-pulsar", extra=extra, CONNECT_RATE_PER_PRINCIPAL_PER_S="0")


def path(state: Fuzzed, kind: str, rest: str = "") -> str:
    return f"{PREFIX.format(kind=kind)}/{state.topics['pulsar']}{rest}"


PUBLISH = shaped({"payload": PAYLOADS}, {
    "properties": st.dictionaries(TEXT, st.one_of(TEXT, JSON), max_size=4), "context": CONTEXTS, "key": TEXT,
    "deliverAt": INTEGERS, "deliverAfterMs": INTEGERS, "replicationClusters": st.lists(TEXT, max_size=3),
})


def test_producer(state: Fuzzed) -> None:
    """Generated frames on a Pulsar producer socket each get an ok or send-error ack."""
    endpoint = Endpoint(path(state, "producer"), judge_ack, producer_probe, acks_probe)
    fuzz_frames(state, endpoint, PUBLISH)


CONSUMER_FRAMES = st.one_of(
    shaped({"messageId": message_ids()}),
    shaped({"type": st.just("negativeAcknowledge"), "messageId": message_ids()}),
    shaped({"type": st.just("permit"), "permitMessages": st.one_of(INTEGERS, VALUES)}),
    shaped({"type": st.sampled_from(["isEndOfTopic", "unsubscribe"])}),
    shaped({"type": st.one_of(TEXT, VALUES)}),
)
# Shared: an example's connection may still be leaving the subscription when the next one joins.
SUBSCRIPTIONS = ["/fuzz-sub?subscriptionType=Shared", "/fuzz-pull?subscriptionType=Shared&pullMode=true"]


def test_consumer(state: Fuzzed) -> None:
    """Generated frames on a Pulsar consumer (push and pull mode) get an error, an answer or a 1000 close."""
    endpoints = [Endpoint(path(state, "consumer", sub), judge_error, ack_probe, refuses_probe,
                          closes=frozenset({CLOSE_TOO_BIG, CLOSE_NORMAL})) for sub in SUBSCRIPTIONS]
    fuzz_frames(state, endpoints, CONSUMER_FRAMES)


READER_FRAMES = st.one_of(shaped({"messageId": message_ids()}), shaped({"type": st.one_of(TEXT, VALUES)},
                                                                         {"messageId": message_ids()}))


def test_reader(state: Fuzzed) -> None:
    """Generated frames on a Pulsar reader (from earliest or latest) each get an error frame."""
    endpoints = [Endpoint(path(state, "reader", query), judge_error, ack_probe, refuses_probe)
                 for query in ("", "?messageId=earliest")]
    fuzz_frames(state, endpoints, READER_FRAMES)


def permits(ws: ClientConnection) -> None:
    """A pull consumer's credit for everything an example publishes (more comes from the fuzzing)."""
    ws.send(json.dumps({"type": "permit", "permitMessages": 100}))


SUBSCRIPTION_TYPES = ["Exclusive", "Shared", "Failover", "Key_Shared"]


def test_consumer_acks(state: Fuzzed) -> None:
    """Acks, negative acks, permits and reconnects built from a Pulsar consumer's real deliveries
    (push or pull mode, every subscription type): each frame taken or refused as it must be; then the
    subscription is sent again exactly what it did not ack (its cursor, the same under cache and store,
    nacked messages included), and another subscription of the topic still gets every message."""
    with contextlib.ExitStack() as sockets:
        producers = {policy: sockets.enter_context(open_ws(state, f"{PREFIX.format(kind='producer')}/{slug}"))
                     for policy, slug in ACK_TOPICS.items()}

        @fuzzed
        @given(st.sampled_from(sorted(ACK_TOPICS)), st.sampled_from(SUBSCRIPTION_TYPES), st.booleans(), MESSAGES,
               st.lists(ACTIONS, max_size=16))
        def example(policy: str, kind: str, pull: bool, count: int, actions: list[Action]) -> None:
            note(f"{policy=} {kind=} {pull=} {count=} {actions=}")
            other = "store" if policy == "cache" else "cache"
            subscription = f"{PREFIX.format(kind='consumer')}/{ACK_TOPICS[policy]}/acks-{next(state.probes)}"
            query = f"?subscriptionType={kind}" + ("&pullMode=true" if pull else "")
            rules = Rules(pulsar=True, pull=pull)
            side = Side(subscription + query, rules, permits if pull else lambda ws: None)
            other_side = Side(f"{subscription}-other?subscriptionType=Shared", Rules(pulsar=True))
            foreign = publish(producers[other], f"foreign-{next(state.probes)}")
            with consumer(state, other_side) as other_ws, consumer(state, side) as ws:
                ledger = Ledger([publish(producers[policy], f"acked-{next(state.probes)}") for _ in range(count)],
                                rules)
                await_deliveries(other_ws, set(ledger.published))
                fuzz_consumer(state, side, ws, ledger, [foreign], actions)
            assert_owed_redelivered(state, side, producers[policy], ledger)
            assert_owed_redelivered(state, other_side, producers[policy], Ledger(ledger.published, other_side.rules))
            check_server(state)

        example()


def test_memory_bounded(state: Fuzzed) -> None:
    """The server's resident memory after the module's fuzzing stays within the bound of before it."""
    assert_memory_bounded(state)


