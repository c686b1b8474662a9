"""The hot statements on SQLite, bound through the ``sqlite3`` connection Django opened.

Values are written as Django's SQLite backend writes them: a UUID as its 32 hex digits, an aware
datetime as naive text in the connection's time zone (``str()`` of it), JSON as text. The
statements use ``?`` placeholders, so ``sqlite3`` caches them prepared per connection.
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Collection, Sequence
from datetime import datetime, tzinfo
from typing import TYPE_CHECKING, Any

from django.db.backends.base.base import BaseDatabaseWrapper

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


def _text(value: datetime, zone: tzinfo) -> str:
    """Django's SQLite text for an aware datetime: naive, in the connection's time zone (UTC
    unless DATABASES sets TIME_ZONE)."""
    return str(value.astimezone(zone).replace(tzinfo=None))


def _row(message: NewMessage, sequence: int, zone: tzinfo) -> tuple[Any, ...]:
    return (message.message_id.hex, message.topic_id, sequence, message.producer_id, message.producer_principal,
            dumps(message.properties), message.payload,
            None if message.context is None else dumps(message.context),
            _text(message.publish_time, zone), message.frame, message.response_topic_id,
            None if message.deliver_at is None else _text(message.deliver_at, zone))


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
    def __init__(self, db: BaseDatabaseWrapper) -> None:
        self.db = db
        assert db.timezone is not None, "Switchyard runs with USE_TZ"
        self.zone: tzinfo = db.timezone

    def store_messages(self, topic_id: int, messages: Sequence[NewMessage]) -> int | None:
        with running(self.db, ALLOCATE):
            row = self.db.connection.execute(ALLOCATE, (len(messages), topic_id)).fetchone()
        if row is None:
            return None
        first = int(row[0]) - len(messages) + 1
        rows = [_row(message, sequence, self.zone) for sequence, message in enumerate(messages, start=first)]
        with running(self.db, INSERT):
            self.db.connection.executemany(INSERT, rows)
        return first

    def delete_acked(self, topic_id: int, message_ids: Collection[uuid.UUID]) -> int:
        raw = self.db.connection
        ids = [message_id.hex for message_id in message_ids]
        with running(self.db, sql := _delete_acked_sql(len(ids))):
            removed = [pk for pk, in raw.execute(sql, (topic_id, *ids, topic_id)).fetchall()]
        if removed:
            with running(self.db, sql := _delete_deliveries_sql(len(removed))):
                raw.execute(sql, removed)
        return len(removed)

    def record_acks(self, topic_id: int, principal: str, message_ids: Collection[uuid.UUID],
                    now: datetime) -> set[int]:
        ids = [message_id.hex for message_id in message_ids]
        with running(self.db, sql := _record_acks_sql(len(ids))):
            cursor = self.db.connection.execute(sql, (principal, _text(now, self.zone), topic_id, *ids))
            return {int(pk) for pk, in cursor.fetchall()}

