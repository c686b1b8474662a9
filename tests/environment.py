"""Loaded with ``-p tests.environment`` before pytest-django sets Django up: the session's
database is a fresh SQLite file shared by this process and the server processes it starts."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

SESSION_DIR = Path(tempfile.mkdtemp(prefix="switchyard-tests-"))
os.environ["DATABASE_URL"] = f"sqlite:///{SESSION_DIR / 'session.sqlite3'}"
# ORM helpers run inside async tests; the servers under test never get this flag.
os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
