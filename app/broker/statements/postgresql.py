"""The hot statements on PostgreSQL, on the psycopg connection Django opened.

Django's cursors quote every value into the SQL text on the client (psycopg's ``ClientCursor``):
per row that was most of a commit's Python. Here the values are bound on the server
(``psycopg.Cursor``), with one statement text per batch whatever its size (``= ANY(%s)`` with an
array). Django turns psycopg's statement preparing off (for connection poolers); ``OPTIONS``
``prepare_threshold`` turns it on, for these statements too.

A few messages go in by one statement that also reserves their sequences (one round trip: the
request/reply path); a batch goes in by ``COPY``: of executemany, a multi-row VALUES, an ``unnest``
insert and COPY, the fastest per row measured here (benchmarks/RESULTS.md).
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Collection, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

import psycopg
from django.db.backends.base.base import BaseDatabaseWrapper

from app.broker.models import Delivery, Message, Topic
from app.broker.statements import running
from app.codec import dumps
from app.pulsar.models import Subscription

if TYPE_CHECKING:
    from app.broker.services import NewMessage

MESSAGES, DELIVERIES = Message._meta.db_table, Delivery._meta.db_table
TOPICS, SUBSCRIPTIONS = Topic._meta.db_table, Subscription._meta.db_table

COLUMN_NAMES = ("message_id", "topic_id", "sequence", "producer_id", "producer_principal", "properties", "payload",
                "context", "publish_time", "frame", "response_topic_id", "deliver_at")
COLUMNS = ", ".join(f'"{name}"' for name in COLUMN_NAMES)
COPY = f'COPY "{MESSAGES}" ({COLUMNS}) FROM STDIN'
ALLOCATE = f'UPDATE "{TOPICS}" SET "last_sequence" = "last_sequence" + %s WHERE "id" = %s RETURNING "last_sequence"'
# The cache ack and its delivery rows in one statement (both DELETEs see the same snapshot).
DELETE_ACKED = (f'WITH "gone" AS (DELETE FROM "{MESSAGES}" WHERE "topic_id" = %s AND "message_id" = ANY(%s) '
                f'AND NOT EXISTS (SELECT 1 FROM "{SUBSCRIPTIONS}" WHERE "topic_id" = %s) RETURNING "id"), '
                f'"dropped" AS (DELETE FROM "{DELIVERIES}" WHERE "message_id" IN (SELECT "id" FROM "gone")) '
                'SELECT count(*) FROM "gone"')
RECORD_ACKS = (f'INSERT INTO "{DELIVERIES}" ("message_id", "principal", "redelivery_count", "acked_at") '
               f'SELECT "id", %s, 0, %s FROM "{MESSAGES}" WHERE "topic_id" = %s AND "message_id" = ANY(%s) '
               'ON CONFLICT ("message_id", "principal") DO UPDATE SET "acked_at" = excluded."acked_at" '
               'RETURNING "message_id"')

# Up to this many messages of a topic, of at most this many characters of frame and payload in all,
# are stored by one statement that also reserves their sequences (one round trip); more go by
# ALLOCATE and COPY, whose per-row cost is lower and round trips more. The bound in characters:
# the statement's parameters are encoded all at once, COPY streams its rows (big messages would
# otherwise take several copies of a batch in memory at once).
SMALL_BATCH = 16
SMALL_BATCH_CHARS = 256 * 1024
# The VALUES rows of that statement: a message's position in the batch, then its columns but the
# sequence (worked out from the position), in the order of _values(), each with its type.
VALUE_COLUMNS = (("n", "integer"), ("message_id", "uuid"), ("topic_id", "bigint"), ("producer_id", "integer"),
                 ("producer_principal", "varchar"), ("properties", "jsonb"), ("payload", "text"),
                 ("context", "jsonb"), ("publish_time", "timestamptz"), ("frame", "text"),
                 ("response_topic_id", "bigint"), ("deliver_at", "timestamptz"))


@functools.lru_cache(maxsize=SMALL_BATCH)
def _store_sql(count: int) -> str:
    """Reserve ``count`` sequences on the topic row and insert the messages numbered from them; the
    topic missing, nothing is inserted (the join with the UPDATE's row is empty)."""
    row = "(" + ", ".join(f"%s::{kind}" for _, kind in VALUE_COLUMNS) + ")"
    names = ", ".join(f'"{name}"' for name, _ in VALUE_COLUMNS)
    picked = ", ".join(f'"reserved"."last_sequence" - {count} + "v"."n"' if name == "sequence" else f'"v"."{name}"'
                       for name in COLUMN_NAMES)
    return (f'WITH "reserved" AS (UPDATE "{TOPICS}" SET "last_sequence" = "last_sequence" + {count} '
            f'WHERE "id" = %s RETURNING "last_sequence") '
            f'INSERT INTO "{MESSAGES}" ({COLUMNS}) SELECT {picked} '
            f'FROM "reserved", (VALUES {", ".join([row] * count)}) AS "v" ({names}) RETURNING "sequence"')


def _chars(messages: Sequence[NewMessage]) -> int:
    return sum(len(m.frame) + len(m.payload or "") for m in messages)


def _values(m: NewMessage) -> tuple[object, ...]:
    """A message's columns but its sequence, in COLUMNS' order."""
    return (m.message_id, m.topic_id, m.producer_id, m.producer_principal, dumps(m.properties), m.payload,
            None if m.context is None else dumps(m.context), m.publish_time, m.frame, m.response_topic_id,
            m.deliver_at)


def _cursor(db: BaseDatabaseWrapper) -> psycopg.Cursor[tuple[Any, ...]]:
    """A cursor binding on the server, on Django's connection (in Django's transaction)."""
    return psycopg.Cursor(db.connection)


class PostgreSQLStatements:
    def __init__(self, db: BaseDatabaseWrapper) -> None:
        self.db = db

    def store_messages(self, topic_id: int, messages: Sequence[NewMessage]) -> int | None:
        if len(messages) <= SMALL_BATCH and _chars(messages) <= SMALL_BATCH_CHARS:
            params: list[object] = [topic_id]
            for n, message in enumerate(messages, start=1):
                params += (n, *_values(message))
            with running(self.db, sql := _store_sql(len(messages))), _cursor(self.db) as cursor:
                sequences = [int(sequence) for sequence, in cursor.execute(sql, params)]
            return min(sequences) if sequences else None
        with running(self.db, ALLOCATE), _cursor(self.db) as cursor:
            row = cursor.execute(ALLOCATE, (len(messages), topic_id)).fetchone()
        if row is None:
            return None
        first = int(row[0]) - len(messages) + 1
        with running(self.db, COPY), _cursor(self.db) as cursor, cursor.copy(COPY) as copy:
            for sequence, message in enumerate(messages, start=first):
                values = _values(message)
                copy.write_row((*values[:2], sequence, *values[2:]))
        return first

    def delete_acked(self, topic_id: int, message_ids: Collection[uuid.UUID]) -> int:
        with running(self.db, DELETE_ACKED), _cursor(self.db) as cursor:
            row = cursor.execute(DELETE_ACKED, (topic_id, list(message_ids), topic_id)).fetchone()
        return 0 if row is None else int(row[0])

    def record_acks(self, topic_id: int, principal: str, message_ids: Collection[uuid.UUID],
                    now: datetime) -> set[int]:
        with running(self.db, RECORD_ACKS), _cursor(self.db) as cursor:
            cursor.execute(RECORD_ACKS, (principal, now, topic_id, list(message_ids)))
            return {int(pk) for pk, in cursor.fetchall()}

