"""The README's worker (section "A worker: /ws/workers/") runs as written: its module saved under the
name the text gives, its bash block run by bash from a directory holding `.venv` and `manage.py` as a
checkout does, against a real server. Only the port differs."""

from __future__ import annotations

import os
import re
import subprocess
import time
from pathlib import Path

import pytest

from app.work.models import Result, Status, WorkRequest
from app.work.submission import submit
from tests.servers import ROOT, manage, server_env, start_server, stop_group
from tests.work import clear_work

# Once, in the SQLite pass: what it proves is the README's text, not a database's behaviour.
pytestmark = pytest.mark.pinned_backend

README = ROOT / "README.md"
README_PORT = "8000"
SECTION = "### A worker: `/ws/workers/`"


def worker_section() -> tuple[str, str, str]:
    """The worker module's file name, its source, and the bash block that runs it."""
    text = README.read_text()
    section = text[text.index(SECTION):]
    section = section[:section.index("\n## ")]
    blocks = [(m.start(), m.group(1), m.group(2)) for m in re.finditer(r"^```(\w*)\n(.*?)^```$", section, re.S | re.M)]
    offset, _, module = next(block for block in blocks if block[1] == "python")
    name = re.findall(r"\(`([\w-]+\.py)`\)", section[:offset])[-1]
    commands = next(body for start, lang, body in blocks if lang == "bash" and start > offset)
    return name, module, commands


def test_worker_is_under_fifteen_lines() -> None:
    """The README's worker is a module of fewer than 15 lines."""
    name, module, commands = worker_section()
    assert len(module.splitlines()) < 15
    assert name in commands and README_PORT in module


def test_readme_worker_runs_submitted_work(tmp_path: Path) -> None:
    """The README's worker, registered and started by its commands, completes the request they submit."""
    clear_work()
    server = start_server(os.environ["DATABASE_URL"], WORKER_CHECK_INTERVAL_S="0.5")
    name, module, commands = worker_section()
    (tmp_path / name).write_text(module.replace(README_PORT, str(server.port)))
    (tmp_path / ".venv").symlink_to(ROOT / ".venv")
    (tmp_path / "manage.py").symlink_to(ROOT / "manage.py")
    log = tmp_path / "commands.log"
    # A file, not a pipe: the worker left running in the background holds the output open.
    with log.open("w") as out:
        shell = subprocess.Popen(["bash", "-c", commands], cwd=tmp_path, env=server_env(os.environ["DATABASE_URL"]),
                                 start_new_session=True, stdout=out, stderr=subprocess.STDOUT, text=True)
    try:
        assert shell.wait(timeout=60) == 0, log.read_text()
        request_id = int(log.read_text().split()[-1])  # what the submit command printed
        request = WorkRequest.objects.filter(pk=request_id)
        deadline = time.monotonic() + 30
        while not request.filter(status=Status.COMPLETED).exists():
            assert time.monotonic() < deadline, f"the README worker did not complete it:\n{log.read_text()}"
            time.sleep(0.05)  # bounded-poll
        assert request.get().result == Result.SUCCESS
    finally:
        stop_group(shell.pid)
        server.stop()


def sdk_worker_module() -> str:
    """The section's second python block: the same worker on the client SDK."""
    text = README.read_text()
    section = text[text.index(SECTION):]
    section = section[:section.index("\n## ")]
    modules = re.findall(r"^```python\n(.*?)^```$", section, re.S | re.M)
    assert len(modules) >= 2 and "switchyard_client" in modules[1], "the SDK worker block"
    return modules[1]


def test_readme_sdk_worker_runs_submitted_work(tmp_path: Path) -> None:
    """The README's client-SDK worker completes a request with its handler's output."""
    clear_work()
    url = os.environ["DATABASE_URL"]
    server = start_server(url, WORKER_CHECK_INTERVAL_S="0.5")
    key = manage(url, "createworker", f"sdk-{time.monotonic_ns()}").strip().splitlines()[-1]
    (tmp_path / "worker.py").write_text(sdk_worker_module().replace(README_PORT, str(server.port)))
    log = tmp_path / "worker.log"
    with log.open("w") as out:
        worker = subprocess.Popen([str(ROOT / ".venv" / "bin" / "python"), "worker.py", key], cwd=tmp_path,
                                  env=server_env(url), start_new_session=True, stdout=out, stderr=subprocess.STDOUT)
    try:
        request = WorkRequest.objects.filter(pk=submit("sleep", {"duration_s": 0}).pk)
        deadline = time.monotonic() + 30
        while not request.filter(status=Status.COMPLETED).exists():
            assert time.monotonic() < deadline, f"the SDK worker did not complete it:\n{log.read_text()}"
            time.sleep(0.05)  # bounded-poll
        done = request.get()
        assert (done.result, done.output_data) == (Result.SUCCESS, {"echo": {"duration_s": 0}}), log.read_text()
    finally:
        stop_group(worker.pid)
        worker.wait(timeout=10)
        server.stop()
