"""Fuzzing what a consumer says about messages it really holds (tests/test_fuzz_dasf.py,
tests/test_fuzz_pulsar.py): acks, negative acks and permits built from the ids of real deliveries.

One example publishes a few messages on a storing topic, has a consumer receive them, then sends a
generated mix made from their ids: acks (once, twice, with fields added), negative acks, acks of an
id it does not hold (another topic's, or the id mutated), permits with hostile counts, garbage, and
reconnects. A ``Ledger`` follows what the server must make of each frame (taken silently, or
refused with an error frame), so every refusal is counted, not only judged well-formed; a delivery
of a message validly acked before fails at once. After the consumer closes, a fresh consumer on the
same subscription must get every message published and not validly acked, and none validly acked:
a marker published last ends its replay (replays come in publish order). ``Side`` says how one
endpoint is opened and fed; the harness (tests/fuzz_sockets.py) judges the frames and the server.
"""

from __future__ import annotations

import base64
import contextlib
import json
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from hypothesis import strategies as st
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection
from websockets.sync.client import connect as ws_connect

from tests.frame_strategies import EDGE_INTEGERS, GARBAGE, TEXT, VALUES, Frame, b64
from tests.fuzz_sockets import TIMEOUT_S, Fuzzed, ack_probe, close_code, judge_error, probe_tag, replies

CLOSE_NORMAL = 1000
# Messages one example publishes; an action's index picks one of them (modulo).
MESSAGES = st.integers(1, 5)
INDEX = st.integers(0, 7)
# The ways an id is broken: each yields a string that is not the id (ids are UUID strings; Pulsar's
# own ids are base64 of ledger and entry numbers, so those shapes are tried too).
MUTATIONS = ["flip", "truncate", "upper", "braces", "no_dashes", "append", "nul", "space", "base64", "ledger",
             "other_uuid"]
# Hostile permit counts: the edges of int32/int64, zero and negatives, and values of other types.
PERMITS = st.one_of(st.integers(-3, 5), st.sampled_from([*EDGE_INTEGERS, True, False, 1.0, "3", None]), VALUES)

ACTIONS = st.one_of(
    st.tuples(st.just("ack"), INDEX),
    st.tuples(st.just("ack_twice"), INDEX),
    st.tuples(st.just("nack"), INDEX),
    st.tuples(st.just("foreign"), st.booleans()),
    st.tuples(st.just("mutated"), INDEX, st.sampled_from(MUTATIONS)),
    st.tuples(st.just("extra"), INDEX, TEXT.filter(lambda key: key not in ("messageId", "type")), VALUES),
    st.tuples(st.just("permit"), PERMITS),
    st.tuples(st.just("garbage"), GARBAGE),
    st.tuples(st.just("reconnect")),
)
Action = tuple[Any, ...]


def mutate(message_id: str, how: str) -> str:
    """``message_id`` broken in the way ``how`` names (never equal to it)."""
    mutated = {
        "flip": message_id[:-1] + ("0" if message_id[-1] != "0" else "1"),
        "truncate": message_id[:-1],
        "upper": message_id.upper() if message_id != message_id.upper() else message_id.lower(),
        "braces": "{" + message_id + "}",
        "no_dashes": message_id.replace("-", "") + ("" if "-" in message_id else "x"),
        "append": message_id + "0",
        "nul": message_id + "\x00",
        "space": " " + message_id,
        "base64": base64.b64encode(message_id.encode()).decode(),
        "ledger": base64.b64encode(b"\x08\x01\x10\x00" + message_id.encode()[:4]).decode(),
        "other_uuid": str(uuid.uuid4()),
    }[how]
    assert mutated != message_id, how
    return mutated


@dataclass(frozen=True)
class Rules:
    """What a consumer endpoint takes: DASF consumers take acks only; Pulsar ones negative acks,
    and permits in pull mode."""

    pulsar: bool = False
    pull: bool = False


@dataclass
class Ledger:
    """The fuzzed subscription's messages: published, validly acked, and in flight on the current
    connection (id -> whether it was negatively acked)."""

    published: list[str]
    rules: Rules
    acked: set[str] = field(default_factory=set)
    held: dict[str, bool] = field(default_factory=dict)

    def owed(self) -> set[str]:
        """What a fresh consumer of the subscription must get again: every message not acked."""
        return set(self.published) - self.acked

    def delivered(self, reply: dict[str, Any]) -> None:
        message_id = reply["messageId"]
        assert message_id not in self.acked, f"{message_id} was acked, and delivered again: {reply}"
        if message_id in self.published:
            assert message_id not in self.held, f"{message_id} delivered twice on one connection: {reply}"
            self.held[message_id] = False

    def ack(self, message_id: Any) -> bool:
        """Whether an ack of ``message_id`` is taken (not refused), and the ledger after it."""
        if not isinstance(message_id, str) or message_id not in self.held:
            return False
        del self.held[message_id]
        self.acked.add(message_id)
        return True

    def nack(self, message_id: str) -> bool:
        if not self.rules.pulsar or self.held.get(message_id, True):
            return False  # DASF paths take acks only; a nacked or unknown one is no longer in flight
        self.held[message_id] = True
        return True

    def permit(self, count: Any) -> bool:
        # Past 64 bits the frame is no JSON the server reads (orjson), and refused as such.
        return self.rules.pull and type(count) is int and 0 < count < 2**64


def frames_of(action: Action, ledger: Ledger, foreign: list[str]) -> list[tuple[Frame, bool]]:
    """The frames of ``action``, each with whether the server must refuse it (the ledger moves on as
    the server's state must: frames are taken in order)."""
    kind, *args = action
    if kind in ("ack", "ack_twice"):
        message_id = ledger.published[args[0] % len(ledger.published)]
        return [(json.dumps({"messageId": message_id}), not ledger.ack(message_id))
                for _ in range(2 if kind == "ack_twice" else 1)]
    if kind == "nack":
        message_id = ledger.published[args[0] % len(ledger.published)]
        frame = {"type": "negativeAcknowledge", "messageId": message_id}
        return [(json.dumps(frame), not ledger.nack(message_id))]
    if kind == "foreign":  # held by another consumer (of another topic or subscription), not this one
        message_id = foreign[0] if args[0] else foreign[-1]
        return [(json.dumps({"messageId": message_id}), not ledger.ack(message_id))]
    if kind == "mutated":
        message_id = mutate(ledger.published[args[0] % len(ledger.published)], args[1])
        return [(json.dumps({"messageId": message_id}), not ledger.ack(message_id))]
    if kind == "extra":  # never an ack: an ack is exactly {"messageId"}
        message_id = ledger.published[args[0] % len(ledger.published)]
        return [(json.dumps({"messageId": message_id, args[1]: args[2]}), True)]
    if kind == "permit":
        return [(json.dumps({"type": "permit", "permitMessages": args[0]}), not ledger.permit(args[0]))]
    assert kind == "garbage", action
    return [(args[0], True)]


# --- one endpoint's sockets ---------------------------------------------------------------------


@dataclass(frozen=True)
class Side:
    """How a consumer endpoint is opened and fed: its path (and query) and its rules. ``ready`` is
    sent on each new connection (a pull consumer's permits) before its deliveries are awaited."""

    consumer: str
    rules: Rules
    ready: Callable[[ClientConnection], None] = lambda ws: None


def open_ws(state: Fuzzed, path: str) -> ClientConnection:
    """A socket as the admin; a 409 (the same subscription's previous consumer still leaving, as
    Pulsar's ConsumerBusy) is retried until TIMEOUT_S, as a client would."""
    deadline = time.monotonic() + TIMEOUT_S
    while True:
        try:
            return ws_connect(state.base + path, additional_headers={"Authorization": f"Token {state.keys['admin']}"},
                              open_timeout=TIMEOUT_S, max_size=None)
        except InvalidStatus as refused:
            if refused.response.status_code != 409 or time.monotonic() > deadline:
                raise
            time.sleep(0.02)  # bounded-poll: the server says nothing when the previous consumer left


def publish(ws: ClientConnection, text: str) -> str:
    """Publish ``text`` and return its id from the producer's ok ack."""
    ws.send(json.dumps({"payload": b64(text), "properties": {}, "context": text}))
    ack = json.loads(ws.recv(timeout=TIMEOUT_S))
    assert ack.get("result") == "ok" and ack.get("context") == text, ack
    return str(ack["messageId"])


def await_deliveries(ws: ClientConnection, wanted: set[str], ledger: Ledger | None = None,
                     ack_all: bool = False) -> list[dict[str, Any]]:
    """Read until every id of ``wanted`` was delivered (each delivery passes the ledger when given;
    ``ack_all``: each is acked, so nothing of it is left for the next example): the deliveries."""
    missing, seen = set(wanted), list[dict[str, Any]]()
    if not missing:
        return seen
    for reply in replies(ws, f"the deliveries of {sorted(missing)}"):
        judge_error(reply)
        assert "messageId" in reply, f"an error frame where a delivery was awaited: {reply}"
        if ledger is not None:
            ledger.delivered(reply)
        if ack_all:
            ws.send(json.dumps({"messageId": reply["messageId"]}))
        seen.append(reply)
        missing.discard(reply["messageId"])
        if not missing:
            return seen
    raise AssertionError("unreachable")


def await_refusals(ws: ClientConnection, ledger: Ledger, number: int, refused: int) -> None:
    """Send probe ``number``; read to its refusal, counting refusals on the way (``refused`` must
    come) and passing deliveries to the ledger."""
    ws.send(json.dumps(ack_probe(number)))
    count = 0
    try:
        for reply in replies(ws, f"probe {number}"):
            judge_error(reply)
            if "messageId" in reply:
                ledger.delivered(reply)
            elif str(reply.get("errorMsg", "")).endswith(probe_tag(number)):
                assert count == refused, f"{count} refusals where the frames sent ask {refused}"
                return
            else:
                count += 1
    except ConnectionClosed as closed:
        raise AssertionError(f"the consumer closed with {close_code(closed)} ({closed.rcvd})") from None


@contextlib.contextmanager
def consumer(state: Fuzzed, side: Side) -> Iterator[ClientConnection]:
    with open_ws(state, side.consumer) as ws:
        side.ready(ws)
        yield ws


def fuzz_consumer(state: Fuzzed, side: Side, first: ClientConnection, ledger: Ledger, foreign: list[str],
                  actions: list[Action]) -> None:
    """On ``first`` (a consumer opened before the ledger's messages were published), receive them,
    then send ``actions``; each stretch of frames up to a reconnect (close, and a new connection must
    get what is owed) or the end is judged by its probe."""
    with contextlib.ExitStack() as sockets:
        ws = first
        await_deliveries(ws, set(ledger.published), ledger)
        refused = 0
        for action in actions:
            if action[0] != "reconnect":
                for frame, refuse in frames_of(action, ledger, foreign):
                    ws.send(frame)
                    refused += refuse
                continue
            await_refusals(ws, ledger, next(state.probes), refused)
            refused = 0
            ws.close()
            ledger.held.clear()
            ws = sockets.enter_context(consumer(state, side))
            await_deliveries(ws, ledger.owed(), ledger)
        await_refusals(ws, ledger, next(state.probes), refused)
        ws.close()


def assert_owed_redelivered(state: Fuzzed, side: Side, producer: ClientConnection, ledger: Ledger) -> None:
    """A fresh consumer gets every message not validly acked and none that was: up to a marker
    published last (replays come in publish order), each delivery acked."""
    marker = publish(producer, f"marker-{next(state.probes)}")
    with consumer(state, side) as ws:
        seen = {reply["messageId"] for reply in await_deliveries(ws, {marker}, ack_all=True)}
        await_refusals(ws, Ledger([], side.rules), next(state.probes), 0)  # every ack taken
        if side.rules.pulsar:  # the example's subscription goes (SUBSCRIPTIONS_PER_PRINCIPAL)
            unsubscribe(ws)
    published = set(ledger.published)
    assert seen & published == ledger.owed(), (
        f"redelivered {sorted(seen & published)}; owed {sorted(ledger.owed())} (acked {sorted(ledger.acked)})")


def unsubscribe(ws: ClientConnection) -> None:
    """Delete the subscription: the server closes with 1000 (README, Pulsar consumer frames)."""
    ws.send(json.dumps({"type": "unsubscribe"}))
    try:
        for reply in replies(ws, "the close after unsubscribe"):
            judge_error(reply)
            assert "messageId" in reply, f"unsubscribe refused: {reply}"
    except ConnectionClosed as closed:
        assert close_code(closed) == CLOSE_NORMAL, f"closed with {close_code(closed)} after unsubscribe"


def check_server(state: Fuzzed) -> None:
    assert state.server.running, "server died:\n" + "".join(state.server.output[-50:])
    state.bystander.check()
