"""The relay's side of the outbox table: claim a batch, settle it, prune, retry dead letters.

Plain synchronous ORM functions (called through ``database_sync_to_async``). On PostgreSQL,
claims lock their rows with ``FOR UPDATE SKIP LOCKED``, so several relays take disjoint batches;
on SQLite the write lock serialises claims.

Order per key: only the earliest open event of a key (its *head*) can be claimed on its own; its
successors are claimed with it, by the same relay, which publishes them one after another. An
event whose publish fails goes back as ``retry`` and its successors are released behind it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Case, Count, Min, Q, Value, When
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from app.outbox import wakeup
from app.outbox.cloudevents import Outbound
from app.outbox.models import OutboxEvent, Status
from app.outbox.retries import after_failure

logger = logging.getLogger(__name__)

PRUNE_CHUNK_ROWS = 10_000


@dataclass
class Settlement:
    """What became of a claimed batch."""

    published: list[int] = field(default_factory=list)
    # Publish attempted and refused: counts an attempt.
    failed: list[tuple[int, str]] = field(default_factory=list)
    # Not attempted, or the target was unreachable: back in the queue, no attempt counted.
    released: list[tuple[int, str]] = field(default_factory=list)

    def settled(self) -> set[int]:
        return {*self.published, *(pk for pk, _ in self.failed), *(pk for pk, _ in self.released)}

    def release_rest(self, events: Iterable[Outbound], reason: str) -> None:
        done = self.settled()
        self.released.extend((e.pk, reason) for e in events if e.pk not in done)


def _outbound(row: OutboxEvent) -> Outbound:
    return Outbound(
        pk=row.pk, id=row.event_id, source=row.source, type=row.type, time=row.time,
        datacontenttype=row.datacontenttype, dataschema=row.dataschema, subject=row.subject,
        data=bytes(row.data) if row.data is not None else None, key=row.key, target=row.target,
        destination=row.destination, extensions=row.extensions,
    )


_TABLE = OutboxEvent._meta.db_table

# One statement claims the due key heads (and expired claims): an UPDATE of the rows a locking
# sub-select picked, returning them. Raw SQL: the ORM cannot write UPDATE ... RETURNING, and
# compiling the nested query cost more than running it. The conditions are written without a
# redundant OR so that PostgreSQL estimates the backlog right and walks ``outbox_claimable`` in
# id order, stopping at the limit (a million published rows are not in that index).
_HEADS = f"""
UPDATE {_TABLE} SET status = 'processing', claimed_by = %s, claimed_until = %s
WHERE id IN (
    SELECT o.id FROM {_TABLE} o
    WHERE o.status IN ('pending', 'retry', 'processing')
      AND (o.next_attempt_at <= %s OR o.status = 'processing')
      AND (o.status <> 'processing' OR o.claimed_until < %s)
      {{skip_targets}}
      AND NOT EXISTS (
          SELECT 1 FROM {_TABLE} e WHERE e.key = o.key AND e.id < o.id AND e.status NOT IN ({{settled}}))
    ORDER BY o.id LIMIT %s {{lock}}
) RETURNING *
"""

# The open events of the claimed heads' keys, in id order, locked: which of them come along is
# decided in Python (a NOT EXISTS per candidate would be quadratic in a key's backlog).
_QUEUED = f"""
SELECT id, key, status, claimed_until FROM {_TABLE}
WHERE key IN ({{keys}}) AND id > %s AND status NOT IN ({{settled}})
ORDER BY id LIMIT %s {{lock}}
"""


def _moment(value: Any) -> datetime:
    """A timestamp read by a raw cursor (SQLite gives naive UTC, or text)."""
    moment = parse_datetime(value) if isinstance(value, str) else value
    assert isinstance(moment, datetime), value
    return moment if timezone.is_aware(moment) else moment.replace(tzinfo=UTC)


def _run_behind(rows: list[tuple[int, str, str, Any]], holder_heads: set[str], expired: datetime) -> list[int]:
    """Per key, the events right behind its head that can come along: pending ones, or claims that
    expired, up to the first that cannot (a retry behind a dead letter put back in the queue, say);
    the events after that one wait for it. Not skip-locked: a gap would break the key's order."""
    stopped: set[str] = set()
    taken: list[int] = []
    for pk, key, status, claimed_until in rows:
        if key in stopped or key not in holder_heads:
            continue
        if status == Status.PENDING or (status == Status.PROCESSING and _moment(claimed_until) < expired):
            taken.append(pk)
        else:
            stopped.add(key)
    return taken


def _settled_statuses() -> str:
    """Statuses that no longer hold back a key's later events."""
    return "'published'" if settings.OUTBOX_FAILED_BLOCKS_KEY else "'published', 'failed'"


def claim(holder: str, limit: int, *, skip_targets: Iterable[str] = (), now: datetime | None = None) -> list[Outbound]:
    """Claim up to ``limit`` events for ``holder``, in id order: key heads that are due, plus the
    successors of those heads."""
    now = now or timezone.now()
    ops = connection.ops
    at = ops.adapt_datetimefield_value(now)
    until = ops.adapt_datetimefield_value(now + timedelta(seconds=settings.OUTBOX_CLAIM_TTL_S))
    skipped = list(skip_targets)
    heads_sql = _HEADS.format(
        skip_targets=f"AND o.target NOT IN ({', '.join(['%s'] * len(skipped))})" if skipped else "",
        settled=_settled_statuses(),
        lock="FOR UPDATE SKIP LOCKED" if connection.features.has_select_for_update_skip_locked else "",
    )
    with transaction.atomic():
        if connection.vendor == "postgresql":
            # Walk outbox_claimable in id order and stop at the limit, whatever the statistics say:
            # right after a burst they are stale, and a sort of the whole backlog (with its anti-join
            # per row) costs tens of milliseconds per claim.
            with connection.cursor() as cursor:
                cursor.execute("SET LOCAL enable_sort = off; SET LOCAL enable_bitmapscan = off")
        rows = list(OutboxEvent.objects.raw(heads_sql, [holder, until, at, at, *skipped, limit]))
        head_of = {r.key: r.pk for r in rows if r.key is not None}
        room = limit - len(rows)
        if head_of and room > 0:
            queued_sql = _QUEUED.format(
                keys=", ".join(["%s"] * len(head_of)), settled=_settled_statuses(),
                lock="FOR UPDATE" if connection.features.has_select_for_update else "",
            )
            with connection.cursor() as cursor:
                if connection.vendor == "postgresql":
                    # This read wants the (key, id) index and a sort of its few rows.
                    cursor.execute("RESET enable_sort; RESET enable_bitmapscan")
                # Twice the room: events behind a key's first blocker are read and left.
                cursor.execute(queued_sql, [*head_of, min(head_of.values()), 2 * room])
                queued = [row for row in cursor.fetchall() if row[0] > head_of[row[1]]]
            taken = _run_behind(queued, set(head_of), now)[:room]
            if taken:
                rows += OutboxEvent.objects.raw(
                    f"UPDATE {_TABLE} SET status = 'processing', claimed_by = %s, claimed_until = %s "
                    f"WHERE id IN ({', '.join(['%s'] * len(taken))}) RETURNING *",
                    [holder, until, *taken],
                )
    rows.sort(key=lambda r: r.pk)
    return [_outbound(r) for r in rows]


def settle(holder: str, settlement: Settlement, *, now: datetime | None = None) -> int:
    """Record a batch's outcome; rows another relay has taken over since are left alone.
    Returns how many rows were no longer this holder's."""
    now = now or timezone.now()
    mine = OutboxEvent.objects.filter(claimed_by=holder, status=Status.PROCESSING)
    lost = 0
    with transaction.atomic():
        if settlement.published:
            lost += len(settlement.published) - mine.filter(pk__in=settlement.published).update(
                # claimed_by stays: on a published event it names the relay that published it.
                status=Status.PUBLISHED, published_at=now, claimed_until=None, last_error=""
            )
        if settlement.failed:
            errors = dict(settlement.failed)
            held = dict(mine.filter(pk__in=list(errors)).values_list("pk", "attempts"))
            lost += len(errors) - len(held)
            for pk, attempts in held.items():
                status, next_at = after_failure(
                    attempts + 1, now, max_attempts=settings.OUTBOX_MAX_ATTEMPTS,
                    base_s=settings.OUTBOX_BACKOFF_BASE_S, max_s=settings.OUTBOX_BACKOFF_MAX_S,
                )
                OutboxEvent.objects.filter(pk=pk).update(
                    status=status, attempts=attempts + 1, next_attempt_at=next_at,
                    last_error=errors[pk][:4000], claimed_by=None, claimed_until=None,
                )
                if status == Status.FAILED:
                    logger.warning("outbox event %s failed after %d attempts: %s", pk, attempts + 1, errors[pk])
        by_reason: dict[str, list[int]] = {}
        for pk, reason in settlement.released:
            by_reason.setdefault(reason, []).append(pk)
        for reason, pks in by_reason.items():
            lost += len(pks) - mine.filter(pk__in=pks).update(
                status=Case(When(attempts__gt=0, then=Value(Status.RETRY)), default=Value(Status.PENDING)),
                claimed_by=None, claimed_until=None, last_error=reason[:4000],
            )
    if lost:
        logger.warning("outbox relay %s lost its claim on %d events (claim expired and taken over)", holder, lost)
    return lost


def renew(holder: str, *, now: datetime | None = None) -> int:
    """Extend ``holder``'s claims by another ``OUTBOX_CLAIM_TTL_S`` (a long batch is still being
    published); how many."""
    until = (now or timezone.now()) + timedelta(seconds=settings.OUTBOX_CLAIM_TTL_S)
    return OutboxEvent.objects.filter(claimed_by=holder, status=Status.PROCESSING).update(claimed_until=until)


def next_due(*, skip_targets: Iterable[str] = (), now: datetime | None = None) -> datetime | None:
    """When the earliest waiting retry becomes due (None: no retry waits). Retries already due
    were not claimable (an earlier event of their key is open): the relay that settles that one
    goes on with them, so they are no reason to wake."""
    result: datetime | None = (
        OutboxEvent.objects.filter(status=Status.RETRY, next_attempt_at__gt=now or timezone.now())
        .exclude(target__in=list(skip_targets))
        .aggregate(due=Min("next_attempt_at"))["due"]
    )
    return result


def prune(*, now: datetime | None = None) -> int:
    """Delete events published more than ``OUTBOX_RETENTION_S`` ago, in chunks; how many."""
    cutoff = (now or timezone.now()) - timedelta(seconds=settings.OUTBOX_RETENTION_S)
    removed = 0
    while True:
        pks = list(
            OutboxEvent.objects.filter(status=Status.PUBLISHED, published_at__lt=cutoff)
            .values_list("pk", flat=True)[:PRUNE_CHUNK_ROWS]
        )
        if not pks:
            return removed
        removed += OutboxEvent.objects.filter(pk__in=pks).delete()[0]
        if len(pks) < PRUNE_CHUNK_ROWS:
            return removed


def retry(events: Q | None = None, *, now: datetime | None = None) -> int:
    """Put dead letters (and waiting retries) matching ``events`` back in the queue at once, with
    a fresh set of attempts; how many. Relays are woken when the transaction commits."""
    selected = OutboxEvent.objects.filter(status__in=[Status.FAILED, Status.RETRY])
    if events is not None:
        selected = selected.filter(events)
    with transaction.atomic():
        count = selected.update(status=Status.PENDING, attempts=0, next_attempt_at=now or timezone.now())
        if count:
            wakeup.notify_relays()
    return count


def stats(*, now: datetime | None = None) -> dict[str, float]:
    """Events per status, and the age of the oldest unpublished one (the relay's lag)."""
    counts = {
        row["status"]: row["n"] for row in OutboxEvent.objects.order_by().values("status").annotate(n=Count("id"))
    }
    oldest = OutboxEvent.objects.filter(
        status__in=[Status.PENDING, Status.RETRY, Status.PROCESSING]
    ).aggregate(oldest=Min("created_at"))["oldest"]
    result: dict[str, float] = {status: float(counts.get(status, 0)) for status in Status.values}
    result["lag_s"] = ((now or timezone.now()) - oldest).total_seconds() if oldest else 0.0
    return result

