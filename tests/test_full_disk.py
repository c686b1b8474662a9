"""Recognising a full disk under the database (app/full_disk.py) in what the drivers raise."""

from __future__ import annotations

import psycopg.errors
import pytest
from django.db import OperationalError

from app.full_disk import disk_full
from tests.full_disk import fill_up


def test_sqlite_full_through_django_is_a_full_disk():
    """SQLite's SQLITE_FULL, wrapped by Django, is recognised."""
    with pytest.raises(OperationalError) as raised:
        fill_up()
    assert disk_full(raised.value)


def test_postgres_disk_full_through_django_is_a_full_disk():
    """PostgreSQL's disk_full (SQLSTATE 53100), wrapped by Django, is recognised."""
    try:
        raise OperationalError("could not extend file") from psycopg.errors.DiskFull("could not extend file")
    except OperationalError as exc:
        assert disk_full(exc)


def test_other_operational_errors_are_not():
    """An unreachable or locked database is not a full disk."""
    for text in ("database is locked", "connection refused"):
        assert not disk_full(OperationalError(text))


def test_a_failure_while_handling_a_full_disk_is_not_one():
    """An error raised while a full disk was being handled (not from it) is a defect of its own, logged as such."""
    try:
        try:
            fill_up()
        except OperationalError:
            raise AttributeError("a bug in the handler")  # noqa: B904 - the implicit context is the point
    except AttributeError as exc:
        assert exc.__context__ is not None and not disk_full(exc)
