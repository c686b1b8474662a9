"""Group commits against the real database (SQLite or PostgreSQL, whichever the session uses)."""

from __future__ import annotations

import uuid

from django.utils import timezone

from app.broker.models import Delivery, Message, Topic
from app.broker.policy import StorePolicy
from app.broker.services import Ack, NewMessage, write_batch
from tests.protocol import make_topic


def new_message(topic: Topic, message_id: uuid.UUID | None = None) -> NewMessage:
    return NewMessage(topic.pk, message_id or uuid.uuid4(), None, "anonymous", {"k": 1}, "cGF5", 0,
                      timezone.now(), "{}")


def test_sequences_are_dense_and_ordered():
    """Messages of one batch get consecutive sequences in submission order."""
    topic = Topic.objects.get(slug=make_topic(policy="cache"))
    results = write_batch([new_message(topic) for _ in range(5)])
    assert results == [1, 2, 3, 4, 5]


def test_duplicate_ack_in_one_batch_is_one_ack():
    """One principal acking a message twice in a batch neither fails it nor its neighbours."""
    topic = Topic.objects.get(slug=make_topic(policy="store"))
    first = new_message(topic)
    write_batch([first])
    ack = Ack(topic.pk, StorePolicy.STORE, first.message_id, "anonymous")
    results = write_batch([ack, ack, new_message(topic)])
    assert results[:2] == [None, None] and results[2] == 2
    assert Delivery.objects.filter(message__message_id=first.message_id, acked_at__isnull=False).count() == 1


def test_duplicate_message_id_fails_only_itself():
    """A reused messageId fails that op alone; the rest of the batch is stored."""
    topic = Topic.objects.get(slug=make_topic(policy="cache"))
    taken = uuid.uuid4()
    write_batch([new_message(topic, taken)])
    results = write_batch([new_message(topic), new_message(topic, taken), new_message(topic)])
    assert isinstance(results[1], Exception)
    assert Message.objects.filter(topic=topic).count() == 3
