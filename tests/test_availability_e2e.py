"""End-to-end availability (docs/dasf-protocol.md sections 6 and 10, docs/architecture.md section 11): a
real server with the ping relay on and the real demessaging backend module as a subprocess; status over
HTTP and over /ws/status/."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pytest

from tests.dasf_client import Modules, ws_args
from tests.protocol import connect, make_topic, recv_json
from tests.servers import ServerProcess, start_server

PING_INTERVAL_S = 1.0
PONG_GRACE_S = 0.5
WINDOW_S = 3.0
REFRESH_S = 0.2
RELAYS = {
    "PING_INTERVAL_S": str(PING_INTERVAL_S),
    "PONG_GRACE_S": str(PONG_GRACE_S),
    "AVAILABILITY_WINDOW_S": str(WINDOW_S),
    "STATUS_REFRESH_S": str(REFRESH_S),
}
# Online needs a ping after the module connected (its attach ping, or at worst the next round), plus
# slack for a loaded machine; tests/test_attach_ping.py shows the attach ping alone, rounds an hour apart.
ONLINE_TIMEOUT_S = 4 * PING_INTERVAL_S + 5.0
# Offline: the next ping plus the grace; unknown: the window after the last pong. Both with slack.
OFFLINE_TIMEOUT_S = PING_INTERVAL_S + PONG_GRACE_S + 5.0
UNKNOWN_TIMEOUT_S = WINDOW_S + 5.0
POLL_S = 0.05
# urllib would send 127.0.0.1 through an http_proxy from the environment.
HTTP = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@pytest.fixture(scope="module")
def relay_server(_migrated: None) -> Iterator[ServerProcess]:
    """A server on the session database with the ping relay and short availability intervals."""
    proc = start_server(os.environ["DATABASE_URL"], **RELAYS)
    yield proc
    proc.stop()


def get_status(server: ServerProcess, slug: str) -> tuple[int, dict[str, Any]]:
    """GET /api/v1/topics/<slug>/status: the HTTP status and the JSON body (also of a 503)."""
    try:
        with HTTP.open(f"{server.http}/api/v1/topics/{slug}/status", timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        with error:
            return error.code, json.loads(error.read())


def wait_status(server: ServerProcess, slug: str, wanted: str, timeout: float) -> tuple[int, dict[str, Any]]:
    """Poll the status endpoint until it reports ``wanted``."""
    deadline = time.monotonic() + timeout
    while True:
        code, body = get_status(server, slug)
        if body.get("status") == wanted:
            return code, body
        if time.monotonic() > deadline:
            raise AssertionError(f"{slug} not {wanted} after {timeout} s; last answer {code} {body}")
        time.sleep(POLL_S)  # bounded-poll


def start_online(server: ServerProcess, modules: Modules, slug: str) -> subprocess.Popen[bytes]:
    """Start the backend module on ``slug`` and wait until the topic is online."""
    proc = modules.start_connected(slug, ws_args(server))
    try:
        wait_status(server, slug, "online", ONLINE_TIMEOUT_S)
    except AssertionError as error:
        raise AssertionError(f"{error}\nmodule output:\n{modules.output()}") from None
    return proc


def sigkill(proc: subprocess.Popen[bytes]) -> None:
    proc.kill()
    proc.wait(timeout=10)


def statuses_until(server: ServerProcess, slug: str, last: str, timeout: float) -> list[tuple[int, str, Any]]:
    """Poll the status endpoint until it reports ``last``; each change seen as (HTTP code, status, body)."""
    seen: list[tuple[int, str, Any]] = []
    deadline = time.monotonic() + timeout
    while True:
        code, body = get_status(server, slug)
        if not seen or (code, body["status"]) != seen[-1][:2]:
            seen.append((code, body["status"], body))
        if body["status"] == last:
            return seen
        if time.monotonic() > deadline:
            raise AssertionError(f"{slug} not {last} after {timeout} s; seen {[s[:2] for s in seen]}")
        time.sleep(POLL_S)  # bounded-poll


def test_topic_online_once_module_answers(relay_server: ServerProcess, modules: Modules) -> None:
    """Once the module answered a ping, the status endpoint says 200 online."""
    slug = make_topic()
    code, body = get_status(relay_server, slug)
    assert (code, body["status"]) == (503, "unknown"), body
    modules.start_connected(slug, ws_args(relay_server))
    code, body = wait_status(relay_server, slug, "online", ONLINE_TIMEOUT_S)
    assert code == 200, body
    assert body["topic"] == slug
    assert body["last_ping"] is not None and body["last_pong"] is not None, body
    assert set(body["api_info"]["functions"]) == {"hello_world", "add"}, body


def test_killed_module_goes_offline(relay_server: ServerProcess, modules: Modules) -> None:
    """After the module is SIGKILLed, the next unanswered ping makes the topic 503 offline."""
    slug = make_topic()
    sigkill(start_online(relay_server, modules, slug))
    code, body = wait_status(relay_server, slug, "offline", OFFLINE_TIMEOUT_S)
    assert code == 503, body
    assert body["last_pong"] is not None, body


def test_killed_module_goes_offline_then_unknown(relay_server: ServerProcess, modules: Modules) -> None:
    """After a SIGKILL the status goes online -> offline -> unknown, unknown once the window has passed."""
    slug = make_topic()
    sigkill(start_online(relay_server, modules, slug))
    seen = statuses_until(relay_server, slug, "unknown", OFFLINE_TIMEOUT_S + UNKNOWN_TIMEOUT_S)
    changes = [(code, status) for code, status, _ in seen]
    after_online = changes[1:] if changes[0] == (200, "online") else changes
    # A dead consumer never answers again: it must not turn online again before it is unknown.
    assert after_online == [(503, "offline"), (503, "unknown")], f"status changes after the SIGKILL: {changes}"
    unknown = seen[-1][2]
    last_pong = datetime.fromisoformat(unknown["last_pong"])
    assert (datetime.now(last_pong.tzinfo) - last_pong).total_seconds() > WINDOW_S, unknown


async def test_status_viewer_sees_online_then_offline(relay_server: ServerProcess, modules: Modules) -> None:
    """A /ws/status/ viewer gets the topic's status on connect, then online once answered, then offline."""
    slug = make_topic()
    viewer = await connect(f"{relay_server.ws}status/?topics={slug}")
    first = await recv_json(viewer)
    assert first["type"] == "status" and first["topic"] == slug, first
    assert first["status"] == "unknown", first
    assert await recv_json(viewer) == {"type": "synced", "topics": 1}
    proc = modules.start(slug, ws_args(relay_server))
    frame = await next_status_change(viewer, "unknown", ONLINE_TIMEOUT_S)
    assert (frame["type"], frame["topic"], frame["status"]) == ("status", slug, "online"), (
        frame, modules.output())
    assert frame["lastPing"] is not None and frame["lastPong"] is not None, frame
    sigkill(proc)
    frame = await next_status_change(viewer, "online", OFFLINE_TIMEOUT_S)
    assert (frame["type"], frame["topic"], frame["status"]) == ("status", slug, "offline"), frame


async def next_status_change(viewer: Any, current: str, timeout: float) -> dict[str, Any]:
    """The next frame whose status is not ``current`` (frames for new ping / pong times come between)."""
    async with asyncio.timeout(timeout):
        while True:
            frame = await recv_json(viewer, timeout)
            if frame.get("status") != current:
                return frame
