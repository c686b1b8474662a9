"""``pip install ./client`` works on its own: a fresh virtual environment with nothing but the client
and its three dependencies imports it without Django, runs its command line, and talks to a server."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.protocol import make_topic
from tests.servers import ROOT, ServerProcess, manage

pytestmark = pytest.mark.database_agnostic

INSTALL_TIMEOUT_S = 300


@pytest.fixture(scope="module")
def fresh_python(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A new virtual environment with only ./client installed (from PyPI or pip's cache)."""
    venv = tmp_path_factory.mktemp("client-venv") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=INSTALL_TIMEOUT_S)
    python = venv / "bin" / "python"
    done = subprocess.run([str(python), "-m", "pip", "install", "-q", str(ROOT / "client")],
                          capture_output=True, text=True, timeout=INSTALL_TIMEOUT_S)
    assert done.returncode == 0, done.stdout + done.stderr
    yield python


def installed(python: Path) -> set[str]:
    done = subprocess.run([str(python), "-m", "pip", "list", "--format=freeze"], capture_output=True, text=True,
                          check=True, timeout=60)
    return {line.split("==")[0].lower() for line in done.stdout.splitlines()}


def test_the_client_brings_only_its_dependencies(fresh_python: Path) -> None:
    """Installing the client installs no Django and none of the server's packages."""
    packages = installed(fresh_python)
    assert {"switchyard-client", "websockets", "pydantic", "orjson"} <= packages
    assert not packages & {"django", "channels", "switchyard", "uvicorn"}


def test_the_command_line_runs(fresh_python: Path) -> None:
    """The switchyard-client script of the fresh environment answers --help."""
    done = subprocess.run([str(fresh_python.parent / "switchyard-client"), "--help"], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0 and "exit codes" in done.stdout, done.stderr


def test_the_installed_client_talks_to_a_server(fresh_python: Path, server: ServerProcess) -> None:
    """A script in the fresh environment sends and receives a message, with no Django imported."""
    topic = make_topic(dasf=False, policy="disabled")
    script = textwrap.dedent(f"""
        import asyncio, sys
        from switchyard_client import Client

        async def main():
            async with Client({server.http!r}) as client:
                consumer = client.subscribe({topic!r}, "s")
                await consumer.start()
                producer = await client.producer({topic!r})
                await producer.send("hello")
                print((await consumer.receive(timeout=10)).text)

        asyncio.run(main())
        assert "django" not in sys.modules
    """)
    done = subprocess.run([str(fresh_python), "-c", script], capture_output=True, text=True, timeout=60, cwd="/")
    assert (done.returncode, done.stdout.strip()) == (0, "hello"), done.stderr


def test_the_client_readme_example_runs(fresh_python: Path, server: ServerProcess) -> None:
    """The client README's example, with its topic made as the README says, prints what it sent."""
    from app.broker.models import Topic

    readme = (ROOT / "client" / "README.md").read_text()
    example = re.search(r"```python\n(.*?)```", readme, re.S)
    command = re.search(r"`manage\.py (dasf_topic [^`]+)`", readme)
    assert example is not None and command is not None
    if not Topic.objects.filter(slug="sensors").exists():
        manage(server.database_url, *command.group(1).split())
    code = example.group(1).replace("127.0.0.1:8000", f"127.0.0.1:{server.port}")
    done = subprocess.run([str(fresh_python), "-c", code], capture_output=True, text=True, timeout=60, cwd="/")
    assert (done.returncode, done.stdout.strip()) == (0, "True 21.5 {'unit': 'C'}"), done.stderr
