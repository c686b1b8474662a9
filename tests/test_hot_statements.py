"""The group commit's hot statements (app/broker/statements) against the real database: the rows they
write read back through the ORM as the ORM would have written them. Runs on SQLite and on PostgreSQL."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta, timezone

import pytest
from django.db import IntegrityError, connection, transaction
from django.test.utils import CaptureQueriesContext

from app.broker.models import Delivery, Message, Topic
from app.broker.services import NewMessage
from app.broker.statements import hot_statements
from tests.protocol import make_topic, make_user


def topic_of() -> Topic:
    return Topic.objects.get(slug=make_topic(policy="store", dasf=False))


def message(topic: Topic, **fields: object) -> NewMessage:
    values: dict[str, object] = dict(
        topic_id=topic.pk, message_id=uuid.uuid4(), producer_id=None, producer_principal="anonymous",
        properties={"k": "v"}, payload="cGF5", context=None,
        publish_time=datetime(2026, 11, 30, 12, 0, 1, 250_000, tzinfo=UTC), frame='{"payload":"cGF5"}',
    )
    values.update(fields)
    return NewMessage(**values)  # type: ignore[arg-type]


def insert(*messages: NewMessage) -> list[int]:
    """Store ``messages`` (of one topic) as the group commit does; their sequences."""
    with transaction.atomic():
        first = hot_statements().store_messages(messages[0].topic_id, messages)
    assert first is not None
    return list(range(first, first + len(messages)))


def test_store_messages_numbers_them_from_the_topic_row():
    """Storing 3 then 2 messages numbers them 1-3 and 4-5, in order, and the topic row holds 5."""
    topic = topic_of()
    batches = [message(topic) for _ in range(3)], [message(topic) for _ in range(2)]
    assert [insert(*batch) for batch in batches] == [[1, 2, 3], [4, 5]]
    stored = Message.objects.filter(topic=topic).order_by("sequence").values_list("message_id", flat=True)
    assert list(stored) == [m.message_id for m in [*batches[0], *batches[1]]]
    topic.refresh_from_db()
    assert topic.last_sequence == 5


@pytest.mark.parametrize("count", [1, 40], ids=["one", "a batch"])
def test_store_messages_of_a_missing_topic_stores_nothing(count: int):
    """A topic id with no row gives None and inserts nothing, for one message and for a batch."""
    ghost = Topic(pk=2**40)
    with transaction.atomic():
        assert hot_statements().store_messages(ghost.pk, [message(ghost) for _ in range(count)]) is None
    assert not Message.objects.filter(topic_id=ghost.pk).exists()


@pytest.mark.parametrize("count", [1, 40], ids=["one", "a batch"])
def test_every_message_of_a_batch_reads_back_in_order(count: int):
    """A lone message and a batch (PostgreSQL stores them by different statements) read back the same."""
    topic = topic_of()
    given = [message(topic, payload=f"p{i}", context={"i": i} if i % 2 else None) for i in range(count)]
    insert(*given)
    rows = Message.objects.filter(topic=topic).order_by("sequence")
    assert [(r.message_id, r.sequence, r.payload, r.context) for r in rows] == [
        (m.message_id, i + 1, f"p{i}", m.context) for i, m in enumerate(given)]


def test_inserted_message_reads_back_through_the_orm():
    """Every column of an inserted message reads back through the ORM as it was given."""
    topic = topic_of()
    user = make_user()
    given = message(topic, producer_id=user.pk, producer_principal=f"user:{user.username}",
                    properties={"nested": [1, "two", None]}, context={"id": 7},
                    deliver_at=datetime(2026, 12, 1, 0, 0, tzinfo=UTC))
    [sequence] = insert(given)
    row = Message.objects.get(message_id=given.message_id)
    assert (row.topic_id, row.sequence, row.producer_id, row.producer_principal) == (
        topic.pk, sequence, user.pk, f"user:{user.username}")
    assert (row.properties, row.payload, row.context, row.frame) == (
        {"nested": [1, "two", None]}, "cGF5", {"id": 7}, '{"payload":"cGF5"}')
    assert (row.publish_time, row.deliver_at) == (given.publish_time, given.deliver_at)


def test_a_none_context_is_sql_null_and_a_whole_second_keeps_its_time():
    """A None context is stored as SQL NULL (as the ORM stores it), and a time without microseconds reads back."""
    topic = topic_of()
    given = message(topic, publish_time=datetime(2026, 11, 30, 12, 0, 1, tzinfo=UTC))
    insert(given)
    assert Message.objects.filter(message_id=given.message_id, context__isnull=True).exists()
    assert Message.objects.get(message_id=given.message_id).publish_time == given.publish_time


def test_an_aware_time_in_another_zone_is_stored_as_the_same_instant():
    """A publish time given at UTC+2 is stored as the same instant."""
    topic = topic_of()
    instant = datetime(2026, 11, 30, 14, 0, 0, tzinfo=UTC)
    given = message(topic, publish_time=instant.astimezone(timezone(timedelta(hours=2))))
    insert(given)
    assert Message.objects.filter(publish_time=instant, message_id=given.message_id).exists()


def test_a_reused_message_id_raises_django_integrity_error():
    """A second insert of a topic's messageId raises Django's IntegrityError, which the group commit handles."""
    topic = topic_of()
    given = message(topic)
    insert(given)
    with pytest.raises(IntegrityError):
        insert(message(topic, message_id=given.message_id))


def test_delete_acked_removes_the_messages_and_their_delivery_rows():
    """The cache ack deletes the named messages with their delivery rows and leaves the rest."""
    topic = topic_of()
    kept, gone = message(topic), message(topic)
    insert(kept, gone)
    Delivery.objects.create(message=Message.objects.get(message_id=gone.message_id), principal="p")
    with transaction.atomic():
        assert hot_statements().delete_acked(topic.pk, {gone.message_id, uuid.uuid4()}) == 1
    assert list(Message.objects.filter(topic=topic).values_list("message_id", flat=True)) == [kept.message_id]
    assert not Delivery.objects.filter(principal="p", message__topic=topic).exists()


def test_record_acks_marks_known_ids_and_updates_a_second_ack():
    """Recording acks marks stored messages (unknown ids match nothing); acking again moves acked_at."""
    topic = topic_of()
    given = message(topic)
    insert(given)
    first, later = datetime(2026, 11, 30, tzinfo=UTC), datetime(2026, 11, 30, 1, tzinfo=UTC)
    with transaction.atomic():
        marked = hot_statements().record_acks(topic.pk, "user:a", [given.message_id, uuid.uuid4()], first)
        assert hot_statements().record_acks(topic.pk, "user:a", [given.message_id], later) == marked
    pk = Message.objects.get(message_id=given.message_id).pk
    assert marked == {pk}
    assert Delivery.objects.get(message_id=pk, principal="user:a").acked_at == later


def test_hot_statements_appear_in_djangos_query_log():
    """CaptureQueriesContext (Django's query log) sees the hot statements as it sees the ORM's."""
    topic = topic_of()
    with CaptureQueriesContext(connection) as queries:
        insert(message(topic))
    assert any("INSERT INTO" in q["sql"] for q in queries.captured_queries)


def test_a_few_large_messages_read_back_whole():
    """Two messages of 200,000 characters each (PostgreSQL streams them by COPY) read back whole, in order."""
    topic = topic_of()
    given = [message(topic, payload=str(i) * 200_000, frame=f'{{"n":{i}}}') for i in range(2)]
    assert insert(*given) == [1, 2]
    rows = Message.objects.filter(topic=topic).order_by("sequence").values_list("payload", "frame")
    assert list(rows) == [(str(i) * 200_000, f'{{"n":{i}}}') for i in range(2)]
