"""Harness of the websocket fuzz tests (tests/test_fuzz_*.py): a throwaway server, the endpoints'
judges of what they answer, a bystander pair that must keep delivering, and the run of one example
(of frames on an open socket, or of one handshake: tests/test_fuzz_handshakes.py).

One example is one connection: it sends a batch of generated frames, then a probe whose answer is
recognisable, and reads until that answer. Every frame read on the way must be a well-formed refusal
or a normal answer of the endpoint; the socket may close only with a code the protocol documents for
what was sent (1009 past the hard frame limit). After each example the server process is still up and
a producer + consumer pair on another topic, opened before the fuzzing, still delivers a message.

Generation is deterministic by default (fixed seed, no example database), as in tests/test_api_fuzz.py:
SWITCHYARD_FUZZ_EXAMPLES sets the examples per endpoint, SWITCHYARD_FUZZ_SEED another seed (make fuzz).
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import json
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.http11 import Response
from websockets.sync.client import ClientConnection
from websockets.sync.client import connect as ws_connect

from tests.frame_strategies import Frame, b64, batches
from tests.servers import ServerProcess, manage_many, memory_kib, migrated_database_url, server_env, start_server

EXAMPLES = int(os.environ.get("SWITCHYARD_FUZZ_EXAMPLES", "10"))
SEED = int(os.environ.get("SWITCHYARD_FUZZ_SEED", "14"))
# The fuzzed server's frame limit: small, so frames past it (and past the hard limit, four times it)
# cost little to generate and send.
FRAME_LIMIT = 4096
HARD_LIMIT = 4 * FRAME_LIMIT
TIMEOUT_S = 10.0
# A fuzz test's time grows with its examples (up to half a second each on a loaded machine; a reader
# from the earliest message reads more of the topic as the producer's fuzzing fills it).
TEST_TIMEOUT_S = 60 + 2 * EXAMPLES
# Resident memory the server may gain over a module's fuzzing. Measured: 0.6 to 1.3 MiB after 100
# examples per endpoint (allocator arenas and caches grow on first use); a leak per connection or
# frame grows with the examples, and a frame kept whole costs up to 32 KiB.
RSS_BOUND_KIB = 16 * 1024
# The close code uvicorn sends for a frame past the hard limit (README "Close codes").
CLOSE_TOO_BIG = 1009


def fuzzed(test: Callable[..., None]) -> Callable[..., None]:
    """Hypothesis settings of every websocket fuzz test."""
    configured = settings(
        max_examples=EXAMPLES, database=None, deadline=None, print_blob=True,
        phases=[Phase.explicit, Phase.generate, Phase.shrink],
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example,
                               HealthCheck.function_scoped_fixture],
    )(test)
    return seed(SEED)(configured)  # type: ignore[no-any-return]


# --- the fuzzed server ------------------------------------------------------------------------


@dataclass
class Fuzzed:
    """A server on a database of its own (the fuzzing creates what it may: subscriptions, pongs,
    messages), its topics and keys, and the bystander pair on a topic of their own."""

    server: ServerProcess
    keys: dict[str, str]
    topics: dict[str, str]
    bystander: Bystander
    rss_before_kib: int = 0
    probes: Iterator[int] = field(default_factory=itertools.count)

    @property
    def base(self) -> str:
        return f"ws://127.0.0.1:{self.server.port}/ws/"


def fuzzed_server(tmp_path_factory: pytest.TempPathFactory, name: str,
                  extra: tuple[tuple[str, ...], ...] = (), **env: str) -> Iterator[Fuzzed]:
    """Start the server (``env``: settings of its own) and make its topics (a DASF one, a Pulsar one,
    the bystanders') and keys (a superuser's, a worker's) in one management process, running the
    module's ``extra`` management commands there too (topics of its own)."""
    url = migrated_database_url(tmp_path_factory.mktemp(name), name)
    topics = {"dasf": "fuzz-dasf", "pulsar": "fuzz-pulsar", "bystander": "fuzz-bystander"}
    admin, worker = manage_many(
        server_env(url),
        ("dasf_topic", topics["dasf"], "--new", "--anonymous"),
        ("dasf_topic", topics["pulsar"], "--new", "--anonymous", "--no-dasf"),
        ("dasf_topic", topics["bystander"], "--new", "--anonymous"),
        ("createtoken", "fuzz-admin", "--create-user", "--superuser"),
        ("createworker", "fuzz-worker"),
        *extra,
    )[3:5]
    server = start_server(url, MAX_FRAME_BYTES=str(FRAME_LIMIT), **env)
    base = f"ws://127.0.0.1:{server.port}/ws/"
    bystander = Bystander(base, topics["bystander"])
    try:
        bystander.check()  # warm: the first connection and message pay for imports and caches
        state = Fuzzed(server, {"admin": admin, "worker": worker}, topics, bystander, memory_kib(server, "VmRSS"))
        yield state
    finally:
        bystander.close()
        server.stop()


def assert_memory_bounded(state: Fuzzed) -> None:
    after = memory_kib(state.server, "VmRSS")
    grown = after - state.rss_before_kib
    assert grown <= RSS_BOUND_KIB, f"server RSS grew {grown} KiB over the fuzzing (bound {RSS_BOUND_KIB} KiB)"


class Bystander:
    """A DASF producer and consumer on a topic of their own, open for a whole module."""

    def __init__(self, base: str, slug: str) -> None:
        self.sockets = contextlib.ExitStack()
        self.consumer = self.sockets.enter_context(ws_connect(f"{base}{slug}/bystander", open_timeout=TIMEOUT_S,
                                                              max_size=None))
        self.producer = self.sockets.enter_context(ws_connect(f"{base}{slug}", open_timeout=TIMEOUT_S, max_size=None))
        self.sent = itertools.count()

    def check(self) -> None:
        """A message published now reaches the consumer (after the topic's api_info probe, when the
        topic is fresh), and its ack is taken."""
        context = f"bystander-{next(self.sent)}"
        self.producer.send(json.dumps({"payload": b64(context), "properties": {}, "context": context}))
        ack = json.loads(self.producer.recv(timeout=TIMEOUT_S))
        assert ack.get("result") == "ok" and ack.get("context") == context, ack
        while True:
            delivered = json.loads(self.consumer.recv(timeout=TIMEOUT_S))
            assert "messageId" in delivered, delivered
            self.consumer.send(json.dumps({"messageId": delivered["messageId"]}))
            if delivered["messageId"] == ack["messageId"]:
                assert delivered.get("context") == context, delivered
                return

    def close(self) -> None:
        self.sockets.close()


# --- judges: what an endpoint may answer ------------------------------------------------------


def error_message(reply: dict[str, Any]) -> str:
    message = reply.get("errorMsg")
    assert isinstance(message, str) and message, f"a refusal without errorMsg: {reply}"
    return message


def judge_ack(reply: dict[str, Any]) -> None:
    """Producer sockets (and status-ping): an ack, ``ok`` or ``send-error:`` with errorMsg."""
    result = reply.get("result")
    assert isinstance(reply.get("messageId"), str), reply
    if result != "ok":
        assert isinstance(result, str) and result.startswith("send-error:"), reply
        error_message(reply)


# What reading sockets send besides refusals: a delivery, a status viewer's or a work watcher's frames,
# a Pulsar consumer's answer to isEndOfTopic.
NORMAL_TYPES = {"status", "synced", "gone", "work_request"}


def judge_error(reply: dict[str, Any]) -> None:
    """Reading sockets: an error frame (``result`` ``error:...`` with errorMsg) or a normal frame."""
    if "result" in reply:
        assert str(reply["result"]).startswith("error:"), reply
        error_message(reply)
    elif "messageId" in reply:
        # A delivery: the producer's frame as it was sent (DASF relays a frame without payload as
        # received), with the broker's fields.
        assert "publishTime" in reply, reply
    elif "endOfTopic" in reply:
        assert reply["endOfTopic"] is False, reply
    else:
        assert reply.get("type") in NORMAL_TYPES, reply


WORKER_SERVER_TYPES = {"connected", "request_dynamic_metadata", "work_request_available", "aborted"}


def judge_worker(reply: dict[str, Any]) -> None:
    """The worker socket: an ``error`` frame naming the problem, or a frame the server sends workers."""
    if reply.get("type") == "error":
        assert isinstance(reply.get("error"), str) and reply["error"], reply
    else:
        assert reply.get("type") in WORKER_SERVER_TYPES, reply


# --- probes: frames whose answer tells that everything before it was answered -----------------


def probe_tag(number: int) -> str:
    return f"probe-{number:06d}"


def producer_probe(number: int) -> dict[str, Any]:
    return {"payload": "", "properties": {}, "context": probe_tag(number)}


def acks_probe(reply: dict[str, Any], number: int) -> bool:
    return reply.get("context") == probe_tag(number)


def ack_probe(number: int) -> dict[str, Any]:
    return {"messageId": probe_tag(number)}


def refuses_probe(reply: dict[str, Any], number: int) -> bool:
    return str(reply.get("errorMsg", "")).endswith(probe_tag(number))


# --- one example ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Endpoint:
    """How to fuzz one endpoint: where, with which key, how its answers are judged, and the probe
    (a frame whose answer is recognisable by the probe's number) that ends an example. Without a
    probe, the endpoint refuses every frame: the example ends at as many refusals as frames sent."""

    path: str
    judge: Callable[[dict[str, Any]], None]
    probe: Callable[[int], dict[str, Any]] | None = None
    answers: Callable[[dict[str, Any], int], bool] = lambda reply, n: False
    key: str = "admin"
    # Close codes the protocol documents for something a generated frame may ask.
    closes: frozenset[int] = frozenset({CLOSE_TOO_BIG})


def open_socket(state: Fuzzed, endpoint: Endpoint) -> ClientConnection:
    headers = {"Authorization": f"Token {state.keys[endpoint.key]}"}
    return ws_connect(state.base + endpoint.path, additional_headers=headers, open_timeout=TIMEOUT_S, max_size=None)


def fuzz_frames(state: Fuzzed, endpoints: Endpoint | list[Endpoint], valid: st.SearchStrategy[dict[str, Any]]) -> None:
    """The fuzzing of one endpoint (or of one drawn per example): batches of ``valid`` frames and
    their hostile variants, each run as one example (``run_example``)."""
    drawn = st.just(endpoints) if isinstance(endpoints, Endpoint) else st.sampled_from(endpoints)

    @fuzzed
    @given(drawn, batches(valid, FRAME_LIMIT, HARD_LIMIT))
    def example(endpoint: Endpoint, frames: list[Frame]) -> None:
        run_example(state, endpoint, frames)

    example()


def run_example(state: Fuzzed, endpoint: Endpoint, frames: list[Frame]) -> None:
    """Send ``frames`` and the probe on a new connection; judge every answer up to the probe's."""
    number = next(state.probes)
    with open_socket(state, endpoint) as ws:
        for frame in frames:
            try:
                ws.send(frame)
            except ConnectionClosed:
                break  # closed by a frame before (judged below, from the close code)
        probe = endpoint.probe(number) if endpoint.probe is not None else {}
        try:
            ws.send(json.dumps(probe))
        except ConnectionClosed:
            pass
        read_until_probe(ws, endpoint, number, len(frames) + 1)
    assert state.server.running, "server died:\n" + "".join(state.server.output[-50:])
    state.bystander.check()


def replies(ws: ClientConnection, awaited: str) -> Iterator[dict[str, Any]]:
    """The JSON objects the server sends, each within what is left of TIMEOUT_S (``awaited`` names
    what the test waits for); a close raises ``ConnectionClosed`` for the caller to judge."""
    deadline = time.monotonic() + TIMEOUT_S
    while True:
        try:
            raw = ws.recv(timeout=max(0.0, deadline - time.monotonic()))
        except TimeoutError:
            raise AssertionError(f"no answer to {awaited} within {TIMEOUT_S} s") from None
        assert isinstance(raw, str), f"a binary frame from the server: {raw!r}"
        reply = json.loads(raw)
        assert isinstance(reply, dict), reply
        yield reply


def close_code(closed: ConnectionClosed) -> int:
    return closed.rcvd.code if closed.rcvd is not None else 1006


def read_until_probe(ws: ClientConnection, endpoint: Endpoint, number: int, sent: int) -> None:
    refusals = 0
    try:
        for reply in replies(ws, f"probe {number}"):
            endpoint.judge(reply)
            if endpoint.probe is None:
                refusals += "errorMsg" in reply
                if refusals == sent:
                    return
            elif endpoint.answers(reply, number):
                return
    except ConnectionClosed as closed:
        code = close_code(closed)
        assert code in endpoint.closes, f"closed with {code} ({closed.rcvd}), not one of {set(endpoint.closes)}"


# --- one handshake ----------------------------------------------------------------------------

# What a refused handshake may answer: a client error. A 5xx is a defect (503 is documented for an
# unreachable database or a connection closed while connecting, neither of which a fuzzed request
# causes), and so is a handshake closed unanswered (the ASGI server's bare 403 has no body).
REFUSAL_STATUSES = range(400, 500)
# The close codes of a socket accepted and then refused by the DASF paths, each after an error frame
# saying why (README "Close codes"): a worker's rejected token, no right to consume, no such endpoint
# or a name no topic may have.
REFUSED_AFTER_ACCEPT = frozenset({4401, 4403, 4404})
# The probe of an accepted socket: every endpoint refuses a frame that is no JSON object, saying so.
NOT_AN_OBJECT = "frame must be a JSON object"


def target_connection(target: str) -> type[ClientConnection]:
    """A client connection whose handshake asks for ``target`` (path and query) as given: websockets
    would parse a URI, and so normalise it, and refuses one it cannot parse."""

    class TargetConnection(ClientConnection):
        def handshake(self, *args: Any, **kwargs: Any) -> None:
            self.protocol.uri = dataclasses.replace(self.protocol.uri, path=target, query="")  # type: ignore[attr-defined]
            super().handshake(*args, **kwargs)

    return TargetConnection


def run_handshake(state: Fuzzed, target: str, headers: dict[str, str]) -> None:
    """Open a socket at ``target`` with ``headers``: refused with a 4xx and a clear body, or accepted
    and then answering a probe (or refusing with an error frame and a documented close)."""
    try:
        ws = ws_connect(f"ws://127.0.0.1:{state.server.port}", additional_headers=headers, open_timeout=TIMEOUT_S,
                        max_size=None, create_connection=target_connection(target))
    except InvalidStatus as refused:
        judge_refusal(refused.response)
    else:
        with ws:
            probe_accepted(ws)
    assert state.server.running, "server died:\n" + "".join(state.server.output[-50:])
    state.bystander.check()


def judge_refusal(response: Response) -> None:
    """A refused handshake: a 4xx whose body says why (JSON ``error`` from the consumers, ``detail``
    from the HTTP bounds, plain text from uvicorn's and websockets' parsers)."""
    status, body = response.status_code, response.body
    assert status in REFUSAL_STATUSES, f"handshake answered {status}: {body[:300]!r}"
    assert body.strip(), f"handshake refused with {status} and no body"
    if response.headers.get("content-type") == "application/json":
        refusal = json.loads(body)
        reason = refusal.get("error", refusal.get("detail")) if isinstance(refusal, dict) else None
        assert isinstance(reason, str) and reason, f"a refusal without error or detail: {body[:300]!r}"


def probe_accepted(ws: ClientConnection) -> None:
    """Send the probe; read, judging each frame, until its refusal or a documented close after an
    error frame."""
    with contextlib.suppress(ConnectionClosed):
        ws.send("[]")  # closed already: judged below, from its frames and close code
    refused = False
    try:
        for reply in replies(ws, "the probe"):
            reason = reply.get("errorMsg", reply.get("error", reply.get("reason")))
            if reason == NOT_AN_OBJECT:
                return
            judge_any(reply)
            refused = refused or reason is not None
    except ConnectionClosed as closed:
        code = close_code(closed)
        assert code in REFUSED_AFTER_ACCEPT, f"closed with {code} ({closed.rcvd}) before answering the probe"
        assert refused, f"closed with {code} without an error frame first"


def judge_any(reply: dict[str, Any]) -> None:
    """A frame of any endpoint: what one of the judges above takes, or a worker's rejection."""
    if reply.get("type") == "connection_rejected":
        assert isinstance(reply.get("reason"), str) and reply["reason"], reply
        return
    failures = []
    for judge in (judge_error, judge_ack, judge_worker):
        try:
            judge(reply)
            return
        except AssertionError as failed:
            failures.append(str(failed))
    raise AssertionError(f"no endpoint sends {reply}: {failures}")
