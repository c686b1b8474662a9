"""Where ``/ws/work-requests/`` reads work request changes: the outbox rows of source
``/work-requests`` for live changes (every state change writes one in its own transaction,
app/work/events.py, whichever process made it), and the requests table for the replay of those that
ended since a time. Functions for a database thread.

The outbox is read by id with app/broker/announcements.py's ``FeedCursor``: on PostgreSQL an id is
handed out at insert and becomes visible at commit, so an id skipped by one read is asked for again
(a "hole") until it appears or the hole expires. Reads take every source's rows, the other sources'
without their data: only then is a skipped id a real hole (a transaction still open), not merely
another source's event.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

from django.db.models import BinaryField, Case, Q, When
from pydantic import ValidationError

from app import codec
from app.broker.announcements import START_HOLES, past_cursor
from app.outbox.models import OutboxEvent
from app.work.events import SOURCE, WorkRequestEvent, WorkRequestState, state_fields
from app.work.models import FINAL, WorkRequest
from app.work.watching import WatchScope

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class OutboxRow:
    id: int
    # None for another source's event (or one of this source that is no WorkRequestEvent).
    event: WorkRequestEvent | None


def newest_ids() -> list[int]:
    """The ids of the newest outbox rows, where a feed starts (``FeedCursor.at_end`` watches the ids
    below the last one that are not visible yet: their transactions may still commit)."""
    return list(OutboxEvent.objects.order_by("-id").values_list("id", flat=True)[: START_HOLES + 1])


def read_changes(after: int, holes: list[int], limit: int) -> list[OutboxRow]:
    """The outbox rows after ``after`` and those of ``holes`` that committed meanwhile, by id, at
    most ``limit``; only work request events carry their data."""
    rows = (
        OutboxEvent.objects.order_by()
        .annotate(work_data=Case(When(source=SOURCE, then="data"), output_field=BinaryField()))
        .values_list("id", "work_data")
    )
    read = past_cursor(rows, after, holes)[:limit]
    return [OutboxRow(pk, None if data is None else _event(pk, bytes(data))) for pk, data in read]


def _event(pk: int, data: bytes) -> WorkRequestEvent | None:
    try:
        return WorkRequestEvent.model_validate(codec.loads(data))
    except (codec.DecodeError, ValidationError):
        # Emitted under this source by something else (the outbox API lets its users name any source).
        logger.warning("outbox event %d of source %s is no work request change; not shown to watchers", pk, SOURCE)
        return None


def replay_page(
    since: datetime, scope: WatchScope, after: tuple[datetime, int] | None, limit: int
) -> list[WorkRequestState]:
    """Requests ``scope`` shows that completed or aborted at or after ``since``, by (completed_at,
    id), the ``limit`` after ``after`` (keyset: stable while more end meanwhile)."""
    rows = WorkRequest.objects.filter(status__in=FINAL, completed_at__gte=since, **scope.where())
    if after is not None:
        rows = rows.filter(Q(completed_at__gt=after[0]) | Q(completed_at=after[0], id__gt=after[1]))
    page = rows.select_related("worker").order_by("completed_at", "id")[:limit]
    return [WorkRequestState(**state_fields(request)) for request in page]
