"""The ``switchyard-client`` command line as scripts run it: real processes against a real server, their
JSON lines and exit codes."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import os
import pty
import signal
import socket
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest

from switchyard_client import Client
from switchyard_client.cli import exits
from switchyard_client.cli.output import Progress
from tests.protocol import eventually, make_topic, superuser_key, unique
from tests.servers import ROOT, ServerProcess

pytestmark = pytest.mark.wire_interop

RUN_TIMEOUT_S = 20.0
TIMEOUT_S = 10.0


@dataclass
class Run:
    code: int
    stdout: str
    stderr: str

    def lines(self) -> list[Any]:
        return [json.loads(line) for line in self.stdout.splitlines()]


def cli_env() -> dict[str, str]:
    """This checkout's client first on the path; no URL or token from the caller's environment."""
    env = {k: v for k, v in os.environ.items() if k not in ("SWITCHYARD_URL", "SWITCHYARD_TOKEN")}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "client"), str(ROOT), env.get("PYTHONPATH", "")])
    return env


async def start(server: ServerProcess | str, *args: str, stdin: int = asyncio.subprocess.DEVNULL,
                ) -> asyncio.subprocess.Process:
    url = server if isinstance(server, str) else server.http
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "switchyard_client.cli", "--url", url, *args, stdin=stdin,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=cli_env())


async def finished(proc: asyncio.subprocess.Process, stdin: bytes | None = None) -> Run:
    try:
        out, err = await asyncio.wait_for(proc.communicate(stdin), RUN_TIMEOUT_S)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise AssertionError(f"switchyard-client did not finish within {RUN_TIMEOUT_S} s") from None
    assert proc.returncode is not None
    return Run(proc.returncode, out.decode(), err.decode())


async def cli(server: ServerProcess | str, *args: str, stdin: bytes | None = None) -> Run:
    """``switchyard-client --url <server> *args``, finished, under a timeout."""
    proc = await start(server, *args, stdin=asyncio.subprocess.DEVNULL if stdin is None else asyncio.subprocess.PIPE)
    return await finished(proc, stdin)


def assert_one_line_error(run: Run, code: int) -> None:
    assert run.code == code, run
    assert len(run.stderr.splitlines()) == 1 and "Traceback" not in run.stderr, run.stderr


@pytest.fixture
def topic() -> str:
    """A public topic with Pulsar semantics that stores messages."""
    return make_topic(dasf=False, policy="store")


async def subscribed(server: ServerProcess, topic: str, subscription: str = "s") -> None:
    """Make the durable subscription (it then gets what is published from now on)."""
    async with Client(server.http) as client:
        await client.subscribe(topic, subscription).start()


async def published(server: ServerProcess, topic: str, *messages: bytes) -> list[str]:
    async with Client(server.http) as client:
        return await (await client.producer(topic)).send_many(messages)


async def test_produce_then_consume_round_trip(server: ServerProcess, topic: str) -> None:
    """Lines from stdin go out with -p and -k; consume prints each with its id, text or base64, and metadata."""
    await subscribed(server, topic)
    produced = await cli(server, "produce", topic, "-p", "origin=test", "-k", "k1", stdin=b"hello\n\n\xff\xfe\r\n")
    assert produced.code == 0, produced
    ids = [line["messageId"] for line in produced.lines()]
    consumed = await cli(server, "consume", topic, "-s", "s", "-n", "2", "--timeout", str(TIMEOUT_S))
    assert consumed.code == 0, consumed
    first, second = consumed.lines()
    assert [first["messageId"], second["messageId"]] == ids
    assert (first["data"], second["data_base64"]) == ("hello", base64.b64encode(b"\xff\xfe").decode())
    assert "data" not in second
    assert first["properties"] == {"origin": "test"} and first["key"] == "k1"
    assert first["redeliveryCount"] == 0 and first["publishTime"]


async def test_produce_sends_the_messages_n_times_in_order(server: ServerProcess, topic: str) -> None:
    """-n repeats the -m list, in order; one id line per message."""
    produced = await cli(server, "produce", topic, "-m", "a", "-m", "b", "-n", "3")
    assert produced.code == 0, produced
    async with Client(server.http) as client:
        reader = client.reader(topic, start="earliest")
        read = [await reader.receive(timeout=TIMEOUT_S) for _ in range(6)]
    assert [message.data for message in read] == [b"a", b"b"] * 3
    assert [line["messageId"] for line in produced.lines()] == [message.id for message in read]


async def test_produce_quiet_prints_only_a_summary(server: ServerProcess, topic: str) -> None:
    """--quiet prints one summary line with the count of acked messages."""
    produced = await cli(server, "produce", topic, "-m", "x", "-n", "300", "--quiet")
    assert produced.code == 0, produced
    [summary] = produced.lines()
    assert summary["sent"] == 300 and summary["seconds"] > 0 and summary["rate"] > 0


async def test_consume_takes_exactly_n_messages(server: ServerProcess, topic: str) -> None:
    """consume -n 3 prints and acks three messages and holds back none of the others."""
    await subscribed(server, topic)
    await published(server, topic, b"0", b"1", b"2", b"3", b"4")
    consumed = await cli(server, "consume", topic, "-s", "s", "-n", "3")
    assert consumed.code == 0, consumed
    assert [line["data"] for line in consumed.lines()] == ["0", "1", "2"]
    async with Client(server.http) as client:
        following = await client.subscribe(topic, "s").receive(timeout=TIMEOUT_S)
    assert (following.data, following.redelivery_count) == (b"3", 0)


async def test_consume_no_ack_leaves_the_message(server: ServerProcess, topic: str) -> None:
    """--no-ack prints the message without acking it: the subscription delivers it again."""
    await subscribed(server, topic)
    [message_id] = await published(server, topic, b"kept")
    consumed = await cli(server, "consume", topic, "-s", "s", "--no-ack")
    assert [line["messageId"] for line in consumed.lines()] == [message_id]
    async with Client(server.http) as client:
        again = await client.subscribe(topic, "s").receive(timeout=TIMEOUT_S)
    assert (again.id, again.redelivery_count) == (message_id, 1)


async def test_consume_timeout_with_too_few_messages_exits_4(server: ServerProcess, topic: str) -> None:
    """Fewer than -n messages within --timeout: what came is printed, then exit 4."""
    await subscribed(server, topic)
    await published(server, topic, b"only")
    consumed = await cli(server, "consume", topic, "-s", "s", "-n", "2", "--timeout", "0.5")
    assert [line["data"] for line in consumed.lines()] == ["only"]
    assert_one_line_error(consumed, exits.TIMEOUT)
    assert "1 of 2" in consumed.stderr


async def test_consume_without_limit_ends_at_the_timeout(server: ServerProcess, topic: str) -> None:
    """-n 0 with --timeout prints what came and exits 0 when the time is up."""
    await subscribed(server, topic)
    await published(server, topic, b"a", b"b")
    consumed = await cli(server, "consume", topic, "-s", "s", "-n", "0", "--timeout", "0.5")
    assert (consumed.code, [line["data"] for line in consumed.lines()]) == (0, ["a", "b"])


async def test_read_from_the_earliest(server: ServerProcess, topic: str) -> None:
    """read --start earliest prints the stored history in order."""
    ids = await published(server, topic, b"old-1", b"old-2", b"old-3")
    read = await cli(server, "read", topic, "--start", "earliest", "-n", "3", "--timeout", str(TIMEOUT_S))
    assert read.code == 0, read
    assert [line["messageId"] for line in read.lines()] == ids
    assert [line["data"] for line in read.lines()] == ["old-1", "old-2", "old-3"]


async def test_a_missing_topic_exits_3(server: ServerProcess) -> None:
    """A handshake refused with 404 exits 3 with one line on stderr."""
    run = await cli(server, "produce", unique("missing"), "-m", "x")
    assert_one_line_error(run, exits.REFUSED)
    assert "404" in run.stderr


async def test_a_bad_token_exits_3(server: ServerProcess) -> None:
    """An invalid token on a topic anonymous clients may not consume is refused (401): exit 3."""
    private = make_topic(dasf=False, policy="store", public=False, anonymous=False)
    run = await cli(server, "--token", "not-a-token", "consume", private, "-s", "s")
    assert_one_line_error(run, exits.REFUSED)
    assert "401" in run.stderr


async def test_an_error_ack_exits_5(server: ServerProcess) -> None:
    """A message the broker refuses (a delay on a disabled topic) exits 5 with its error."""
    disabled = make_topic(dasf=False, policy="disabled")
    run = await cli(server, "produce", disabled, "-m", "x", "--deliver-after", "5")
    assert_one_line_error(run, exits.REJECTED)
    assert "send-error:8" in run.stderr and run.stdout == ""


@pytest.mark.parametrize("args", [
    ["produce", "t", "-m", "x", "-p", "no-equals-sign"],
    ["emit", "t.type", "/source", "--data", "{not json"],
    ["consume", "t"],
    ["consume", "t", "-s", "s", "-n", "-1"],
    ["--url", "ftp://example.org", "status", "t"],
    ["produce", "a/b", "-m", "x"],
], ids=["property", "json", "no-subscription", "negative-count", "url", "topic-name"])
async def test_bad_arguments_exit_2(server: ServerProcess, args: list[str]) -> None:
    """Bad arguments exit 2 with one line on stderr, before anything is sent."""
    assert_one_line_error(await cli(server, *args), exits.USAGE)


async def test_produce_from_a_terminal_needs_messages(server: ServerProcess, topic: str) -> None:
    """produce without -m or -f and stdin on a terminal does not wait for typing: exit 2."""
    controller, terminal = pty.openpty()
    try:
        run = await finished(await start(server, "produce", topic, stdin=terminal))
    finally:
        os.close(terminal)
        os.close(controller)
    assert_one_line_error(run, exits.USAGE)


async def test_no_server_exits_6() -> None:
    """Nothing listens at the URL: exit 6 once the connect timeout is up."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    run = await cli(f"http://127.0.0.1:{port}", "--connect-timeout", "0.5", "produce", "t", "-m", "x")
    assert_one_line_error(run, exits.UNREACHABLE)


async def test_sigterm_exits_130(server: ServerProcess, topic: str) -> None:
    """SIGTERM ends a consumer waiting forever cleanly: exit 130, no traceback."""
    await subscribed(server, topic)
    proc = await start(server, "consume", topic, "-s", "s", "-n", "0")
    try:
        await published(server, topic, b"first")
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), TIMEOUT_S)
        assert json.loads(line)["data"] == "first"
        proc.send_signal(signal.SIGTERM)
        run = await finished(proc)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert (run.code, run.stderr) == (exits.INTERRUPTED, "")


async def test_status_prints_the_topic_status(server: ServerProcess) -> None:
    """status prints the HTTP API's TopicStatus JSON and exits 0 whatever the status."""
    dasf_topic = make_topic()
    run = await cli(server, "status", dasf_topic)
    assert run.code == 0, run
    [status] = run.lines()
    assert (status["topic"], status["status"]) == (dasf_topic, "unknown")


async def test_status_check_of_a_topic_not_online_exits_7(server: ServerProcess) -> None:
    """status --check exits 7 for a topic nobody serves, still printing its status."""
    run = await cli(server, "status", make_topic(), "--check")
    assert run.code == exits.OFFLINE and run.lines()[0]["status"] == "unknown"


async def test_status_of_a_missing_topic_exits_3(server: ServerProcess) -> None:
    """The API's 404 for a missing topic exits 3."""
    assert_one_line_error(await cli(server, "status", unique("missing")), exits.REFUSED)


async def test_watch_prints_status_frames_until_n(server: ServerProcess) -> None:
    """watch TOPIC -n 1 prints the topic's status frame as the feed sends it, then exits 0."""
    dasf_topic = make_topic()
    run = await cli(server, "watch", dasf_topic, "-n", "1", "--timeout", str(TIMEOUT_S))
    assert run.code == 0, run
    [frame] = run.lines()
    assert (frame["type"], frame["topic"], frame["status"]) == ("status", dasf_topic, "unknown")


async def test_emit_prints_the_stored_event(server: ServerProcess) -> None:
    """emit records the event through the HTTP API and prints it as stored."""
    from app.outbox.models import OutboxEvent

    run = await cli(server, "--token", superuser_key(), "emit", "com.example.cli", "/tests/cli",
                    "--data", '{"n": 1}', "--key", "k1", "--subject", "s1")
    assert run.code == 0, run
    [event] = run.lines()
    assert (event["type"], event["source"], event["data"], event["status"]) == (
        "com.example.cli", "/tests/cli", {"n": 1}, "pending")
    row = OutboxEvent.objects.get(event_id=event["id"])
    assert (row.key, row.subject) == ("k1", "s1")


async def test_emit_without_the_right_exits_3(server: ServerProcess) -> None:
    """An anonymous emit is refused by the API: exit 3."""
    assert_one_line_error(await cli(server, "emit", "com.example.cli", "/tests/cli"), exits.REFUSED)


async def add_or_fail(call: Any) -> Any:
    if call.get("func_name") != "add":
        raise ValueError(f"no function {call.get('func_name')!r}")
    return call["a"] + call["b"]


@pytest.fixture
async def module(server: ServerProcess) -> AsyncIterator[str]:
    """A DASF topic served by Client.serve in this process (adds, or answers an error); its topic."""
    from app.broker.models import Topic

    dasf_topic = make_topic()
    async with Client(server.http) as client:
        serving = asyncio.create_task(client.serve(dasf_topic, add_or_fail, api_info={"functions": ["add"]}))
        # It answered the broker's api_info probe: it is subscribed.
        await eventually(lambda: Topic.objects.get(slug=dasf_topic).api_info, TIMEOUT_S, "the module's api_info")
        try:
            yield dasf_topic
        finally:
            serving.cancel()
            await asyncio.gather(serving, return_exceptions=True)


async def test_request_prints_the_result(server: ServerProcess, module: str) -> None:
    """request prints the module's result as JSON."""
    run = await cli(server, "request", module, '{"func_name": "add", "a": 2, "b": 3}', "--timeout", str(TIMEOUT_S))
    assert (run.code, run.lines()) == (0, [5]), run


async def test_request_answered_with_an_error_exits_5(server: ServerProcess, module: str) -> None:
    """A module's error answer exits 5 with its message on stderr."""
    run = await cli(server, "request", module, '{"func_name": "nope"}', "--timeout", str(TIMEOUT_S))
    assert_one_line_error(run, exits.REJECTED)
    assert "no function 'nope'" in run.stderr


async def test_request_without_answer_exits_4(server: ServerProcess) -> None:
    """A request to a topic nobody serves exits 4 after --timeout."""
    run = await cli(server, "request", make_topic(), '{"func_name": "add"}', "--timeout", "0.5")
    assert_one_line_error(run, exits.TIMEOUT)


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


async def test_progress_line_rewrites_itself_and_is_erased() -> None:
    """The progress line shows the count and rate, rewritten with \\r, and is erased at the end."""
    stream = Terminal()
    async with Progress("consumed", True, stream, after_s=0, every_s=0.01) as progress:
        progress.count = 42
        await eventually(lambda: stream.getvalue().count("\r") >= 2, TIMEOUT_S, "two progress lines")
    shown = stream.getvalue()
    assert "consumed 42 messages" in shown and "msg/s" in shown
    assert shown.endswith("\r\x1b[K")
