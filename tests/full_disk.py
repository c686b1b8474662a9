"""A real "database or disk is full" from SQLite, without filling a disk: a page limit stands in for it."""

from __future__ import annotations

import sqlite3

from django.db import OperationalError


def fill_up() -> None:
    """Raise SQLite's SQLITE_FULL as Django raises it (its OperationalError, the driver's as the cause)."""
    db = sqlite3.connect(":memory:")
    db.execute("CREATE TABLE t (x BLOB)")
    db.execute(f"PRAGMA max_page_count = {db.execute('PRAGMA page_count').fetchone()[0]}")
    try:
        db.execute("INSERT INTO t VALUES (zeroblob(100000))")
    except sqlite3.OperationalError as exc:
        raise OperationalError(*exc.args) from exc
    finally:
        db.close()
