"""Loaded with ``-p tests.environment`` before pytest-django sets Django up: the session's
database is a fresh one (SQLite file, or PostgreSQL with ``SWITCHYARD_TEST_DB=postgres``) shared by
this process and the server processes it starts."""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from pathlib import Path

from tests.databases import BACKEND, drop_created, new_database_url

SESSION_DIR = Path(tempfile.mkdtemp(prefix="switchyard-tests-"))
os.environ["DATABASE_URL"] = new_database_url(SESSION_DIR, "session")
# The session's own names on Redis (channels and groups): sessions that run side by side (pytest-xdist
# workers, each on a database of its own) share the Redis server, and a token revocation broadcast by
# one session's cluster must not close another session's sockets. Set here, not inherited: an xdist
# worker starts with its controller's environment.
os.environ["CHANNEL_LAYER_PREFIX"] = f"test-{uuid.uuid4().hex[:8]}"
# Static files collected into the session's own directory (tests/conftest.py runs collectstatic):
# collectstatic rewrites every gzipped copy, which a server of another session running side by side
# may be serving at that moment. A directory of its own, open to other users: nginx's workers (the
# deploy tests) read it as www-data, and mkdtemp makes a directory its owner's alone.
STATIC_DIR = Path(tempfile.mkdtemp(prefix="switchyard-static-"))
STATIC_DIR.chmod(0o755)
os.environ["SWITCHYARD_STATIC_ROOT"] = str(STATIC_DIR)
# The test packages installed as a user installs their own apps (README "Your own apps"): this process,
# every server and every management command of the session have them, and their tables are migrated.
TEST_APPS = ("tests.apps.notes", "tests.apps.cqrs_master", "tests.apps.cqrs_replica")
os.environ["SWITCHYARD_APPS"] = ",".join(TEST_APPS)
# ORM helpers run inside async tests; the servers under test never get this flag.
os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
# Test settings, for this process and every server it starts (tests/servers.py server_env copies
# the environment): ack timeouts short enough for a test to wait them out (the default floor is
# 1000 ms, as Pulsar's), and room for the many subscriptions the session's anonymous consumers
# make (the default is 100 per principal). Tests of the defaults set them on their own servers.
os.environ.setdefault("MIN_ACK_TIMEOUT_MS", "100")
os.environ.setdefault("SUBSCRIPTIONS_PER_PRINCIPAL", "1000000")


def pytest_report_header() -> str:
    return f"switchyard test database: {BACKEND} ({os.environ['DATABASE_URL']})"


def pytest_unconfigure() -> None:
    from django.db import connections

    connections.close_all()
    drop_created()
    shutil.rmtree(STATIC_DIR, ignore_errors=True)
