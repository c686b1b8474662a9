"""SQLITE_SYNCHRONOUS: the embedded database's durability against a power cut (README "Durability")."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PRAGMA = (
    "import django; django.setup()\n"
    "from django.db import connection\n"
    "print(connection.cursor().execute('PRAGMA synchronous').fetchone()[0])\n"
)

pytestmark = pytest.mark.database_agnostic


def run(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if k != "SQLITE_SYNCHRONOUS"}
    environ.update(DJANGO_SETTINGS_MODULE="settings", DATABASE_URL=f"sqlite:///{tmp_path / 'db.sqlite3'}", **env)
    return subprocess.run([sys.executable, "-c", PRAGMA], cwd=ROOT, env=environ, capture_output=True, text=True,
                          timeout=60)


@pytest.mark.parametrize(("value", "pragma"), [(None, "1"), ("FULL", "2")])
def test_the_setting_becomes_the_connections_pragma(tmp_path: Path, value: str | None, pragma: str):
    """Unset is NORMAL (1); FULL (any case) is FULL (2)."""
    result = run(tmp_path, **({} if value is None else {"SQLITE_SYNCHRONOUS": value}))
    assert (result.returncode, result.stdout.strip()) == (0, pragma), result.stderr


def test_an_unknown_value_stops_the_start(tmp_path: Path):
    """SQLITE_SYNCHRONOUS=off (no durability at all) is refused with the setting's name."""
    result = run(tmp_path, SQLITE_SYNCHRONOUS="off")
    assert result.returncode != 0 and "SQLITE_SYNCHRONOUS='off' is not one of normal, full" in result.stderr
