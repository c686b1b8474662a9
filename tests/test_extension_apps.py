"""Users' own Django apps through SWITCHYARD_APPS: migrated, seen by every process, and a bad value
refused at startup."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.apps.notes.models import Note
from tests.databases import new_database_url
from tests.servers import ROOT, manage, server_env


def test_installed_apps_tables_are_shared_with_other_processes() -> None:
    """A row of a SWITCHYARD_APPS model written here is read by a management command in its own process."""
    note = Note.objects.create(text="from the test")
    shown = manage(os.environ["DATABASE_URL"], "shell", "--no-imports", "-c",
                   f"from tests.apps.notes.models import Note; print(Note.objects.get(pk={note.pk}).text)")
    assert shown == "from the test"


def test_migrate_creates_their_tables(tmp_path: Path) -> None:
    """manage.py migrate on a fresh database applies the apps' migrations beside Switchyard's."""
    url = new_database_url(tmp_path, "fresh")
    manage(url, "migrate", "--noinput", "-v0")
    assert "[X] 0001_initial" in manage(url, "showmigrations", "notes")


@pytest.mark.database_agnostic
@pytest.mark.parametrize(("value", "reason"), [
    ("shop;rm", "is not an import path"),
    ("app.broker", "is installed already"),
    ("tests.apps.nowhere", "No module named 'tests.apps.nowhere'"),
])
def test_bad_value_is_refused_at_startup(value: str, reason: str) -> None:
    """A value that is no import path, names a Switchyard app, or names no module stops manage.py with why."""
    done = subprocess.run([sys.executable, "manage.py", "check"], cwd=ROOT, capture_output=True, text=True,
                          timeout=60, env=server_env(os.environ["DATABASE_URL"], SWITCHYARD_APPS=value))
    assert done.returncode != 0 and reason in done.stderr, done.stderr[-2000:]
