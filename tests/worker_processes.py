"""Real worker processes for tests: on the socket (tests/work_worker.py) or polling over HTTP
(tests/work_poller.py, ``polling=True``), started against a server, their printed events collected
by a thread, awaited under timeouts, stopped (or killed) after the test."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.servers import ROOT, ServerProcess, start_server
from tests.work import clear_work

SCRIPT = ROOT / "tests" / "work_worker.py"
POLLER = ROOT / "tests" / "work_poller.py"
TIMEOUT_S = 20.0

# Every worker process a test started: tests/test_work_socket.py stops them after each test.
RUNNING: list[WorkerProcess] = []

Event = dict[str, Any]


class WorkerProcess:
    def __init__(self, server: ServerProcess, key: str, metadata: dict[str, Any] | None = None,
                 max_sleep_s: float | None = None, polling: bool = False, progress_s: float = 0.5) -> None:
        env = {k: v for k, v in os.environ.items() if k != "DJANGO_ALLOW_ASYNC_UNSAFE"}
        script, url = (POLLER, server.http) if polling else (SCRIPT, f"{server.ws}workers/")
        self.proc = subprocess.Popen(
            [sys.executable, str(script), url, key, "--metadata", json.dumps(metadata or {}),
             *([] if max_sleep_s is None else ["--max-sleep", str(max_sleep_s)]),
             *(["--progress", str(progress_s)] if polling else [])],
            cwd=ROOT, env={**env, "PYTHONUNBUFFERED": "1"}, stdout=subprocess.PIPE, text=True,
        )
        self.events: list[Event] = []
        self.pump = threading.Thread(target=self._pump, daemon=True)
        self.pump.start()
        RUNNING.append(self)

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.events.append(json.loads(line))

    def of(self, kind: str) -> list[Event]:
        return [event for event in list(self.events) if event["event"] == kind]

    def ids(self, kind: str) -> list[int]:
        return [event["id"] for event in self.of(kind)]

    async def wait_for(self, check: Callable[[WorkerProcess], bool], what: str, timeout: float = TIMEOUT_S) -> None:
        await until(lambda: check(self), what, timeout)

    async def connected(self) -> WorkerProcess:
        await self.wait_for(lambda w: bool(w.of("connected")) or w.proc.poll() is not None, "the worker to connect")
        assert self.of("connected"), self.events
        return self

    def hang(self) -> None:
        """Freeze it: it sends nothing more, and its socket stays open."""
        self.proc.send_signal(signal.SIGSTOP)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()  # SIGKILL also ends a stopped process
        self.proc.wait(timeout=10)
        self.pump.join(timeout=5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


async def until(check: Callable[[], bool], what: str, timeout: float = TIMEOUT_S) -> None:
    """Wait until ``check()`` holds (events arrive from the workers' pump threads)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)  # bounded-poll


def stop_all() -> None:
    while RUNNING:
        RUNNING.pop().stop()


def counts(workers: list[WorkerProcess], kind: str) -> Counter[int]:
    """How many times each request id was reported as ``kind`` across ``workers``."""
    return Counter(request_id for worker in workers for request_id in worker.ids(kind))


# The lost-worker rules at test speed: a checking server notices a silent worker in about two seconds.
LOST_AFTER_S = 2.0


@pytest.fixture(scope="module")
def checking_server() -> Iterator[ServerProcess]:
    """A server of the session database with the worker check on (every 0.2 s) and LOST_AFTER_S."""
    proc = start_server(os.environ["DATABASE_URL"], WORKER_CHECK_INTERVAL_S="0.2",
                        WORKER_LOST_AFTER_S=str(LOST_AFTER_S))
    yield proc
    proc.stop()


@pytest.fixture
def workers_stopped() -> Iterator[None]:
    """No worker process left running after the test."""
    yield
    stop_all()


@pytest.fixture
def fleet_cleared() -> Iterator[None]:
    """No work left from other tests before; no worker process left running after."""
    clear_work()
    yield
    stop_all()
