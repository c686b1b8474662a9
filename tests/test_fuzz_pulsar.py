"""Fuzzing the Pulsar websocket endpoints (/ws/v2/ producer, consumer, reader on a topic with Pulsar
semantics) with generated frames: each gets a well-formed refusal (producer: a ``send-error`` ack;
consumer and reader: an ``error:`` frame) or a correct answer, or the close the protocol documents
(1000 after an ``unsubscribe``, 1009 past the hard frame limit); the server stays up, a bystander pair
keeps delivering, the server logs no ERROR and its memory stays bounded (tests/fuzz_sockets.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.frame_strategies import (
    CONTEXTS,
    INTEGERS,
    JSON,
    PAYLOADS,
    TEXT,
    VALUES,
    Frame,
    batches,
    message_ids,
    shaped,
)
from tests.fuzz_sockets import (
    CLOSE_TOO_BIG,
    FRAME_LIMIT,
    HARD_LIMIT,
    TEST_TIMEOUT_S,
    Endpoint,
    Fuzzed,
    ack_probe,
    acks_probe,
    assert_memory_bounded,
    fuzzed,
    fuzzed_server,
    judge_ack,
    judge_error,
    producer_probe,
    refuses_probe,
    run_example,
)

# Hypothesis warns of the reprs of large frames when it reports a failure: large frames are meant.
pytestmark = [pytest.mark.filterwarnings("ignore::hypothesis.errors.HypothesisWarning"),
              pytest.mark.timeout(TEST_TIMEOUT_S)]

PREFIX = "v2/{kind}/persistent/public/default"
CLOSE_NORMAL = 1000  # after an unsubscribe that was taken


@pytest.fixture(scope="module")
def state(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fuzzed]:
    yield from fuzzed_server(tmp_path_factory, "fuzz-pulsar")


def path(state: Fuzzed, kind: str, rest: str = "") -> str:
    return f"{PREFIX.format(kind=kind)}/{state.topics['pulsar']}{rest}"


PUBLISH = shaped({"payload": PAYLOADS}, {
    "properties": st.dictionaries(TEXT, st.one_of(TEXT, JSON), max_size=4), "context": CONTEXTS, "key": TEXT,
    "deliverAt": INTEGERS, "deliverAfterMs": INTEGERS, "replicationClusters": st.lists(TEXT, max_size=3),
})


def test_producer(state: Fuzzed) -> None:
    """Generated frames on a Pulsar producer socket each get an ok or send-error ack."""
    endpoint = Endpoint(path(state, "producer"), judge_ack, producer_probe, acks_probe)

    @fuzzed
    @given(batches(PUBLISH, FRAME_LIMIT, HARD_LIMIT))
    def example(frames: list[Frame]) -> None:
        run_example(state, endpoint, frames)

    example()


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

    @fuzzed
    @given(st.sampled_from(endpoints), batches(CONSUMER_FRAMES, FRAME_LIMIT, HARD_LIMIT))
    def example(endpoint: Endpoint, frames: list[Frame]) -> None:
        run_example(state, endpoint, frames)

    example()


READER_FRAMES = st.one_of(shaped({"messageId": message_ids()}), shaped({"type": st.one_of(TEXT, VALUES)},
                                                                         {"messageId": message_ids()}))


def test_reader(state: Fuzzed) -> None:
    """Generated frames on a Pulsar reader (from earliest or latest) each get an error frame."""
    endpoints = [Endpoint(path(state, "reader", query), judge_error, ack_probe, refuses_probe)
                 for query in ("", "?messageId=earliest")]

    @fuzzed
    @given(st.sampled_from(endpoints), batches(READER_FRAMES, FRAME_LIMIT, HARD_LIMIT))
    def example(endpoint: Endpoint, frames: list[Frame]) -> None:
        run_example(state, endpoint, frames)

    example()


def test_memory_bounded(state: Fuzzed) -> None:
    """The server's resident memory after the module's fuzzing stays within the bound of before it."""
    assert_memory_bounded(state)


