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
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Case, Count, Min, Q, Value, When
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from app import codec
from app.outbox import wakeup
from app.outbox.cloudevents import Outbound
from app.outbox.models import OutboxEvent, Status
from app.outbox.retries import after_failure, backoff_s

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
    # Attempted and nacked (the service's trouble, not the event's): back in the queue after a
    # back-off, no attempt counted.
    deferred: list[tuple[int, str]] = field(default_factory=list)

    def settled(self) -> set[int]:
        return {
            *self.published, *(pk for pk, _ in self.failed), *(pk for pk, _ in self.released),
            *(pk for pk, _ in self.deferred),
        }

    def extend(self, other: Settlement) -> None:
        self.published += other.published
        self.failed += other.failed
        self.released += other.released
        self.deferred += other.deferred

    def release_rest(self, events: Iterable[Outbound], reason: str) -> None:
        done = self.settled()
        self.released.extend((e.pk, reason) for e in events if e.pk not in done)


# What the targets need, in Outbound's order: read by a plain cursor, because building a model
# per row (and converting its four timestamps) cost more than the claim's SQL.
_COLUMNS = "id, event_id, source, type, time, datacontenttype, dataschema, subject, data, key, target, " \
    "destination, extensions"


def _outbound(row: tuple[Any, ...]) -> Outbound:
    pk, event_id, source, type, time, content_type, schema, subject, data, key, target, destination, ext = row
    # JSON text on both backends (Django reads jsonb as text and decodes it in the field).
    extensions = codec.loads(ext) if isinstance(ext, str | bytes) else ext
    return Outbound(
        pk=pk, id=event_id, source=source, type=type, time=_moment(time), datacontenttype=content_type,
        dataschema=schema, subject=subject, data=bytes(data) if data is not None else None, key=key,
        target=target, destination=destination, extensions=extensions,
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
          SELECT 1 FROM {_TABLE} e WHERE e.key = o.key AND e.id < o.id AND e.status NOT IN ({{settled}})
            {{open_by_key}} {{not_own}})
    ORDER BY o.id LIMIT %s {{lock}}
) RETURNING {_COLUMNS}
"""

# The open events of the claimed heads' keys, in id order, locked: which of them come along is
# decided in Python (a NOT EXISTS per candidate would be quadratic in a key's backlog).
_QUEUED = f"""
SELECT id, key, status, claimed_until FROM {_TABLE}
WHERE key IN ({{keys}}) AND id > %s AND status NOT IN ({{settled}}) {{open_by_key}}
ORDER BY id LIMIT %s {{lock}}
"""


def _open_by_key(alias: str = "") -> str:
    """The ``outbox_open_by_key`` index's condition, repeated on SQLite, whose planner uses a partial
    index only when the query states its condition (it infers nothing from ``NOT IN``): without it each
    claim walked every earlier row, a cost growing with the published ones. PostgreSQL proves the
    implication itself; the redundant term would only skew its estimates."""
    return f"AND NOT ({alias}status = 'published')" if connection.vendor == "sqlite" else ""


_PRUNABLE = f"SELECT id FROM {_TABLE} {{indexed_by}} WHERE status = 'published' AND published_at < %s LIMIT %s"


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


def claim(
    holder: str, limit: int, *, skip_targets: Iterable[str] = (), now: datetime | None = None,
    behind_own: bool = False,
) -> list[Outbound]:
    """Claim up to ``limit`` events for ``holder``, in id order: key heads that are due, plus the
    successors of those heads.

    ``behind_own``: an event whose key's earlier open events are all being published by ``holder``
    counts as a head too. Only for a holder that publishes them after those (the relay chains a
    key's batches) and gives up its name when it loses track of what it holds."""
    with transaction.atomic():
        return _claim(holder, limit, skip_targets, now or timezone.now(), behind_own)[0]


def _claim(
    holder: str, limit: int, skip_targets: Iterable[str], now: datetime, behind_own: bool,
    published: Sequence[int] = (), successors: bool = True,
) -> tuple[list[Outbound], int]:
    """The claim, after marking ``published`` published (in its first round trip): the events, and
    how many of ``published`` were no longer this holder's. Without ``successors``, heads only."""
    ops = connection.ops
    at = ops.adapt_datetimefield_value(now)
    until = ops.adapt_datetimefield_value(now + timedelta(seconds=settings.OUTBOX_CLAIM_TTL_S))
    skipped = list(skip_targets)
    heads_sql = _HEADS.format(
        skip_targets=f"AND o.target NOT IN ({', '.join(['%s'] * len(skipped))})" if skipped else "",
        settled=_settled_statuses(),
        lock="FOR UPDATE SKIP LOCKED" if connection.features.has_select_for_update_skip_locked else "",
        not_own="AND NOT (e.status = 'processing' AND e.claimed_by = %s)" if behind_own else "",
        open_by_key=_open_by_key("e."),
    )
    first: list[tuple[str, list[Any]]] = []
    if published:
        first.append((
            f"UPDATE {_TABLE} SET status = 'published', published_at = %s, claimed_until = NULL, last_error = '' "
            f"WHERE claimed_by = %s AND status = 'processing' AND id IN ({', '.join(['%s'] * len(published))})",
            [at, holder, *published],
        ))
    postgres = connection.vendor == "postgresql"
    if postgres:
        # Walk outbox_claimable in id order and stop at the limit, whatever the statistics say:
        # right after a burst they are stale, and a sort of the whole backlog (with its anti-join
        # per row) costs tens of milliseconds per claim. No wait for the WAL flush: a claim or a
        # settlement lost with PostgreSQL's last moments only means publishing those events again.
        first += [("SET LOCAL synchronous_commit = off", []), ("SET LOCAL enable_sort = off", []),
                  ("SET LOCAL enable_bitmapscan = off", [])]
    own = [holder] if behind_own else []
    first.append((heads_sql, [holder, until, at, at, *skipped, *own, limit]))
    with connection.cursor() as cursor:
        results = _together(cursor, first)
        lost = len(published) - results[0][0] if published else 0
        rows = results[-1][1]
        head_of = {row[9]: row[0] for row in rows if row[9] is not None}
        room = limit - len(rows)
        if head_of and room > 0 and successors:
            queued_sql = _QUEUED.format(
                keys=", ".join(["%s"] * len(head_of)), settled=_settled_statuses(), open_by_key=_open_by_key(),
                lock="FOR UPDATE" if connection.features.has_select_for_update else "",
            )
            # Twice the room: events behind a key's first blocker are read and left.
            second = [(queued_sql, [*head_of, min(head_of.values()), 2 * room])]
            if postgres:
                # This read wants the (key, id) index and a sort of its few rows.
                second[:0] = [("RESET enable_sort", []), ("RESET enable_bitmapscan", [])]
            queued = [row for row in _together(cursor, second)[-1][1] if row[0] > head_of[row[1]]]
            taken = _run_behind(queued, set(head_of), now)[:room]
            if taken:
                cursor.execute(
                    f"UPDATE {_TABLE} SET status = 'processing', claimed_by = %s, claimed_until = %s "
                    f"WHERE id IN ({', '.join(['%s'] * len(taken))}) RETURNING {_COLUMNS}",
                    [holder, until, *taken],
                )
                rows += cursor.fetchall()
    rows.sort(key=lambda row: row[0])
    return [_outbound(row) for row in rows], lost


def _together(cursor: Any, statements: list[tuple[str, list[Any]]]) -> list[tuple[int, list[tuple[Any, ...]]]]:
    """Run ``statements`` (one statement each) in order: each one's row count and rows. On
    PostgreSQL in one round trip (client-side binding sends them as one simple query), elsewhere
    one by one."""
    if connection.vendor == "postgresql" and not connection.settings_dict["OPTIONS"].get("server_side_binding"):
        cursor.execute("; ".join(sql for sql, _ in statements), [p for _, params in statements for p in params])
        results = []
        while True:
            rows = cursor.fetchall() if cursor.description else []
            results.append((cursor.rowcount, rows))
            if not cursor.nextset():
                return results
    results = []
    for sql, params in statements:
        cursor.execute(sql, params)
        rows = cursor.fetchall() if cursor.description else []
        results.append((cursor.rowcount, rows))
    return results


def settle(holder: str, settlement: Settlement, *, now: datetime | None = None) -> int:
    """Record a batch's outcome; rows another relay has taken over since are left alone.
    Returns how many rows were no longer this holder's."""
    with transaction.atomic():
        lost = _settle(holder, settlement, now or timezone.now())
    if lost:
        logger.warning("outbox relay %s lost its claim on %d events (claim expired and taken over)", holder, lost)
    return lost


def settle_and_claim(
    holder: str, settlement: Settlement, limit: int, *, skip_targets: Iterable[str] = (), due_if_none: bool = False,
    successors: bool = True, now: datetime | None = None,
) -> tuple[list[Outbound], datetime | None]:
    """``settle`` the finished batches and ``claim`` (``behind_own``) up to ``limit`` more, in one
    transaction, the published ones marked in the claim's first round trip. With ``due_if_none``
    and nothing claimed, also when the next retry is due. Without ``successors``, key heads only
    (one round trip less; the holder's next claim takes the events behind them)."""
    now = now or timezone.now()
    events: list[Outbound] = []
    with transaction.atomic():
        if limit > 0:
            rest = Settlement(failed=settlement.failed, released=settlement.released, deferred=settlement.deferred)
            lost = _settle(holder, rest, now) if rest.settled() else 0
            events, lost_published = _claim(
                holder, limit, skip_targets, now, True, settlement.published, successors=successors
            )
            lost += lost_published
        else:
            lost = _settle(holder, settlement, now)
        # Inside the transaction: failing after the commit, it would leave the claimed events
        # 'processing' under a name the relay goes on claiming behind (``behind_own``).
        due = next_due(skip_targets=skip_targets, now=now) if due_if_none and not events else None
    if lost:
        logger.warning("outbox relay %s lost its claim on %d events (claim expired and taken over)", holder, lost)
    return events, due


def _settle(holder: str, settlement: Settlement, now: datetime) -> int:
    mine = OutboxEvent.objects.filter(claimed_by=holder, status=Status.PROCESSING)
    lost = 0
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
    for reason, pks in _by_reason(settlement.released).items():
        lost += len(pks) - mine.filter(pk__in=pks).update(
            status=Case(When(attempts__gt=0, then=Value(Status.RETRY)), default=Value(Status.PENDING)),
            claimed_by=None, claimed_until=None, last_error=reason[:4000],
        )
    for reason, pks in _by_reason(settlement.deferred).items():
        # A retry (so relays wake for it) with its attempts as they were: a broker's refusal to
        # take messages for a while must not dead-letter them.
        delay = backoff_s(1, settings.OUTBOX_BACKOFF_BASE_S, settings.OUTBOX_BACKOFF_MAX_S)
        lost += len(pks) - mine.filter(pk__in=pks).update(
            status=Status.RETRY, next_attempt_at=now + timedelta(seconds=delay),
            claimed_by=None, claimed_until=None, last_error=reason[:4000],
        )
    return lost


def _by_reason(outcomes: list[tuple[int, str]]) -> dict[str, list[int]]:
    by_reason: dict[str, list[int]] = {}
    for pk, reason in outcomes:
        by_reason.setdefault(reason, []).append(pk)
    return by_reason


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
    cutoff = connection.ops.adapt_datetimefield_value(
        (now or timezone.now()) - timedelta(seconds=settings.OUTBOX_RETENTION_S)
    )
    # SQLite's planner, which has no statistics, would pick outbox_status's equality on the status
    # over the published_at range and read every published event still retained (a week of them by
    # default) on each pass, to find none due.
    sql = _PRUNABLE.format(indexed_by="INDEXED BY outbox_prunable" if connection.vendor == "sqlite" else "")
    removed = 0
    while True:
        with connection.cursor() as cursor:
            cursor.execute(sql, [cutoff, PRUNE_CHUNK_ROWS])
            pks = [pk for pk, in cursor.fetchall()]
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

