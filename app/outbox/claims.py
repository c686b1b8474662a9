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
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Case, Count, Exists, Min, OuterRef, Q, Value, When
from django.utils import timezone

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


def claim(holder: str, limit: int, *, skip_targets: Iterable[str] = (), now: datetime | None = None) -> list[Outbound]:
    """Claim up to ``limit`` events for ``holder``, in id order: key heads that are due, plus the
    successors of those heads."""
    now = now or timezone.now()
    open_earlier = OutboxEvent.objects.filter(key=OuterRef("key"), id__lt=OuterRef("id")).exclude(
        status=Status.PUBLISHED
    )
    if not settings.OUTBOX_FAILED_BLOCKS_KEY:
        open_earlier = open_earlier.exclude(status=Status.FAILED)
    due = Q(status__in=[Status.PENDING, Status.RETRY], next_attempt_at__lte=now) | Q(
        status=Status.PROCESSING, claimed_until__lt=now
    )
    with transaction.atomic():
        heads = list(
            OutboxEvent.objects.filter(status__in=[Status.PENDING, Status.RETRY, Status.PROCESSING])
            .filter(due)
            .exclude(target__in=list(skip_targets))
            .exclude(Exists(open_earlier))
            .order_by("id")
            .select_for_update(skip_locked=True)[:limit]
        )
        rows = heads + _successors(heads, limit - len(heads), now)
        if not rows:
            return []
        OutboxEvent.objects.filter(pk__in=[r.pk for r in rows]).update(
            status=Status.PROCESSING, claimed_by=holder,
            claimed_until=now + timedelta(seconds=settings.OUTBOX_CLAIM_TTL_S),
        )
    rows.sort(key=lambda r: r.pk)
    return [_outbound(r) for r in rows]


def _successors(heads: list[OutboxEvent], room: int, now: datetime) -> list[OutboxEvent]:
    """The open events queued behind the claimed heads (nobody else can claim them: each has an
    open earlier event). Not skip-locked: a gap would break the key's order."""
    head_of = {h.key: h.pk for h in heads if h.key is not None}
    if not head_of or room <= 0:
        return []
    claimable = Q(status=Status.PENDING) | Q(status=Status.PROCESSING, claimed_until__lt=now)
    # An open event behind the head that cannot come along (a retry, say, behind a dead letter
    # put back in the queue) ends its key's run: the events after it wait for it.
    in_the_way = (
        OutboxEvent.objects.filter(key=OuterRef("key"), id__lt=OuterRef("id"))
        .exclude(pk__in=list(head_of.values()))
        .exclude(status=Status.PUBLISHED)
        .exclude(claimable)
    )
    if not settings.OUTBOX_FAILED_BLOCKS_KEY:
        in_the_way = in_the_way.exclude(status=Status.FAILED)
    candidates = (
        OutboxEvent.objects.filter(key__in=list(head_of), id__gt=min(head_of.values()))
        .filter(claimable)
        .exclude(pk__in=[h.pk for h in heads])
        .exclude(Exists(in_the_way))
        .order_by("id")
        .select_for_update()[:room]
    )
    return [row for row in candidates if row.key is not None and row.pk > head_of[row.key]]


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


def next_due(*, skip_targets: Iterable[str] = ()) -> datetime | None:
    """When the earliest waiting retry becomes due (None: no retry waits)."""
    result: datetime | None = (
        OutboxEvent.objects.filter(status=Status.RETRY)
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

