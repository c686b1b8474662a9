"""``manage.py runserver`` is Switchyard (websockets included) under Django's autoreloader."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.protocol import connect, make_topic, publish, recv_json, subscribe
from tests.servers import QUIET, READY, ROOT, ServerProcess

RELOAD_TIMEOUT_S = 30.0
# A module the server imports: touching it is a code change to the autoreloader.
WATCHED_MODULE = ROOT / "app" / "server" / "serving.py"


@dataclass(eq=False)
class Runserver(ServerProcess):
    """``manage.py runserver 127.0.0.1:0``: the reloader's process and the server it starts."""

    def command(self, port: int) -> list[str]:
        return [sys.executable, "manage.py", "runserver", f"127.0.0.1:{port}"]


@pytest.fixture
def runserver(_migrated: None) -> Iterator[Runserver]:
    proc = Runserver(os.environ["DATABASE_URL"], dict(QUIET), group=True)
    proc.start()
    yield proc
    proc.stop()
    assert proc.stopped_cleanly, "runserver needed SIGKILL"


async def assert_carries_a_message(server: ServerProcess) -> None:
    slug = make_topic()
    consumer = await subscribe(server.ws, slug)
    ack = await publish(await connect(server.ws + slug))
    assert (await recv_json(consumer))["messageId"] == ack["messageId"]


async def test_runserver_serves_websockets(runserver: Runserver):
    """runserver accepts websockets: a message goes from a producer to a consumer; the reloader watches."""
    await assert_carries_a_message(runserver)
    assert any("Watching for file changes" in line for line in runserver.output), runserver.output


async def test_runserver_restarts_on_a_code_change(runserver: Runserver):
    """After a code change the server restarts (ready again, on a new free port for port 0) and carries messages."""
    first = runserver.port
    readies = sum(line.startswith(READY) for line in runserver.output)
    deadline = time.monotonic() + RELOAD_TIMEOUT_S
    # Touched until the reloader notices: a change made before it took its first look would go unseen.
    while not any("changed, reloading" in line for line in runserver.output):
        assert time.monotonic() < deadline, "".join(runserver.output)
        os.utime(WATCHED_MODULE)
        await asyncio.sleep(0.5)  # bounded-poll
    while sum(line.startswith(READY) for line in runserver.output) == readies:
        assert time.monotonic() < deadline, "".join(runserver.output)
        await asyncio.sleep(0.05)  # bounded-poll
    runserver.started(next(line for line in reversed(runserver.output) if line.startswith(READY)))
    assert runserver.port != first
    await assert_carries_a_message(runserver)
