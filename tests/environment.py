"""Loaded with ``-p tests.environment`` before pytest-django sets Django up: the session's
database is a fresh one (SQLite file, or PostgreSQL with ``SWITCHYARD_TEST_DB=postgres``) shared by
this process and the server processes it starts."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from tests.databases import BACKEND, drop_created, new_database_url

SESSION_DIR = Path(tempfile.mkdtemp(prefix="switchyard-tests-"))
os.environ["DATABASE_URL"] = new_database_url(SESSION_DIR, "session")
# ORM helpers run inside async tests; the servers under test never get this flag.
os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"


def pytest_report_header() -> str:
    return f"switchyard test database: {BACKEND} ({os.environ['DATABASE_URL']})"


def pytest_unconfigure() -> None:
    from django.db import connections

    connections.close_all()
    drop_created()
