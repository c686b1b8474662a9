"""What answers on /ws/status-ping may cost: api_info bounded in size and depth before it is stored,
pongs written at most once per PONG_WRITE_MIN_INTERVAL_S per topic, repeated api_info not rewritten."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest

from app import codec
from app.availability.answers import AnswerWrites, ApiInfoWrite, api_info_problem
from app.broker.models import Topic
from tests.bad_input import Sockets, assert_error, last_pong, pong, recv
from tests.protocol import make_topic, send_json
from tests.servers import ServerProcess, start_server

pytestmark = pytest.mark.usefixtures("no_server_crash")

INTERVAL_S = 1.0


def api_answer(source: str, api_info: str, context: str = "1") -> dict[str, Any]:
    """What demessaging sends to status-ping in answer to an api_info probe."""
    return {"payload": "", "context": context, "properties": {
        "messageType": "response", "requestContext": context, "source_topic": source, "api_info": api_info}}


def nested(depth: int) -> str:
    return "[" * (depth - 1) + "{}" + "]" * (depth - 1)


def stored_api_info(slug: str) -> Any:
    return Topic.objects.values_list("api_info", flat=True).get(slug=slug)


# --- the rules, without a server -------------------------------------------------------------


def test_second_pong_within_the_interval_is_not_written():
    """A pong for a topic written less than the interval ago makes the next one unnecessary."""
    writes = AnswerWrites(INTERVAL_S)
    assert writes.pong("a", 100.0)
    assert not writes.pong("a", 100.5)
    assert writes.pong("a", 101.0)


def test_pong_interval_is_per_topic():
    """One topic's pong does not hold back another's."""
    writes = AnswerWrites(INTERVAL_S)
    assert writes.pong("a", 100.0)
    assert writes.pong("b", 100.1)


def test_repeated_api_info_is_not_rewritten():
    """The api_info written for a topic within the interval is not written again; after it, it is."""
    writes = AnswerWrites(INTERVAL_S)
    assert writes.api_info("a", '{"functions": []}', 100.0) is ApiInfoWrite.WRITE
    assert writes.api_info("a", '{"functions": []}', 100.5) is ApiInfoWrite.WRITTEN
    assert writes.api_info("a", '{"functions": []}', 101.0) is ApiInfoWrite.WRITE


def test_another_api_info_within_the_interval_is_too_soon():
    """A different api_info within the interval is refused (never acked unwritten); after it, written."""
    writes = AnswerWrites(INTERVAL_S)
    assert writes.api_info("a", '{"functions": []}', 100.0) is ApiInfoWrite.WRITE
    assert writes.api_info("a", '{"functions": ["add"]}', 100.25) is ApiInfoWrite.TOO_SOON
    assert writes.api_info("a", '{"functions": ["add"]}', 101.0) is ApiInfoWrite.WRITE
    assert writes.api_info("b", '{"functions": ["add"]}', 101.0) is ApiInfoWrite.WRITE


def test_a_failed_write_gives_its_turn_back():
    """When a pong or api_info could not be written, the next answer is written."""
    writes = AnswerWrites(INTERVAL_S)
    assert writes.pong("a", 100.0)
    writes.pong_failed("a")
    assert writes.pong("a", 100.1)
    assert writes.api_info("a", "{}", 100.0) is ApiInfoWrite.WRITE
    writes.api_info_failed("a")
    assert writes.api_info("a", "{}", 100.1) is ApiInfoWrite.WRITE


def test_a_zero_interval_writes_every_answer():
    """PONG_WRITE_MIN_INTERVAL_S = 0 writes each pong and each api_info."""
    writes = AnswerWrites(0.0)
    assert writes.pong("a", 100.0) and writes.pong("a", 100.0)
    assert writes.api_info("a", "{}", 100.0) is writes.api_info("a", "{}", 100.0) is ApiInfoWrite.WRITE


def test_old_entries_are_forgotten():
    """Topics answered longer than the interval ago are not kept (memory follows recent answers)."""
    writes = AnswerWrites(INTERVAL_S)
    for n in range(1000):
        writes.pong(f"t{n}", 100.0)
        writes.api_info(f"t{n}", "{}", 100.0)
    writes.pong("late", 102.0)
    assert len(writes._pongs) == 1 and not writes._apis


@pytest.mark.parametrize(("text", "problem"), [
    ('{"functions": []}', None),
    (nested(codec.MAX_DEPTH), None),
    (nested(codec.MAX_DEPTH + 1), "nests deeper"),
    ('"' + "x" * 2000 + '"', "more than the 1024 allowed"),
    ('{"functions": ["f\\u0000"]}', "NUL"),
    ('{"classes": {"\\u0000": []}}', "NUL"),
    ('{"functions": [1e20]}', "2**63"),
])
def test_api_info_problem(text, problem):
    """api_info is refused above the size limit, deeper than a frame may nest, or holding what
    PostgreSQL's jsonb cannot hold or hand back writable (a NUL character, a number past 2**63)."""
    found = api_info_problem(text, codec.loads(text), max_bytes=1024)
    assert found == problem if problem is None else problem in found


# --- on a server -------------------------------------------------------------------------------


async def test_too_deep_api_info_is_refused_and_not_stored(server: ServerProcess, sockets: Sockets) -> None:
    """An api_info nesting deeper than a frame may (readable by orjson, not by the admin) gets an error
    ack; the stored api_info stays, and the socket answers the next frame."""
    slug = make_topic()
    answers = await sockets.connect(server.ws + "status-ping")
    await send_json(answers, api_answer(slug, '{"functions": [], "classes": []}', "1"))
    assert (await recv(answers))["result"] == "ok"
    for context, depth in (("2", codec.MAX_DEPTH + 1), ("3", 974), ("4", 1100)):
        await send_json(answers, api_answer(slug, nested(depth), context))
        assert_error(await recv(answers), "nests deeper")
    assert stored_api_info(slug) == {"functions": [], "classes": []}
    await send_json(answers, pong(slug, "5"))
    assert (await recv(answers))["result"] == "ok"


async def test_oversized_api_info_is_refused_and_not_stored(server: ServerProcess, sockets: Sockets) -> None:
    """An api_info above MAX_API_INFO_BYTES gets an error ack and is not stored."""
    slug = make_topic()
    answers = await sockets.connect(server.ws + "status-ping")
    big = codec.dumps({"functions": [f"f{n:06d}" for n in range(40_000)]})
    await send_json(answers, api_answer(slug, big))
    assert_error(await recv(answers), "bytes, more than")
    assert stored_api_info(slug) in (None, {})


@pytest.fixture
def slow_pong_writes(_migrated: None) -> Iterator[ServerProcess]:
    """A server that writes a topic's answers at most once a minute (so a flood is seen not to write)."""
    proc = start_server(os.environ["DATABASE_URL"], PONG_GRACE_S="120", PONG_WRITE_MIN_INTERVAL_S="60")
    yield proc
    proc.stop()


async def test_pong_flood_writes_once(slow_pong_writes: ServerProcess, sockets: Sockets) -> None:
    """A flood of pongs for one topic is acked, and written once per interval."""
    slug = make_topic()
    answers = await sockets.connect(slow_pong_writes.ws + "status-ping")
    await send_json(answers, pong(slug, "0"))
    assert (await recv(answers))["result"] == "ok"
    written = last_pong(slug)
    assert written is not None
    for n in range(1, 100):
        await send_json(answers, pong(slug, str(n)))
    for n in range(1, 100):
        ack = await recv(answers)
        assert ack["result"] == "ok" and ack["context"] == str(n), ack
    assert last_pong(slug) == written


async def test_api_info_flood_is_written_once_per_interval(slow_pong_writes: ServerProcess, sockets: Sockets) -> None:
    """Ever different api_info answers within the interval after the first are refused with an error
    ack (none is acked unwritten); the stored api_info is the first, and a repeat of it is acked."""
    slug = make_topic()
    answers = await sockets.connect(slow_pong_writes.ws + "status-ping")
    await send_json(answers, api_answer(slug, '{"functions": ["f0"]}', "0"))
    assert (await recv(answers))["result"] == "ok"
    for n in range(1, 50):
        await send_json(answers, api_answer(slug, f'{{"functions": ["f{n}"]}}', str(n)))
    for n in range(1, 50):
        refusal = await recv(answers)
        assert_error(refusal, "changed again within 60 s")
        assert refusal["context"] == str(n), refusal
    await send_json(answers, api_answer(slug, '{"functions": ["f0"]}', "50"))
    assert (await recv(answers))["result"] == "ok"
    assert stored_api_info(slug) == {"functions": ["f0"]}
