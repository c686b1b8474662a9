"""The hot statements on PostgreSQL, on the psycopg connection Django opened.

Django's cursors quote every value into the SQL text on the client (psycopg's ``ClientCursor``):
per row that was most of a commit's Python. Here the statements bind their values on the server
(``psycopg.Cursor``), one statement per batch whatever its size (``= ANY(%s)`` with an array), so
psycopg prepares each of them once per connection (after ``prepare_threshold`` runs, which
Django's ``OPTIONS`` set: ``None`` turns preparing off, as a transaction-pooling pgbouncer needs).
Messages go in by ``COPY``: the fastest of executemany, a multi-row VALUES, an ``unnest`` insert
and COPY measured here (benchmarks/RESULTS.md).
"""

from __future__ import annotations

import uuid
from collections.abc import Collection, Sequence
from datetime import datetime
from typing import TYPE_CHECKING

import psycopg
from django.db import connection

from app.broker.models import Delivery, Message, Topic
from app.broker.statements import running
from app.codec import dumps
from app.pulsar.models import Subscription

if TYPE_CHECKING:
    from app.broker.services import NewMessage

MESSAGES, DELIVERIES = Message._meta.db_table, Delivery._meta.db_table
TOPICS, SUBSCRIPTIONS = Topic._meta.db_table, Subscription._meta.db_table

COPY = (f'COPY "{MESSAGES}" ("message_id", "topic_id", "sequence", "producer_id", "producer_principal", '
        '"properties", "payload", "context", "publish_time", "frame", "response_topic_id", "deliver_at") FROM STDIN')
ALLOCATE = f'UPDATE "{TOPICS}" SET "last_sequence" = "last_sequence" + %s WHERE "id" = %s RETURNING "last_sequence"'
DELETE_ACKED = (f'DELETE FROM "{MESSAGES}" WHERE "topic_id" = %s AND "message_id" = ANY(%s) '
                f'AND NOT EXISTS (SELECT 1 FROM "{SUBSCRIPTIONS}" WHERE "topic_id" = %s) RETURNING "id"')
DELETE_DELIVERIES = f'DELETE FROM "{DELIVERIES}" WHERE "message_id" = ANY(%s)'
RECORD_ACKS = (f'INSERT INTO "{DELIVERIES}" ("message_id", "principal", "redelivery_count", "acked_at") '
               f'SELECT "id", %s, 0, %s FROM "{MESSAGES}" WHERE "topic_id" = %s AND "message_id" = ANY(%s) '
               'ON CONFLICT ("message_id", "principal") DO UPDATE SET "acked_at" = excluded."acked_at" '
               'RETURNING "message_id"')


def _cursor() -> psycopg.Cursor[tuple[object, ...]]:
    """A cursor binding on the server, on Django's connection (in Django's transaction)."""
    return psycopg.Cursor(connection.connection)


class PostgreSQLStatements:
    def allocate_sequences(self, topic_id: int, count: int) -> int | None:
        with running(ALLOCATE), _cursor() as cursor:
            row = cursor.execute(ALLOCATE, (count, topic_id)).fetchone()
        return None if row is None else int(str(row[0]))

    def insert_messages(self, messages: Sequence[tuple[NewMessage, int]]) -> None:
        with running(COPY), _cursor() as cursor, cursor.copy(COPY) as copy:
            for m, sequence in messages:
                copy.write_row((m.message_id, m.topic_id, sequence, m.producer_id, m.producer_principal,
                                dumps(m.properties), m.payload, None if m.context is None else dumps(m.context),
                                m.publish_time, m.frame, m.response_topic_id, m.deliver_at))

    def delete_acked(self, topic_id: int, message_ids: Collection[uuid.UUID]) -> int:
        with running(DELETE_ACKED), _cursor() as cursor:
            removed = [pk for pk, in cursor.execute(DELETE_ACKED, (topic_id, list(message_ids), topic_id))]
        if removed:
            with running(DELETE_DELIVERIES), _cursor() as cursor:
                cursor.execute(DELETE_DELIVERIES, (removed,))
        return len(removed)

    def record_acks(self, topic_id: int, principal: str, message_ids: Collection[uuid.UUID],
                    now: datetime) -> set[int]:
        with running(RECORD_ACKS), _cursor() as cursor:
            cursor.execute(RECORD_ACKS, (principal, now, topic_id, list(message_ids)))
            return {int(str(pk)) for pk, in cursor.fetchall()}


STATEMENTS = PostgreSQLStatements()
