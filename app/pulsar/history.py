"""A topic's stored messages by sequence, whoever acked them: what a reader reads
(docs/architecture.md 18.5). Sync functions; call them through ``database_sync_to_async``."""

from __future__ import annotations

import uuid

from django.db import transaction

from app.broker.models import Message, Topic
from app.broker.services import Replay, ReplayPage


def last_sequence(topic_id: int) -> int:
    """The highest sequence handed out on the topic (committed messages only)."""
    found: int | None = Topic.objects.filter(pk=topic_id).values_list("last_sequence", flat=True).first()
    return found or 0


def message_sequence(topic_id: int, message_id: uuid.UUID) -> int | None:
    """The sequence of a stored message of the topic, None when it is unknown or was removed."""
    found: int | None = (
        Message.objects.filter(topic_id=topic_id, message_id=message_id).values_list("sequence", flat=True).first()
    )
    return found


def history(topic_id: int, *, after: int, limit: int) -> ReplayPage:
    """The next ``limit`` stored messages with a sequence above ``after``, in sequence order.
    Nothing is counted or recorded; ``redelivery_count`` is 0. ``last_sequence`` is the topic's,
    read first: every stored message up to it is in this page or a later one."""
    with transaction.atomic():
        last = last_sequence(topic_id)
        rows = (
            Message.objects.filter(topic_id=topic_id, sequence__gt=after, sequence__lte=last)
            .order_by("sequence")
            .values_list("sequence", "message_id", "frame")[:limit]
        )
        replays = [Replay(sequence, str(message_id), frame, 0) for sequence, message_id, frame in rows]
    return ReplayPage(replays, last)
