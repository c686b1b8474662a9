"""The group commit's hot statements, one module per database backend.

A group commit runs three kinds of statement per batch: store messages (reserving their
sequences), delete what a cache ack removes (with its delivery rows), and record acks under the
storing policies. Through the ORM each value passed Django's field adapters and (on PostgreSQL)
psycopg's client-side quoting, row by row: that was most of a commit's time (benchmarks/RESULTS.md).
Here each backend binds plain values on the connection Django opened, inside the transaction
Django began, so the commit and its rollback stay Django's. Everything else uses the ORM.

Each statement runs under ``running()``: errors become Django's (``IntegrityError`` for a reused
messageId), and Django's query log (``DEBUG``, ``CaptureQueriesContext``) sees it.

Both modules keep the rows exactly as the ORM would (UUIDs as 32 hex digits and datetimes as UTC
text on SQLite, native types on PostgreSQL; a ``None`` context is SQL NULL): the ORM reads them back.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Collection, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import TYPE_CHECKING, Protocol

from django.db import DEFAULT_DB_ALIAS, connections
from django.db.backends.base.base import BaseDatabaseWrapper

if TYPE_CHECKING:
    from app.broker.services import NewMessage


class HotStatements(Protocol):
    def store_messages(self, topic_id: int, messages: Sequence[NewMessage]) -> int | None:
        """Reserve the next sequences of the topic (its row update serialises writers of one topic
        across processes) and insert the messages numbered from them, in order. Returns the first
        sequence; None when there is no such topic (and nothing was inserted)."""

    def delete_acked(self, topic_id: int, message_ids: Collection[uuid.UUID]) -> int:
        """The cache policy's ack on a topic without Pulsar subscriptions: delete these messages and
        their delivery rows. On a topic with subscriptions nothing is deleted. Returns how many went."""

    def record_acks(self, topic_id: int, principal: str, message_ids: Collection[uuid.UUID],
                    now: datetime) -> set[int]:
        """Mark the topic's stored messages with these ids acked by ``principal`` (unknown ids match
        nothing); returns the pks of the messages marked."""


def hot_statements() -> HotStatements:
    """The statements on the current thread's database connection (looked up once: Django's
    ``connection`` proxy costs a thread-local lookup per attribute)."""
    db = connections[DEFAULT_DB_ALIAS]
    if db.vendor == "postgresql":
        from app.broker.statements.postgresql import PostgreSQLStatements

        return PostgreSQLStatements(db)
    if db.vendor == "sqlite":
        from app.broker.statements.sqlite import SQLiteStatements

        return SQLiteStatements(db)
    raise NotImplementedError(f"Switchyard runs on SQLite or PostgreSQL, not {db.vendor}")


@contextmanager
def running(db: BaseDatabaseWrapper, sql: str) -> Iterator[None]:
    """Run one statement on the raw connection as Django's cursor would: its errors translated, and
    logged when Django logs queries."""
    started = time.monotonic()
    with db.wrap_database_errors:
        yield
    if db.queries_logged:
        db.queries_log.append({"sql": sql, "time": f"{time.monotonic() - started:.3f}"})
