"""Server processes under test: the raw relay and Switchyard, each started fresh and stopped after.

Mirrors ``tests/servers.py`` (start on port 0, read the port back from the ready line), but for
any command, so the baseline and Switchyard are started and measured the same way.
"""

from __future__ import annotations

import os
import queue
import subprocess
import sys
import threading
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 5.0
# Relays off: a ping or a garbage collection pass would land in the middle of a measurement. The load
# generator opens thousands of sockets from one address: the connection-rate limits are off too.
QUIET = {"PING_INTERVAL_S": "0", "GC_INTERVAL_S": "0", "CONNECT_RATE_PER_ADDRESS_PER_S": "0",
         "CONNECT_RATE_PER_PRINCIPAL_PER_S": "0", "MAX_CONNECTIONS_PER_ADDRESS": "0",
         "MAX_CONNECTIONS_PER_PRINCIPAL": "0"}


# How the Switchyard servers log (--server-log). "quiet" keeps their output out of the measurement;
# "access" is what a server started without settings does (INFO and one access line per request).
SERVER_LOGS = {
    "quiet": {"SWITCHYARD_LOG_LEVEL": "WARNING"},
    "info": {"SWITCHYARD_LOG_LEVEL": "INFO", "ACCESS_LOG": "false"},
    "access": {"SWITCHYARD_LOG_LEVEL": "INFO", "ACCESS_LOG": "true"},
}


def child_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DJANGO_ALLOW_ASYNC_UNSAFE", "REDIS_URL")}
    env.update(PYTHONUNBUFFERED="1", **extra)
    return env


@dataclass
class ServerProcess:
    name: str
    argv: list[str]
    # The line that says it is ready, followed by its port or nothing (the CQRS consumer, the relay);
    # None: a process that says nothing (django-cqrs's consumer), ready as soon as it runs.
    ready: str | None
    env: dict[str, str]
    port: int = 0
    cwd: Path = ROOT
    proc: subprocess.Popen[str] | None = None
    started: bool = False
    # The last lines of output, for the error message when it fails to start or dies.
    output: deque[str] = field(default_factory=lambda: deque(maxlen=200))

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def ws(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws/"

    def start(self) -> None:
        self.started = self.ready is None
        self.proc = subprocess.Popen(self.argv, cwd=self.cwd, env=self.env, text=True,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        lines: queue.Queue[str | None] = queue.Queue()

        def pump() -> None:
            # Keeps reading after start-up, so a chatty server never blocks on a full pipe.
            assert self.proc is not None and self.proc.stdout is not None
            for line in self.proc.stdout:
                self.output.append(line)
                if not self.started:
                    lines.put(line)
            lines.put(None)

        threading.Thread(target=pump, daemon=True, name=f"{self.name}-output").start()
        while not self.started:
            try:
                line = lines.get(timeout=START_TIMEOUT_S)
            except queue.Empty:
                self.stop()
                raise RuntimeError(f"{self.name} did not start:\n" + "".join(self.output)) from None
            if line is None:
                raise RuntimeError(f"{self.name} exited:\n" + "".join(self.output))
            if self.ready is not None and line.startswith(self.ready):
                rest = line[len(self.ready):].strip()
                self.port = int(rest) if rest else 0
                self.started = True

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        """SIGTERM, then SIGKILL: a graceful shutdown with 10,000 sockets open could take long,
        and nothing the benchmark needs is lost by killing it."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)


def raw_relay() -> ServerProcess:
    return ServerProcess("raw relay", [sys.executable, "-m", "benchmarks.raw_relay", "--port", "0"],
                         "RAW_RELAY_READY port=", child_env())


def switchyard(database_url: str, policy: str, redis_url: str | None = None, name: str = "switchyard",
               server_log: str = "quiet") -> ServerProcess:
    env = child_env(DATABASE_URL=database_url, **SERVER_LOGS[server_log], **QUIET,
                    # Response topics are made by the broker: same policy as the topic under test.
                    STORE_MESSAGES=policy)
    if redis_url:
        env["REDIS_URL"] = redis_url
    return ServerProcess(name, [sys.executable, "manage.py", "serve", "--host", "127.0.0.1", "--port", "0",
                                "--log-level", "warning"],
                         "SWITCHYARD_READY port=", env)


def provision(database_url: str, topics: dict[str, str]) -> None:
    """Migrate a fresh database and create ``topics`` (slug -> store policy) in it."""
    subprocess.run([sys.executable, "-m", "benchmarks.provision", *(f"{s}:{p}" for s, p in topics.items())],
                   cwd=ROOT, env=child_env(DATABASE_URL=database_url), check=True, timeout=180)
