"""Fresh databases per configuration: a SQLite file in a temporary directory, or a PostgreSQL
database created for the run and dropped after it."""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

POSTGRES_ADMIN_URL = os.environ.get("SWITCHYARD_BENCH_POSTGRES", "postgres://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("SWITCHYARD_BENCH_REDIS", "redis://127.0.0.1:6379/0")


def reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=2):
            return True
    except OSError:
        return False


def postgres_and_redis_reachable() -> bool:
    return reachable("127.0.0.1", 5432) and reachable("127.0.0.1", 6379)


@contextmanager
def fresh_sqlite() -> Iterator[str]:
    directory = Path(tempfile.mkdtemp(prefix="switchyard-bench-"))
    try:
        yield f"sqlite:///{directory / 'bench.sqlite3'}"
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@contextmanager
def fresh_postgres() -> Iterator[str]:
    import psycopg

    name = f"switchyard_bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield POSTGRES_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as conn:
            # FORCE: a killed server's connections may not be gone yet.
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
