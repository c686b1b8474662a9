"""Start and stop real Switchyard server processes for tests."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.databases import BACKEND, copy_database, new_database_url

ROOT = Path(__file__).resolve().parent.parent
READY = "SWITCHYARD_READY port="
START_TIMEOUT_S = 60.0


def server_env(database_url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_ALLOW_ASYNC_UNSAFE"}
    env.update(DATABASE_URL=database_url, PYTHONUNBUFFERED="1", **extra)
    return env


def migrate(database_url: str) -> None:
    manage(database_url, "migrate", "--noinput", "-v0")


# One migrated database per backend and session, copied for each server that needs a database of its
# own: a copy takes milliseconds, a migration in a process of its own a second or two.
_MIGRATED_TEMPLATES: dict[str, str] = {}


def migrated_database_url(directory: Path, name: str, backend: str = BACKEND) -> str:
    """A new database with every migration applied (a copy of the session's migrated template)."""
    template = _MIGRATED_TEMPLATES.get(backend)
    if template is None:
        template = new_database_url(Path(tempfile.mkdtemp(prefix="switchyard-template-")), "template", backend)
        migrate(template)
        _MIGRATED_TEMPLATES[backend] = template
    return copy_database(template, directory, name)


def manage(database_url: str, *args: str) -> str:
    """Run a management command on ``database_url`` in a process of its own (as an admin would,
    next to the server): its stdout, stripped."""
    done = subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=server_env(database_url),
                          check=True, capture_output=True, text=True, timeout=120)
    return done.stdout.strip()


# Several management commands in one process: a process of its own costs a Python and Django start-up
# (a second or two on a loaded machine) for each command, the commands themselves milliseconds.
_MANAGE_MANY = """
import io, json, sys
import django
from django.core.management import call_command
django.setup()
outputs = []
for args in json.loads(sys.argv[1]):
    out = io.StringIO()
    call_command(*args, stdout=out)
    outputs.append(out.getvalue().strip())
print(json.dumps(outputs))
"""


def manage_many(env: dict[str, str], *commands: tuple[str, ...]) -> list[str]:
    """Run management commands one after the other in one process of its own (as an admin running
    them, next to the server, would): their stdouts, stripped, in order."""
    done = subprocess.run([sys.executable, "-c", _MANAGE_MANY, json.dumps(commands)], cwd=ROOT,
                          env={"DJANGO_SETTINGS_MODULE": "settings", **env}, check=True, capture_output=True,
                          text=True, timeout=120)
    outputs: list[str] = json.loads(done.stdout.splitlines()[-1])
    return outputs


def run_sql(database_url: str, *statements: str) -> None:
    """Run SQL on a server's database behind its back (to break it, or to forge a row)."""
    if database_url.startswith("sqlite:///"):
        import sqlite3

        with sqlite3.connect(database_url.removeprefix("sqlite:///"), timeout=10) as db:
            for sql in statements:
                db.execute(sql)
    else:
        import psycopg

        with psycopg.connect(database_url, autocommit=True) as conn:
            for sql in statements:
                conn.execute(sql)


# Every process started, from its start until tests/server_log.py has read all it printed: its log
# is checked after each test. Identity, not equality: two processes may look alike.
WATCHED: list[ServerProcess] = []


@dataclass(eq=False)
class ServerProcess:
    database_url: str
    env_extra: dict[str, str] = field(default_factory=dict)
    bound_port: int = 0
    proc: subprocess.Popen[str] | None = None
    output: list[str] = field(default_factory=list)
    # How many lines of ``output`` the log check has judged, and when the last line arrived.
    checked: int = 0
    last_line_at: float = 0.0
    pumps: list[threading.Thread] = field(default_factory=list)
    workdir: Path = ROOT
    # A process that starts others (make, Django's autoreloader) runs in a session of its own and is
    # stopped as a process group: signalling only the parent would leave its children serving.
    group: bool = False
    # Whether the last stop of a group ended it with SIGTERM alone.
    stopped_cleanly: bool | None = None
    # Whether a test may have talked to the process since the log check last judged its output (its
    # address was read, or it was started): only then does the check wait for its last words.
    touched: bool = False

    @property
    def port(self) -> int:
        self.touched = True
        return self.bound_port

    @property
    def ws(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws/"

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self, port: int) -> list[str]:
        return [sys.executable, "manage.py", "serve", "--port", str(port), "--log-level", "warning"]

    def environment(self) -> dict[str, str]:
        return server_env(self.database_url, **self.env_extra)

    def started(self, line: str) -> bool:
        """Whether ``line`` says the process is ready (and take what it tells)."""
        if line.startswith(READY):
            self.bound_port = int(line[len(READY):])
            return True
        return False

    def start(self, port: int = 0) -> None:
        self.touched = True
        self.proc = subprocess.Popen(
            self.command(port),
            cwd=self.workdir, env=self.environment(), start_new_session=self.group,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        if self not in WATCHED:
            WATCHED.append(self)
        lines: queue.Queue[str | None] = queue.Queue()
        stdout = self.proc.stdout
        assert stdout is not None

        def pump() -> None:
            for line in stdout:
                self.output.append(line)
                self.last_line_at = time.monotonic()
                lines.put(line)
            lines.put(None)

        self.pumps = [thread for thread in self.pumps if thread.is_alive()]
        self.pumps.append(threading.Thread(target=pump, daemon=True))
        self.pumps[-1].start()
        while True:
            try:
                line = lines.get(timeout=START_TIMEOUT_S)
            except queue.Empty:
                self.stop()
                raise RuntimeError("server did not start:\n" + "".join(self.output)) from None
            if line is None:
                raise RuntimeError("server exited:\n" + "".join(self.output))
            if self.started(line):
                return

    def kill(self) -> None:
        """SIGKILL: no shutdown, no flush."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def restart(self) -> None:
        """Start again on the same port and database."""
        self.start(self.port)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def drain(self, timeout: float) -> None:
        """Wait (bounded) until everything an exited process printed is in ``output``."""
        deadline = time.monotonic() + timeout
        for thread in self.pumps:
            thread.join(max(0.0, deadline - time.monotonic()))

    def stop(self) -> None:
        if self.group:
            if self.proc is not None:
                self.stopped_cleanly = stop_group(self.proc.pid)
                self.proc.wait(timeout=10)
            return
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


def group_members(pgid: int) -> list[int]:
    """The live (not zombie) processes of process group ``pgid``."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # pid (comm) state ppid pgrp ...: comm may hold spaces and parentheses, so split after its end.
        fields = stat[stat.rindex(")") + 2:].split()
        if fields[0] != "Z" and int(fields[2]) == pgid:
            members.append(int(entry.name))
    return members


def stop_group(pgid: int, timeout_s: float = 15.0) -> bool:
    """SIGTERM to every process of the group and wait (bounded) until none is left, else SIGKILL:
    whether SIGTERM was enough."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            return sig == signal.SIGTERM
        deadline = time.monotonic() + timeout_s
        while group_members(pgid) and time.monotonic() < deadline:
            time.sleep(0.05)  # bounded-poll
        if not group_members(pgid):
            return sig == signal.SIGTERM
    raise RuntimeError(f"process group {pgid} survived SIGKILL: {group_members(pgid)}")


def memory_kib(server: ServerProcess, field: str) -> int:
    """``VmRSS`` (resident now) or ``VmHWM`` (peak resident) of the server process."""
    assert server.proc is not None
    with open(f"/proc/{server.proc.pid}/status") as status:
        for line in status:
            if line.startswith(f"{field}:"):
                return int(line.split()[1])
    raise AssertionError(f"no {field}")


# Relays off unless a test asks for them: an unexpected ping would be the first frame a test reads, and
# a worker check would end the sessions of workers a test marked connected long ago in the database.
QUIET = {"PING_INTERVAL_S": "0", "GC_INTERVAL_S": "0", "OUTBOX_RELAY_TASKS": "0", "WORKER_CHECK_INTERVAL_S": "0"}


def start_server(database_url: str, **env_extra: str) -> ServerProcess:
    server = ServerProcess(database_url, {**QUIET, **env_extra})
    server.start()
    return server


@dataclass(eq=False)
class RelayProcess(ServerProcess):
    """``manage.py outbox_relay`` in a process of its own."""

    tasks: int = 1

    def command(self, port: int) -> list[str]:
        return [sys.executable, "manage.py", "outbox_relay", "--tasks", str(self.tasks)]

    def started(self, line: str) -> bool:
        return line.startswith("SWITCHYARD_RELAY_READY")


class ConsumerProcess(ServerProcess):
    """``manage.py cqrs_consume`` (the CQRS replica consumer) in a process of its own."""

    def command(self, port: int) -> list[str]:
        return [sys.executable, "manage.py", "cqrs_consume"]

    def started(self, line: str) -> bool:
        return line.startswith("SWITCHYARD_CQRS_READY")
