"""Databases for a test session: SQLite files by default, fresh PostgreSQL databases with
``SWITCHYARD_TEST_DB=postgres`` (the protocol suite runs on both)."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

POSTGRES_ADMIN_URL = os.environ.get("SWITCHYARD_TEST_POSTGRES", "postgres://postgres@127.0.0.1:5432/test")
BACKEND = os.environ.get("SWITCHYARD_TEST_DB", "sqlite")

_created: list[str] = []


def new_database_url(directory: Path, name: str, backend: str = BACKEND) -> str:
    """A new, empty database for a server (not yet migrated)."""
    if backend == "sqlite":
        return f"sqlite:///{directory / f'{name}.sqlite3'}"
    if backend != "postgres":
        raise RuntimeError(f"SWITCHYARD_TEST_DB={backend!r}: use sqlite or postgres")
    import psycopg

    db = f"switchyard_{name}_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{db}"')
    _created.append(db)
    return POSTGRES_ADMIN_URL.rsplit("/", 1)[0] + f"/{db}"


def copy_database(template_url: str, directory: Path, name: str) -> str:
    """A new database holding what ``template_url`` holds (no connection may be open to it)."""
    if template_url.startswith("sqlite:///"):
        import shutil

        url = new_database_url(directory, name, backend="sqlite")
        shutil.copyfile(template_url.removeprefix("sqlite:///"), url.removeprefix("sqlite:///"))
        return url
    import psycopg

    template = template_url.rsplit("/", 1)[1]
    db = f"switchyard_{name}_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{db}" TEMPLATE "{template}"')
    _created.append(db)
    return POSTGRES_ADMIN_URL.rsplit("/", 1)[0] + f"/{db}"


def drop_created() -> None:
    if not _created:
        return
    import psycopg

    with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as conn:
        for db in _created:
            conn.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
    _created.clear()


def query(database_url: str, sql: str, params: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
    """Read a server's database directly (``%s`` placeholders), whatever its backend."""
    if database_url.startswith("sqlite:///"):
        import sqlite3

        path = database_url.removeprefix("sqlite:///")
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5) as db:
            return db.execute(sql.replace("%s", "?"), params).fetchall()
    import psycopg

    with psycopg.connect(database_url) as conn:
        return conn.execute(sql, params).fetchall()
