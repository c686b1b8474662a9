"""The hot statements on SQLite, bound through the ``sqlite3`` connection Django opened.

Values are written as Django's SQLite backend writes them: a UUID as its 32 hex digits, an aware
datetime as naive UTC text (``str()`` of it), JSON as text. The statements use ``?`` placeholders,
so ``sqlite3`` caches them prepared per connection.
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Collection, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from django.db import connection

from app.broker.models import Delivery, Message, Topic
from app.broker.statements import running
from app.codec import dumps
from app.pulsar.models import Subscription

if TYPE_CHECKING:
    from app.broker.services import NewMessage

MESSAGES, DELIVERIES = Message._meta.db_table, Delivery._meta.db_table
TOPICS, SUBSCRIPTIONS = Topic._meta.db_table, Subscription._meta.db_table

INSERT = (f'INSERT INTO "{MESSAGES}" ("message_id", "topic_id", "sequence", "producer_id", "producer_principal", '
          '"properties", "payload", "context", "publish_time", "frame", "response_topic_id", "deliver_at") '
          "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")
ALLOCATE = f'UPDATE "{TOPICS}" SET "last_sequence" = "last_sequence" + ? WHERE "id" = ? RETURNING "last_sequence"'


def _text(value: datetime) -> str:
    """Django's SQLite text for an aware datetime (USE_TZ: stored as UTC)."""
    return str(value.astimezone(UTC).replace(tzinfo=None))


def _row(message: NewMessage, sequence: int) -> tuple[Any, ...]:
    return (message.message_id.hex, message.topic_id, sequence, message.producer_id, message.producer_principal,
            dumps(message.properties), message.payload,
            None if message.context is None else dumps(message.context),
            _text(message.publish_time), message.frame, message.response_topic_id,
            None if message.deliver_at is None else _text(message.deliver_at))


@functools.lru_cache(maxsize=1024)
def _delete_acked_sql(count: int) -> str:
    return (f'DELETE FROM "{MESSAGES}" WHERE "topic_id" = ? AND "message_id" IN ({", ".join(["?"] * count)}) '
            f'AND NOT EXISTS (SELECT 1 FROM "{SUBSCRIPTIONS}" WHERE "topic_id" = ?) RETURNING "id"')


@functools.lru_cache(maxsize=1024)
def _delete_deliveries_sql(count: int) -> str:
    return f'DELETE FROM "{DELIVERIES}" WHERE "message_id" IN ({", ".join(["?"] * count)})'


@functools.lru_cache(maxsize=1024)
def _record_acks_sql(count: int) -> str:
    return (f'INSERT INTO "{DELIVERIES}" ("message_id", "principal", "redelivery_count", "acked_at") '
            f'SELECT "id", ?, 0, ? FROM "{MESSAGES}" WHERE "topic_id" = ? '
            f'AND "message_id" IN ({", ".join(["?"] * count)}) '
            'ON CONFLICT ("message_id", "principal") DO UPDATE SET "acked_at" = excluded."acked_at" '
            'RETURNING "message_id"')


class SQLiteStatements:
    def allocate_sequences(self, topic_id: int, count: int) -> int | None:
        with running(ALLOCATE):
            row = connection.connection.execute(ALLOCATE, (count, topic_id)).fetchone()
        return None if row is None else int(row[0])

    def insert_messages(self, messages: Sequence[tuple[NewMessage, int]]) -> None:
        rows = [_row(message, sequence) for message, sequence in messages]
        with running(INSERT):
            connection.connection.executemany(INSERT, rows)

    def delete_acked(self, topic_id: int, message_ids: Collection[uuid.UUID]) -> int:
        raw = connection.connection
        ids = [message_id.hex for message_id in message_ids]
        with running(sql := _delete_acked_sql(len(ids))):
            removed = [pk for pk, in raw.execute(sql, (topic_id, *ids, topic_id)).fetchall()]
        if removed:
            with running(sql := _delete_deliveries_sql(len(removed))):
                raw.execute(sql, removed)
        return len(removed)

    def record_acks(self, topic_id: int, principal: str, message_ids: Collection[uuid.UUID],
                    now: datetime) -> set[int]:
        ids = [message_id.hex for message_id in message_ids]
        with running(sql := _record_acks_sql(len(ids))):
            cursor = connection.connection.execute(sql, (principal, _text(now), topic_id, *ids))
            return {int(pk) for pk, in cursor.fetchall()}


STATEMENTS = SQLiteStatements()
