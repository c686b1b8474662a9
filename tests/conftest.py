"""Test fixtures: one SQLite file per session shared by this process and real server processes.

Servers are real: ``manage.py serve --port 0`` in a subprocess, port read back from its output.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests import protocol
from tests.browser import Browser
from tests.dasf_client import Modules
from tests.outbox import clear_outbox
from tests.servers import ServerProcess, migrated_database_url, start_server


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """On a pytest-xdist worker, tests that stop a shared service are skipped: the other workers'
    tests use it meanwhile (make test runs them alone afterwards)."""
    if "PYTEST_XDIST_WORKER" not in os.environ:
        return
    alone = pytest.mark.skip(reason="restarts a shared service: run without -n (make test does)")
    for item in items:
        if item.get_closest_marker("restarts_services") is not None:
            item.add_marker(alone)


@pytest.fixture(scope="session", autouse=True)
def _migrated(django_db_blocker: pytest.FixtureRequest) -> Iterator[None]:
    from django.core.management import call_command

    with django_db_blocker.unblock():  # type: ignore[attr-defined]
        call_command("migrate", verbosity=0)
    yield


@pytest.fixture(scope="session", autouse=True)
def _static_collected() -> None:
    """Static files collected into STATIC_ROOT, as `make serve` does before it starts the server."""
    from django.core.management import call_command

    call_command("collectstatic", interactive=False, verbosity=0)


@pytest.fixture(autouse=True)
def _db_access(django_db_blocker: pytest.FixtureRequest) -> Iterator[None]:
    """Every test may use the session database (no per-test rollback: names are unique)."""
    with django_db_blocker.unblock():  # type: ignore[attr-defined]
        yield


@pytest.fixture(autouse=True)
async def _close_clients() -> Any:
    """Close the client sockets a test left open."""
    yield
    while protocol.OPEN:
        ws = protocol.OPEN.pop()
        try:
            await asyncio.wait_for(ws.close(), 5)
        except (TimeoutError, OSError):
            ws.transport.abort()


@pytest.fixture(scope="session")
def server(_migrated: None) -> Iterator[ServerProcess]:
    """One server for the session, on the session database."""
    proc = start_server(os.environ["DATABASE_URL"])
    yield proc
    proc.stop()


@pytest.fixture
def fresh_server(tmp_path: Path) -> Iterator[ServerProcess]:
    """A server of its own on a database of its own (for kills and restarts)."""
    url = migrated_database_url(tmp_path, "own")
    proc = start_server(url)
    yield proc
    proc.stop()


@pytest.fixture
def own_server(_migrated: None) -> Iterator[ServerProcess]:
    """A server of its own (its peak memory is this test's), default limits, on the session database."""
    proc = start_server(os.environ["DATABASE_URL"])
    yield proc
    proc.stop()


@pytest.fixture
def breakable_server(tmp_path: Path) -> Iterator[ServerProcess]:
    """A server on a database of its own, which the test may break."""
    url = migrated_database_url(tmp_path, "breakable")
    proc = start_server(url)
    yield proc
    proc.stop()


@pytest.fixture
def admin_browser(server: ServerProcess) -> Browser:
    """A browser logged in to /admin/ as a new superuser, through the login form."""
    user = protocol.make_user(is_superuser=True, is_staff=True)
    password = protocol.set_password(user)
    browser = Browser(server.http)
    assert browser.admin_login(user.username, password).status == 302
    return browser


@pytest.fixture
def empty_outbox(_db_access: None) -> None:
    """No other test's events in the outbox (tests/outbox.py ``clear_outbox``)."""
    clear_outbox()


@pytest.fixture
def modules(tmp_path: Path) -> Iterator[Modules]:
    """Real demessaging backend modules, all stopped at teardown."""
    running = Modules(tmp_path)
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
def blocked_counting(monkeypatch: pytest.MonkeyPatch) -> Iterator[threading.Event]:
    """A subscription's count_redeliveries waits (in its thread) until the event is set: holds a
    redelivery in the window between taking a message back and queueing it again."""
    from app.pulsar import services

    go = threading.Event()
    counting = services.count_redeliveries

    def held(subscription_id: int, message_ids: list[str]) -> dict[str, int]:
        go.wait(10)
        return counting(subscription_id, message_ids)

    monkeypatch.setattr(services, "count_redeliveries", held)
    yield go
    go.set()
