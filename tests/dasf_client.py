"""Run the real, unmodified demessaging client (tests/dasf_modules/hello_world.py) as subprocesses:
backend modules that ``listen`` and requesters that ``send-request``, always under timeouts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

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
