"""End-to-end: the real, unmodified demessaging client (backend module and requester) as subprocesses."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.protocol import make_token, make_topic, make_user
from tests.servers import ROOT, ServerProcess

MODULE = ROOT / "tests" / "dasf_modules" / "hello_world.py"
REQUEST_TIMEOUT_S = 20.0  # send-request waits forever on its own
CONNECT_TIMEOUT_S = 20.0
POLL_S = 0.05


def client_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k != "DJANGO_ALLOW_ASYNC_UNSAFE" and not k.upper().startswith("DE_BACKEND_")}
    env["PYTHONUNBUFFERED"] = "1"
    return env


def ws_args(server: ServerProcess) -> list[str]:
    """WebsocketURLConfig: the DASF path shape."""
    return ["--websocket-url", server.ws]


def pulsar_args(server: ServerProcess) -> list[str]:
    """PulsarConfig: /ws/v2/{producer,consumer}/non-persistent/public/default/<topic>."""
    return ["-H", "127.0.0.1", "-p", str(server.port)]


def header_args(key: str) -> list[str]:
    return ["--header", json.dumps({"authorization": f"Token {key}"})]


def command(topic: str, connection: list[str], *args: str) -> list[str]:
    return [sys.executable, str(MODULE), "-t", topic, *connection, *args]


def result_of(stdout: str) -> Any:
    """send-request prints log lines, then the JSON of the result as its last line."""
    lines = [line for line in stdout.splitlines() if line.strip()]
    assert lines, "send-request printed nothing"
    return json.loads(lines[-1])


def send_request(topic: str, connection: list[str], request: dict[str, Any],
                 timeout: float = REQUEST_TIMEOUT_S) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command(topic, connection, "send-request", json.dumps(request)),
        cwd=ROOT, env=client_env(), capture_output=True, text=True, timeout=timeout,
    )


def answer(topic: str, connection: list[str], request: dict[str, Any]) -> Any:
    done = send_request(topic, connection, request)
    assert done.returncode == 0, done.stdout + done.stderr
    return result_of(done.stdout)


def wait_for(condition: Callable[[], Any], what: str, timeout: float = CONNECT_TIMEOUT_S) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(POLL_S)  # bounded-poll


def api_info_of(slug: str) -> dict[str, Any]:
    from app.broker.models import Topic

    info = Topic.objects.filter(slug=slug).values_list("api_info", flat=True).first()
    return info or {}


class Modules:
    """Backend modules started with ``listen``; all are terminated at teardown."""

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.procs: list[tuple[subprocess.Popen[bytes], Path]] = []

    def start(self, topic: str, connection: list[str], *extra: str) -> subprocess.Popen[bytes]:
        log = self.logs / f"module-{len(self.procs)}.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(command(topic, [*connection, *extra], "listen"),
                                    cwd=ROOT, env=client_env(), stdout=out, stderr=subprocess.STDOUT)
        self.procs.append((proc, log))
        return proc

    def start_connected(self, topic: str, connection: list[str], *extra: str) -> subprocess.Popen[bytes]:
        """Start a module and wait until it answered the api_info probe (it is then subscribed)."""
        proc = self.start(topic, connection, *extra)
        try:
            wait_for(lambda: api_info_of(topic) or proc.poll() is not None, "the module's api_info")
        except AssertionError:
            raise AssertionError("module did not connect:\n" + self.output()) from None
        assert proc.poll() is None, "module exited:\n" + self.output()
        return proc

    def output(self) -> str:
        return "\n".join(log.read_text(errors="replace")[-3000:] for _, log in self.procs)

    def stop(self) -> None:
        for proc, _ in self.procs:
            if proc.poll() is None:
                proc.terminate()
        for proc, _ in self.procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)


@pytest.fixture
def modules(tmp_path: Path) -> Iterator[Modules]:
    running = Modules(tmp_path)
    try:
        yield running
    finally:
        running.stop()


def test_module_answers_over_websocket_url(server: ServerProcess, modules: Modules) -> None:
    """A module and a requester using --websocket-url get both functions answered."""
    slug = make_topic()
    modules.start_connected(slug, ws_args(server))
    assert answer(slug, ws_args(server), {"func_name": "hello_world"}) == "Hello World!"
    assert answer(slug, ws_args(server), {"func_name": "add", "a": 2, "b": 3}) == 5


def test_module_answers_over_pulsar_paths(server: ServerProcess, modules: Modules) -> None:
    """A module and a requester using PulsarConfig (-H/-p, /ws/v2/... paths) get both functions answered."""
    slug = make_topic()
    modules.start_connected(slug, pulsar_args(server))
    assert answer(slug, pulsar_args(server), {"func_name": "hello_world"}) == "Hello World!"
    assert answer(slug, pulsar_args(server), {"func_name": "add", "a": 2, "b": 3}) == 5


def test_request_waits_for_module_to_start(server: ServerProcess, modules: Modules) -> None:
    """A request sent while no module runs is stored and answered once the module starts."""
    from app.broker.models import Message

    slug = make_topic()
    request = subprocess.Popen(
        command(slug, ws_args(server), "send-request", json.dumps({"func_name": "add", "a": 20, "b": 22})),
        cwd=ROOT, env=client_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        wait_for(lambda: Message.objects.filter(topic__slug=slug).exists() or request.poll() is not None,
                 "the request to be stored")
        assert request.poll() is None, "send-request exited before a module ran"
        modules.start(slug, ws_args(server))
        try:
            stdout, stderr = request.communicate(timeout=REQUEST_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            raise AssertionError("stored request was not answered:\n" + modules.output()) from None
        assert request.returncode == 0, stdout + stderr
        assert result_of(stdout) == 42
    finally:
        if request.poll() is None:
            request.kill()
            request.communicate(timeout=10)


def private_topic() -> tuple[str, str]:
    """A topic only one user may produce to and consume; its slug and that user's token."""
    user = make_user()
    key = make_token(user)
    return make_topic(public=False, anonymous=False, consumers=(user,), producers=(user,)), key


def test_private_topic_refuses_requester_without_token(server: ServerProcess, modules: Modules) -> None:
    """On a private topic a requester without a token fails fast instead of hanging."""
    slug, key = private_topic()
    modules.start_connected(slug, [*ws_args(server), *header_args(key)])
    started = time.monotonic()
    try:
        refused = send_request(slug, ws_args(server), {"func_name": "hello_world"})
    except subprocess.TimeoutExpired:
        raise AssertionError("send-request without a token hung instead of failing") from None
    assert time.monotonic() - started < REQUEST_TIMEOUT_S
    assert refused.returncode != 0
    assert "not allowed to publish" in refused.stdout + refused.stderr


def test_private_topic_serves_requester_with_token(server: ServerProcess, modules: Modules) -> None:
    """On a private topic a module and a requester that send the authorization header work."""
    slug, key = private_topic()
    with_token = [*ws_args(server), *header_args(key)]
    modules.start_connected(slug, with_token)
    assert answer(slug, with_token, {"func_name": "add", "a": 2, "b": 3}) == 5


def test_api_info_probe_fills_topic(server: ServerProcess, modules: Modules) -> None:
    """The module's answer to the api_info probe is stored in Topic.api_info."""
    slug = make_topic()
    assert api_info_of(slug) == {}
    proc = modules.start(slug, ws_args(server))
    info = wait_for(lambda: api_info_of(slug) or proc.poll() is not None, "Topic.api_info")
    assert isinstance(info, dict), "module exited:\n" + modules.output()
    functions = {f["name"] for f in info.get("functions", [])}
    assert functions == {"hello_world", "add"}, info
