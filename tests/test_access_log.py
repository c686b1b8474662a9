"""The access log: one INFO line per HTTP request and per websocket handshake, credentials masked."""

from __future__ import annotations

import logging
import os
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from logging.handlers import QueueHandler

import pytest
from websockets.exceptions import InvalidStatus

from app.server import access_log
from app.server.access_log import MASK, mask_query, request_target, start_writer, stop_writer
from tests.protocol import connect, eventually, make_topic, publish, unique
from tests.server_log import _level
from tests.servers import QUIET, ServerProcess, start_server

# Log lines, written from the request scope: nothing here differs between databases.
pytestmark = pytest.mark.database_agnostic

SECRET = "s3cret-key-value"


def access_lines(server: ServerProcess, mark: int, needle: str) -> list[str]:
    return [line for line in server.output[mark:] if "switchyard.access" in line and needle in line]


async def logged(server: ServerProcess, mark: int, needle: str) -> list[str]:
    """The access lines since ``mark`` that contain ``needle``, once there is one."""
    await eventually(lambda: access_lines(server, mark, needle), message=f"an access line with {needle}")
    return access_lines(server, mark, needle)


def get(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code


async def logged_before_marker(server: ServerProcess, mark: int, access_log: bool = True) -> list[str]:
    """The output since ``mark`` up to the line a marker request (a 404) logs, once that line is read:
    all that the requests made before the marker logged (the output is read by another thread)."""
    path = f"/{unique('marker')}"
    assert get(server.http + path) == 404
    # Without an access log, Django's own warning for the 404 is the marker.
    needle = f" GET {path} 404 " if access_log else f"Not Found: {path}"
    await eventually(lambda: any(needle in line for line in server.output[mark:]), message=needle)
    end = next(n for n, line in enumerate(server.output) if n >= mark and needle in line)
    return server.output[mark:end]


def access_lines_in(lines: list[str], needle: str) -> list[str]:
    return [line for line in lines if "switchyard.access" in line and needle in line]


async def test_one_request_one_line(server: ServerProcess):
    """One HTTP request logs one INFO line with client address, method, path, status and duration."""
    mark, marker = len(server.output), unique("probe")
    assert get(f"{server.http}/healthz?probe={marker}") == 200
    lines = access_lines_in(await logged_before_marker(server, mark), marker)
    assert len(lines) == 1, lines
    assert _level(lines[0]) == "INFO"
    assert lines[0].split("switchyard.access: ", 1)[1].startswith("127.0.0.1:")
    assert f" GET /healthz?probe={marker} 200 " in lines[0] and lines[0].rstrip().endswith(" ms")


async def test_error_status_is_logged_at_info(server: ServerProcess):
    """A 404 answer is an access line at INFO with its status (never an ERROR record)."""
    mark, path = len(server.output), f"/{unique('missing')}"
    assert get(server.http + path) == 404
    line = (await logged(server, mark, f" GET {path} "))[0]
    assert _level(line) == "INFO" and f" GET {path} 404 " in line


async def test_token_in_the_query_is_masked(server: ServerProcess):
    """?token=, an encoded tok%65n= and api_key= values are masked; the other parameters are kept."""
    slug, mark = make_topic(), len(server.output)
    get(f"{server.http}/api/v1/topics/{slug}/status?token={SECRET}&tok%65n={SECRET}&api_key={SECRET}&x=1")
    line = (await logged(server, mark, slug))[0]
    assert SECRET not in "".join(server.output[mark:])
    assert f"?token={MASK}&tok%65n={MASK}&api_key={MASK}&x=1 " in line


async def test_websocket_handshake_is_one_line(server: ServerProcess):
    """A websocket handshake logs one line (WS, 101) with its ?token= masked, and its frames log none."""
    slug, mark = make_topic(), len(server.output)
    ws = await connect(f"{server.ws}{slug}?token={SECRET}")
    for n in range(3):
        await publish(ws, context=n)
    lines = access_lines_in(await logged_before_marker(server, mark), slug)
    assert len(lines) == 1 and f" WS /ws/{slug}?token={MASK} 101 " in lines[0], lines
    assert SECRET not in "".join(server.output[mark:])


@pytest.fixture
def one_socket_server(_migrated: None) -> Iterator[ServerProcess]:
    proc = start_server(os.environ["DATABASE_URL"], MAX_CONNECTIONS_PER_ADDRESS="1")
    yield proc
    proc.stop()


async def test_refused_handshake_shows_its_status(one_socket_server: ServerProcess):
    """A handshake refused with an HTTP answer (429: too many sockets) is logged with that status."""
    server, slug = one_socket_server, make_topic()
    mark = len(server.output)
    await connect(server.ws + slug)
    with pytest.raises(InvalidStatus):
        await connect(server.ws + slug)
    await logged(server, mark, f" WS /ws/{slug} 429 ")
    assert [line.split(f"/ws/{slug} ")[1].split()[0] for line in access_lines(server, mark, slug)] == ["101", "429"]


@pytest.fixture
def quiet_server(_migrated: None) -> Iterator[ServerProcess]:
    proc = start_server(os.environ["DATABASE_URL"], ACCESS_LOG="false")
    yield proc
    proc.stop()


async def test_access_log_can_be_switched_off(quiet_server: ServerProcess):
    """ACCESS_LOG=false logs no access line."""
    mark, marker = len(quiet_server.output), unique("probe")
    assert get(f"{quiet_server.http}/healthz?probe={marker}") == 200
    before = await logged_before_marker(quiet_server, mark, access_log=False)
    assert not [line for line in before if "switchyard.access" in line], before


@pytest.mark.parametrize(("query", "shown"), [
    ("token=abc", f"token={MASK}"),
    ("Token=abc&topics=a,b", f"Token={MASK}&topics=a,b"),
    ("tok%65n=abc", f"tok%65n={MASK}"),
    ("to+ken=abc&password=pw&sessionid=s&csrfmiddlewaretoken=c", f"to+ken=abc&password={MASK}&sessionid={MASK}"
                                                                  f"&csrfmiddlewaretoken={MASK}"),
    ("token", "token"),
    ("a=1&&b=2", "a=1&&b=2"),
])
def test_mask_query(query: str, shown: str):
    """Values of credential-like names are masked, whatever their encoding; the rest stays as sent."""
    assert mask_query(query) == shown


def test_target_cannot_forge_log_lines():
    """Control characters in a request target are escaped, and a long target is cut after masking."""
    scope = {"type": "http", "raw_path": b"/a\nb\x1b", "query_string": b"x=\r\n2024-01-01 ERROR forged"}
    assert "\n" not in request_target(scope) and "\r" not in request_target(scope)
    long = {"type": "http", "raw_path": b"/p", "query_string": b"token=" + b"Q" * 2000}
    assert "Q" not in request_target(long) and len(request_target({**long, "query_string": b"x" * 2000})) < 600


def test_backslash_is_escaped():
    """A literal backslash is escaped, so an escape sequence in the log always means what it says."""
    scope = {"type": "http", "raw_path": b"/x\\nforged"}
    assert request_target(scope) == "/x\\\\nforged"


def test_forwarded_client_address_cannot_forge_fields():
    """A client address taken from X-Forwarded-For (a proxy passes it on) cannot add fields to the line."""
    scope = {"type": "http", "method": "GET", "raw_path": b"/", "client": ("6.6.6.6 GET /admin/ 200", 1)}
    line = access_log.access_line(scope, 404, 0.001)
    assert line.split()[1:3] == ["GET", "/"] and line.split()[3] == "404", line


@dataclass(eq=False)
class ChattyServer(ServerProcess):
    """A server whose uvicorn logs at INFO (it logs handshakes with their query string)."""

    def command(self, port: int) -> list[str]:
        return [*super().command(port)[:-1], "info"]


async def test_uvicorn_info_log_shows_no_token(_migrated: None):
    """With uvicorn's log level at info, a ?token= still appears only masked."""
    server = ChattyServer(os.environ["DATABASE_URL"], dict(QUIET))
    server.start()
    try:
        assert server.command(0)[-2:] == ["--log-level", "info"]
        slug, mark = make_topic(), len(server.output)
        await connect(f"{server.ws}{slug}?token={SECRET}")
        before = await logged_before_marker(server, mark)
        # uvicorn's own handshake line, when it logs one, comes before the marker too.
        assert access_lines_in(before, slug) and SECRET not in "".join(before)
    finally:
        server.stop()


@dataclass(eq=False)
class DebugServer(ServerProcess):
    """A server logging everything at DEBUG, uvicorn (and the websockets protocol it runs) too."""

    def command(self, port: int) -> list[str]:
        return [*super().command(port)[:-1], "debug"]


async def test_debug_log_shows_no_credential_of_a_handshake(_migrated: None):
    """At DEBUG (SWITCHYARD_LOG_LEVEL and uvicorn's), a handshake's headers are logged with the
    Authorization value and a ?token= masked."""
    server = DebugServer(os.environ["DATABASE_URL"], {**QUIET, "SWITCHYARD_LOG_LEVEL": "DEBUG"})
    server.start()
    try:
        slug, mark = make_topic(), len(server.output)
        await connect(f"{server.ws}{slug}?token={SECRET}", headers={"Authorization": f"Bearer {SECRET}"})
        before = await logged_before_marker(server, mark)
        assert any(f"< authorization: {MASK}" in line for line in before), "no handshake header logged"
        assert any(f"?token={MASK} HTTP/1.1" in line for line in before)
        assert SECRET not in "".join(server.output)
    finally:
        server.stop()


class GatedOutput(logging.Handler):
    """An output that blocks until opened (a stderr nobody reads)."""

    def __init__(self) -> None:
        super().__init__()
        self.entered, self.opened = threading.Event(), threading.Event()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.entered.set()
        self.opened.wait(10)
        self.lines.append(record.getMessage())


@pytest.fixture
def gated() -> Iterator[GatedOutput]:
    output, level = GatedOutput(), access_log.logger.level
    access_log.logger.setLevel(logging.INFO)
    start_writer([output])
    try:
        yield output
    finally:
        output.opened.set()
        stop_writer()
        access_log.logger.setLevel(level)


def test_access_lines_never_wait_for_the_output(gated: GatedOutput):
    """Logging an access line returns while the output is blocked; the line is written once it is free."""
    access_log.logger.info("first")
    assert gated.entered.wait(10)
    access_log.logger.info("second")  # would wait for the output without the writer thread
    assert gated.lines == []
    gated.opened.set()
    stop_writer()
    assert gated.lines == ["first", "second"]
    assert access_log.logger.propagate
    assert not [handler for handler in access_log.logger.handlers if isinstance(handler, QueueHandler)]


def log_while_blocked(gated: GatedOutput, monkeypatch: pytest.MonkeyPatch, room: int, lines: int) -> None:
    """Restart the writer with room for ``room`` queued lines, and log lines "0" to ``lines - 1`` while
    the output is blocked on the first; then unblock it."""
    stop_writer()
    monkeypatch.setattr(access_log, "MAX_QUEUED_LINES", room)
    start_writer([gated])
    access_log.logger.info("0")
    assert gated.entered.wait(10)
    for n in range(1, lines):
        access_log.logger.info(str(n))
    gated.opened.set()


def test_a_full_queue_drops_lines_and_says_how_many(gated: GatedOutput, monkeypatch: pytest.MonkeyPatch):
    """Past MAX_QUEUED_LINES behind, lines are dropped; the next line written says how many were."""
    log_while_blocked(gated, monkeypatch, room=2, lines=6)
    deadline = time.monotonic() + 10
    while len(gated.lines) < 3:
        assert time.monotonic() < deadline, gated.lines
        time.sleep(0.01)  # bounded-poll
    access_log.logger.info("6")
    stop_writer()
    assert gated.lines == ["0", "1", "2", "3 access lines dropped: the log output was too slow", "6"]


def test_writer_reaches_configured_handlers_and_restores_them():
    """The writer hands lines to the handlers LOGGING put on the access logger and its parents (up to
    one that does not propagate), and puts the logger back as it was when it stops."""
    parent, own = logging.getLogger("switchyard"), access_log.logger
    on_parent, on_own = GatedOutput(), GatedOutput()
    on_parent.opened.set()
    on_own.opened.set()
    saved = (own.level, own.propagate, list(own.handlers), parent.propagate)
    own.setLevel(logging.INFO)
    own.addHandler(on_own)
    parent.addHandler(on_parent)
    parent.propagate = False  # the root's handlers are not reached
    try:
        start_writer()
        own.info("line")
        stop_writer()
        assert (on_own.lines, on_parent.lines) == (["line"], ["line"])
        assert own.handlers == [*saved[2], on_own] and own.propagate == saved[1]
    finally:
        own.removeHandler(on_own)
        parent.removeHandler(on_parent)
        own.setLevel(saved[0])
        parent.propagate = saved[3]


def test_lines_dropped_just_before_stop_are_counted(gated: GatedOutput, monkeypatch: pytest.MonkeyPatch):
    """Lines dropped with no later line to carry the count are counted when the writer stops."""
    log_while_blocked(gated, monkeypatch, room=1, lines=4)
    stop_writer()
    assert gated.lines[-1] == "2 access lines dropped: the log output was too slow", gated.lines
