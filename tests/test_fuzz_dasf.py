"""Fuzzing the DASF websocket endpoints (producer, consumer, status-ping) with generated frames: each
gets a well-formed refusal or a correct answer, the server stays up, a bystander pair on another topic
keeps delivering, the server logs no ERROR and its memory stays bounded (tests/fuzz_sockets.py).
tests/test_bad_input_*.py pin the individual refusals; this goes wide over generated input."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given, note
from hypothesis import strategies as st

from tests.frame_strategies import CONTEXTS, JSON, PAYLOADS, TEXT, VALUES, message_ids, shaped, uuids
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

# The storing topics of the ack fuzzing (the topics above fill with what the other tests send).
ACK_TOPICS = {"cache": "fuzz-acks-cache", "store": "fuzz-acks-store"}


@pytest.fixture(scope="module")
def state(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fuzzed]:
    extra = tuple(("dasf_topic", slug, "--new", "--store-messages", policy) for policy, slug in ACK_TOPICS.items())
    # The ack fuzzing opens several sockets an example, faster than the default connect rate.
    yield from fuzzed_server(tmp_path_factory, "fuzz-dasf", extra=extra, CONNECT_RATE_PER_PRINCIPAL_PER_S="0")


# Hypothesis warns of the reprs of large frames when it reports a failure: large frames are meant.
pytestmark = [pytest.mark.filterwarnings("ignore::hypothesis.errors.HypothesisWarning"),
              pytest.mark.timeout(TEST_TIMEOUT_S)]


PROPERTIES = st.dictionaries(TEXT, JSON, max_size=4)
PUBLISH = shaped({"payload": PAYLOADS, "properties": PROPERTIES, "context": CONTEXTS},
                 {"messageId": uuids(), "key": TEXT, "deliverAt": st.integers(), "deliverAfterMs": st.integers()})


def test_producer(state: Fuzzed) -> None:
    """Generated frames on a DASF producer socket each get an ok or send-error ack."""
    endpoint = Endpoint(f"{state.topics['dasf']}", judge_ack, producer_probe, acks_probe)
    fuzz_frames(state, endpoint, PUBLISH)


CONTROL_TYPES = st.one_of(st.sampled_from(["permit", "negativeAcknowledge", "isEndOfTopic", "unsubscribe", "ping"]),
                          TEXT, VALUES)
CONSUMER_FRAMES = st.one_of(
    shaped({"messageId": message_ids()}),
    shaped({"type": CONTROL_TYPES}, {"messageId": message_ids(), "permitMessages": st.integers()}),
)


def test_consumer(state: Fuzzed) -> None:
    """Generated frames on a DASF consumer socket each get an error frame (or leave it delivering)."""
    endpoint = Endpoint(f"{state.topics['dasf']}/fuzz-sub", judge_error, ack_probe, refuses_probe)
    fuzz_frames(state, endpoint, CONSUMER_FRAMES)


def test_consumer_acks(state: Fuzzed) -> None:
    """Acks, refusals and reconnects built from a DASF consumer's real deliveries: each frame taken or
    refused as it must be; then the principal is sent again exactly what it did not ack (delivery state
    is per principal, the same under cache and store), and another topic's consumer still gets the
    message whose id was acked here."""
    with contextlib.ExitStack() as sockets:
        producers = {policy: sockets.enter_context(open_ws(state, slug)) for policy, slug in ACK_TOPICS.items()}

        @fuzzed
        @given(st.sampled_from(sorted(ACK_TOPICS)), MESSAGES, st.lists(ACTIONS, max_size=16))
        def example(policy: str, count: int, actions: list[Action]) -> None:
            note(f"{policy=} {count=} {actions=}")
            other = "store" if policy == "cache" else "cache"
            side = Side(f"{ACK_TOPICS[policy]}/acks", Rules())
            foreign_side = Side(f"{ACK_TOPICS[other]}/acks", Rules())
            with consumer(state, foreign_side) as foreign_ws:
                foreign = publish(producers[other], f"foreign-{next(state.probes)}")
                await_deliveries(foreign_ws, {foreign})
                with consumer(state, side) as ws:
                    ledger = Ledger([publish(producers[policy], f"acked-{next(state.probes)}")
                                     for _ in range(count)], side.rules)
                    fuzz_consumer(state, side, ws, ledger, [foreign], actions)
            assert_owed_redelivered(state, side, producers[policy], ledger)
            assert_owed_redelivered(state, foreign_side, producers[other], Ledger([foreign], foreign_side.rules))
            check_server(state)

        example()


def answer_properties(state: Fuzzed) -> st.SearchStrategy[dict[str, Any]]:
    """The properties of a pong or an api_info answer, for a topic of the server or any name."""
    sources = st.one_of(st.sampled_from(sorted(state.topics.values())), TEXT, VALUES)
    common = {"source_topic": sources, "requestContext": CONTEXTS}
    pong = shaped({"messageType": st.just("pong"), "status": st.sampled_from(["success", "error"]), **common})
    api_info = st.one_of(JSON, st.fixed_dictionaries({"functions": st.lists(TEXT, max_size=3),
                                                      "classes": st.lists(JSON, max_size=2)}))
    answer = shaped({"messageType": st.sampled_from(["response", "api_info"]),
                     "api_info": st.one_of(api_info.map(json.dumps), TEXT), **common})
    return st.one_of(pong, answer)


def test_status_ping(state: Fuzzed) -> None:
    """Generated pongs and api_info answers on /ws/status-ping each get an ok or send-error ack."""
    endpoint = Endpoint("status-ping", judge_ack, producer_probe, acks_probe)
    frames = shaped({"payload": st.one_of(st.just(""), PAYLOADS), "properties": answer_properties(state),
                     "context": CONTEXTS}, {"messageId": uuids()})
    fuzz_frames(state, endpoint, frames)


def test_memory_bounded(state: Fuzzed) -> None:
    """The server's resident memory after the module's fuzzing stays within the bound of before it."""
    assert_memory_bounded(state)
