"""``manage.py runserver`` is Switchyard (websockets included) under Django's autoreloader."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from websockets.asyncio.client import ClientConnection

from tests.databases import query
from tests.protocol import connect, eventually, make_topic, publish, recv_json, send_json, subscribe, unique
from tests.servers import QUIET, READY, ROOT, ServerProcess, group_members, manage, migrated_database_url

# The autoreloader and its child process: the database work under runserver is serve's, tested on both.
pytestmark = pytest.mark.database_agnostic

RELOAD_TIMEOUT_S = 30.0
# What uvicorn closes websockets with when it shuts down gracefully (a killed server: 1006).
SERVICE_RESTART = 1012
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


@pytest.fixture
def own_runserver(tmp_path: Path) -> Iterator[Runserver]:
    """runserver on a database of its own, with garbage collection on (so it holds that lease)."""
    url = migrated_database_url(tmp_path, "runserver")
    proc = Runserver(url, {**QUIET, "GC_INTERVAL_S": "3600"}, group=True)
    proc.start()
    yield proc
    proc.stop()


def lease_holder(server: ServerProcess) -> object:
    rows = query(server.database_url, "SELECT holder FROM leases_lease WHERE name = %s", ("garbage-collection",))
    return rows[0][0] if rows else None


async def closed_with(ws: ClientConnection) -> int | None:
    await asyncio.wait_for(ws.wait_closed(), RELOAD_TIMEOUT_S)
    return ws.close_code


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
    consumer = await subscribe(runserver.ws, make_topic())
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
    # The old server shut down gracefully, not killed with its sockets.
    assert await closed_with(consumer) == SERVICE_RESTART


async def test_sigterm_shuts_runserver_down_gracefully(own_runserver: Runserver):
    """SIGTERM runs the lifespan shutdown: sockets close with 1012, a just-sent ack commits, the lease is freed."""
    server, slug = own_runserver, unique("graceful")
    manage(server.database_url, "dasf_topic", slug, "--new", "--anonymous", "--no-dasf", "--store-messages", "cache")
    consumer = await subscribe(server.ws, slug, probe=False)
    ack = await publish(await connect(server.ws + slug))
    assert (await recv_json(consumer))["messageId"] == ack["messageId"]
    await eventually(lambda: lease_holder(server), message="the garbage collection lease taken")
    await send_json(consumer, {"messageId": ack["messageId"]})
    # On a thread: the client must be free to answer the server's closing handshake meanwhile.
    await asyncio.to_thread(server.stop)
    assert server.stopped_cleanly, "".join(server.output)
    assert await closed_with(consumer) == SERVICE_RESTART
    assert query(server.database_url, "SELECT m.id FROM broker_message m JOIN broker_topic t ON m.topic_id = t.id "
                                      "WHERE t.slug = %s", (slug,)) == []
    assert lease_holder(server) is None  # released: its row deleted


def process_state(pid: int) -> str:
    """The state letter of process ``pid`` (``T``: stopped by a signal)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat[stat.rindex(")") + 2]


def pending_signals(pid: int) -> set[int]:
    """The signals waiting to be delivered to process ``pid`` (a stopped process keeps them)."""
    masks = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        masks[name] = int(value.strip(), 16) if name in ("SigPnd", "ShdPnd") else None
    bits = masks["SigPnd"] | masks["ShdPnd"]
    return {n for n in range(1, 64) if bits & (1 << (n - 1))}


def test_second_sigterm_ends_a_server_stuck_stopping(runserver: Runserver):
    """A server that hangs while stopping (here: frozen) is killed when runserver is asked to stop again."""
    parent = runserver.proc
    assert parent is not None
    server_pids = [pid for pid in group_members(parent.pid) if pid != parent.pid]
    assert len(server_pids) == 1, server_pids
    os.kill(server_pids[0], signal.SIGSTOP)
    # Stopped before the SIGTERM comes: a process not yet scheduled since SIGSTOP would take the
    # SIGTERM first (the lower number) instead of keeping it pending.
    deadline = time.monotonic() + RELOAD_TIMEOUT_S
    while process_state(server_pids[0]) != "T":
        assert time.monotonic() < deadline, "the server was not stopped"
        time.sleep(0.01)  # bounded-poll
    parent.send_signal(signal.SIGTERM)
    # Passed on, it waits in the frozen server (a second SIGTERM sent before the parent handled the
    # first would merge with it).
    deadline = time.monotonic() + RELOAD_TIMEOUT_S
    while signal.SIGTERM not in pending_signals(server_pids[0]):
        assert time.monotonic() < deadline, "SIGTERM not passed on"
        time.sleep(0.01)  # bounded-poll
    parent.send_signal(signal.SIGTERM)
    assert parent.wait(timeout=RELOAD_TIMEOUT_S) != 0
    assert group_members(parent.pid) == []
