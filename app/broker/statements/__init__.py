"""The group commit's hot statements, one module per database backend.

A group commit runs four kinds of statement per batch: reserve a topic's sequences, insert the
messages, delete what a cache ack removes (with its delivery rows), and record acks under the
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

from django.db import connection

if TYPE_CHECKING:
    from app.broker.services import NewMessage


class HotStatements(Protocol):
    def allocate_sequences(self, topic_id: int, count: int) -> int | None:
        """Add ``count`` to the topic's last sequence and return the new value (None: no such topic).
        The row update serialises writers of one topic across processes."""

    def insert_messages(self, messages: Sequence[tuple[NewMessage, int]]) -> None:
        """Insert each message with its sequence."""

    def delete_acked(self, topic_id: int, message_ids: Collection[uuid.UUID]) -> int:
        """The cache policy's ack on a topic without Pulsar subscriptions: delete these messages and
        their delivery rows. On a topic with subscriptions nothing is deleted. Returns how many went."""

    def record_acks(self, topic_id: int, principal: str, message_ids: Collection[uuid.UUID],
                    now: datetime) -> set[int]:
        """Mark the topic's stored messages with these ids acked by ``principal`` (unknown ids match
        nothing); returns the pks of the messages marked."""


def hot_statements() -> HotStatements:
    """The statements of the current thread's database connection."""
    if connection.vendor == "postgresql":
        from app.broker.statements import postgresql

        return postgresql.STATEMENTS
    if connection.vendor == "sqlite":
        from app.broker.statements import sqlite

        return sqlite.STATEMENTS
    raise NotImplementedError(f"Switchyard runs on SQLite or PostgreSQL, not {connection.vendor}")


@contextmanager
def running(sql: str) -> Iterator[None]:
    """Run one statement on the raw connection as Django's cursor would: its errors translated, and
    logged when Django logs queries."""
    started = time.monotonic()
    with connection.wrap_database_errors:
        yield
    if connection.queries_logged:
        connection.queries_log.append({"sql": sql, "time": f"{time.monotonic() - started:.3f}"})
