"""Fuzzing the websocket handshakes of every route (consumers/routing.py): request targets of each
route's shape with hostile path segments (topics, tenants, namespaces, subscriptions: encoded, over
long, dot segments, NULs, unicode, empty) and query parameters (each route's documented ones with
values of their kind or anything, unknown and repeated names), garbage targets, and hostile headers
(Authorization, Origin, Sec-WebSocket-Protocol, Cookie). Each handshake is refused with a 4xx and a
clear body, or accepted, and then the socket answers a probe (or refuses with an error frame and a
documented close); never a 5xx or a reset. The server stays up, a bystander pair keeps delivering,
the server logs no ERROR and its memory stays bounded (tests/fuzz_sockets.py).
tests/test_fuzz_dasf.py and its siblings fuzz the frames on sockets whose handshake was valid."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from tests.frame_strategies import TEXT
from tests.fuzz_sockets import TEST_TIMEOUT_S, Fuzzed, assert_memory_bounded, fuzzed, fuzzed_server, run_handshake
from tests.handshake_strategies import (
    JAVA_BOOLEANS,
    JAVA_INTEGERS,
    MESSAGE_IDS,
    NUL,
    PULSAR_SEGMENTS,
    RAW_TEXT,
    SUBSCRIPTION_TYPES,
    TIMES,
    encoded,
    fixed,
    header_sets,
    join,
    segments,
    targets,
)

pytestmark = [pytest.mark.filterwarnings("ignore::hypothesis.errors.HypothesisWarning"),
              pytest.mark.timeout(TEST_TIMEOUT_S)]


@pytest.fixture(scope="module")
def state(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fuzzed]:
    # Limits high enough that the fuzzing's handshakes (many with bad tokens) reach the routes rather
    # than the admission's 429 (tests/test_admission.py tests that).
    yield from fuzzed_server(tmp_path_factory, "fuzz-handshakes", CONNECT_RATE_PER_ADDRESS_PER_S="100000",
                             CONNECT_RATE_PER_PRINCIPAL_PER_S="100000", FAILED_AUTH_RATE_PER_ADDRESS_PER_S="100000",
                             FAILED_AUTH_BURST_PER_ADDRESS="100000")


def texts() -> st.SearchStrategy[str]:
    return st.one_of(TEXT.map(encoded), NUL)


def topic_names(state: Fuzzed) -> list[str]:
    """Topics of the server, a missing one, and a name shaped like a response topic of one."""
    return [state.topics["dasf"], state.topics["pulsar"], "fuzz-missing", f"{state.topics['dasf']}_abcdefgh"]


def tokens(state: Fuzzed) -> st.SearchStrategy[str]:
    return st.one_of(st.sampled_from(sorted(state.keys.values())), texts())


def check(state: Fuzzed, paths: st.SearchStrategy[str], pinned: Sequence[str] = ()) -> None:
    """Handshakes at ``paths`` (targets with their queries) with generated headers; the ``pinned``
    targets (defects found before, which generation reaches only now and then) first, without headers."""

    def handshake(target: str, headers: dict[str, str]) -> None:
        run_handshake(state, target, headers)

    test = given(paths, header_sets(state.keys, state.server.port))(handshake)
    for target in pinned:
        test = example(target, {})(test)
    fuzzed(test)()


def test_status_work_workers(state: Fuzzed) -> None:
    """Handshakes on /ws/status, /ws/work-requests/ and /ws/workers/ with hostile paths and queries."""
    names = segments(topic_names(state))
    token = tokens(state)
    status = targets(join(fixed("ws"), st.one_of(fixed("status"), segments(["status"]))), {
        "topics": st.lists(names, max_size=5).map(",".join), "token": token})
    work = targets(join(fixed("ws"), st.one_of(fixed("work-requests"), segments(["work-requests"]))), {
        "completed_since": TIMES, "task_name": texts(), "mine": JAVA_BOOLEANS, "token": token})
    workers = targets(join(fixed("ws"), st.one_of(fixed("workers"), segments(["workers"]))), {"token": token})
    check(state, st.one_of(status, work, workers))


def test_dasf(state: Fuzzed) -> None:
    """Handshakes on the DASF producer, consumer and status-ping routes with hostile paths and queries."""
    topic = segments(topic_names(state))
    token = tokens(state)
    producer = targets(join(fixed("ws"), topic), {"token": token})
    consumer = targets(join(fixed("ws"), topic, segments(["fuzz-sub", "a.b:c"])),
                       {"subscriptionType": SUBSCRIPTION_TYPES, "token": token})
    ping = targets(st.one_of(join(fixed("ws"), segments(["status-ping"])),
                             join(fixed("ws/v2/producer"), PULSAR_SEGMENTS, PULSAR_SEGMENTS, PULSAR_SEGMENTS,
                                  segments(["status-ping"]))), {"token": token})
    check(state, st.one_of(producer, consumer, ping))


def pulsar_path(kind: str, state: Fuzzed, *rest: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    return join(st.one_of(fixed(f"ws/v2/{kind}"), segments([f"ws/v2/{kind}"])), PULSAR_SEGMENTS, PULSAR_SEGMENTS,
                PULSAR_SEGMENTS, segments(topic_names(state)), *rest)


def test_pulsar_producer(state: Fuzzed) -> None:
    """Handshakes on /ws/v2/producer/ with hostile paths and Pulsar's producer parameters."""
    names = st.one_of(st.sampled_from(["fuzz-producer", ""]), texts())
    enums = st.sampled_from(["SinglePartition", "RoundRobinPartition", "NONE", "LZ4", "ZSTD", "JavaStringHash",
                             "Murmur3_32Hash", "none", ""])
    params = {"producerName": names, "sendTimeoutMillis": JAVA_INTEGERS, "batchingEnabled": JAVA_BOOLEANS,
              "batchingMaxMessages": JAVA_INTEGERS, "batchingMaxPublishDelay": JAVA_INTEGERS,
              "maxPendingMessages": JAVA_INTEGERS, "messageRoutingMode": enums, "compressionType": enums,
              "hashingScheme": enums, "initialSequenceId": JAVA_INTEGERS, "encryptionKeys": texts(),
              "token": tokens(state)}
    pinned = [f"/ws/v2/producer/persistent/public/default/{state.topics['pulsar']}?producerName=a%00b"]
    check(state, targets(pulsar_path("producer", state), params), pinned)


def test_pulsar_consumer(state: Fuzzed) -> None:
    """Handshakes on /ws/v2/consumer/ with hostile paths, subscriptions and Pulsar's consumer parameters."""
    dead_letters = st.one_of(segments(topic_names(state)), st.sampled_from(
        ["persistent://public/default/fuzz-dlq", "non-persistent://x", "persistent://", "fuzz-dlq"]))
    params = {"subscriptionType": SUBSCRIPTION_TYPES, "receiverQueueSize": JAVA_INTEGERS,
              "ackTimeoutMillis": JAVA_INTEGERS, "negativeAckRedeliveryDelay": JAVA_INTEGERS,
              "maxRedeliverCount": JAVA_INTEGERS, "deadLetterTopic": dead_letters, "pullMode": JAVA_BOOLEANS,
              "consumerName": texts(), "priorityLevel": JAVA_INTEGERS, "token": tokens(state)}
    subscription = st.one_of(fixed(""), segments(["fuzz-sub", "a.b:c", "x" * 300]))
    paths = st.one_of(pulsar_path("consumer", state, subscription), pulsar_path("consumer", state))
    check(state, targets(paths, params))


def test_pulsar_reader(state: Fuzzed) -> None:
    """Handshakes on /ws/v2/reader/ with hostile paths and Pulsar's reader parameters."""
    params = {"messageId": MESSAGE_IDS, "receiverQueueSize": JAVA_INTEGERS, "readerName": texts(),
              "token": tokens(state)}
    check(state, targets(pulsar_path("reader", state), params))


GARBAGE_PATHS = ["/", "/ws", "/ws/", "//ws//status", "/ws/v2", "/ws/v2/", "/ws/v2/unknown/a/b/c/d", "/ws/a/b/c",
                 "/api/v1/topics", "/admin/", "/healthz", "/static/x", "*", "http://127.0.0.1/ws/status",
                 "/ws/%2e%2e/status", "/ws/./status", "/ws/status/../workers", "/WS/STATUS", "/ws/v2/consumer"]


def test_garbage(state: Fuzzed) -> None:
    """Handshakes at paths no route has, or that no client should send."""
    paths = st.one_of(st.sampled_from(GARBAGE_PATHS), RAW_TEXT.map(lambda t: "/" + t),
                      st.lists(segments(["ws", "v2", "status"]), max_size=6).map(lambda s: "/" + "/".join(s)))
    check(state, targets(paths, {"token": tokens(state)}))


def test_memory_bounded(state: Fuzzed) -> None:
    """The server's resident memory after the module's fuzzing stays within the bound of before it."""
    assert_memory_bounded(state)
