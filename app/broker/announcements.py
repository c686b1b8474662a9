"""Announcements: changes to topics, rights and credentials that every server process applies.

A change is written as an ``Announcement`` row in the transaction that makes it, by whichever
process makes it; each server reads the new rows every ``ANNOUNCEMENT_POLL_INTERVAL_S`` (on its
own database thread) and drops its cached views, re-checks open connections or closes revoked
sockets. The server that made a change applies it at once and skips its own rows; with Redis the
backplane carries it to the other servers faster still. Applying a change twice is harmless.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol, TypeVar

from django.db import connection
from django.db.models import Q, QuerySet
from django.utils import timezone

from app.broker.models import Announcement

# Marks the rows of changes this process applied itself.
PROCESS_ID = uuid.uuid4().hex
# Ids skipped by the cursor that are watched for a late commit; a larger gap is not tracked id by id.
MAX_HOLES = 1000
# Ids just below where a starting server finds the feed's end that are watched for a late commit
# (a transaction that took its id before a later one committed). Half the holes: gaps seen later
# are still tracked while these are watched.
START_HOLES = MAX_HOLES // 2


class Numbered(Protocol):
    """A row of a feed read by id (an announcement, an outbox event)."""

    @property
    def id(self) -> int: ...


Row = TypeVar("Row", bound=Numbered)


@dataclass(frozen=True, slots=True)
class Change:
    id: int
    kind: str
    slug: str
    exists: bool
    response: bool
    token_id: int | None
    principal: str
    origin: str


def record_rights(slug: str, *, exists: bool, response: bool, origin: str) -> None:
    Announcement.objects.create(
        kind=Announcement.RIGHTS, slug=slug[:200], exists=exists, response=response, origin=origin
    )


def record_revoked(token_id: int | None, principal: str | None, *, origin: str) -> None:
    Announcement.objects.create(
        kind=Announcement.REVOKED, token_id=token_id, principal=principal or "", origin=origin
    )


def newest_ids() -> list[int]:
    """The ids of the newest rows, enough to tell which of the ``START_HOLES`` ids below the last
    one are not visible (``FeedCursor.at_end``)."""
    return list(Announcement.objects.order_by("-id").values_list("id", flat=True)[: START_HOLES + 1])


Rows = TypeVar("Rows", bound=QuerySet[Any, Any])


def past_cursor(rows: Rows, after: int, holes: list[int]) -> Rows:
    """``rows`` (unordered) with an id beyond ``after`` or in ``holes``, by id: what a ``FeedCursor``
    reads. On SQLite a UNION of the two: its planner reads an OR of a rowid range and a rowid list
    by walking the whole table (every row up to the cursor, each poll), while each part alone is a
    lookup. PostgreSQL reads the OR through its primary key as it is."""
    if not holes:
        return rows.filter(id__gt=after).order_by("id")
    if connection.vendor == "sqlite":
        return rows.filter(id__gt=after).union(rows.filter(id__in=holes)).order_by("id")
    return rows.filter(Q(id__gt=after) | Q(id__in=holes)).order_by("id")


def read(after: int, holes: list[int]) -> list[Change]:
    """Rows beyond ``after``, and the rows of ``holes`` that have committed meanwhile."""
    rows = Announcement.objects.order_by().values_list(
        "id", "kind", "slug", "exists", "response", "token_id", "principal", "origin"
    )
    return [Change(*row) for row in past_cursor(rows, after, holes)]


def prune(older_than: datetime | None = None, *, retention_s: float) -> int:
    cutoff = older_than or timezone.now() - timedelta(seconds=retention_s)
    return int(Announcement.objects.filter(created__lt=cutoff).delete()[0])


class FeedCursor:
    """Where a server is in a feed read by id: the announcements, the outbox for the work-request feed
    (app/work/changes.py). No I/O.

    Ids are handed out at insert and rows become visible at commit, so on PostgreSQL a row may
    appear after one with a higher id was read. Skipped ids are kept as holes and asked for again
    until they appear or ``hole_ttl_s`` passes (a rolled-back change never appears).
    """

    def __init__(self, after: int, hole_ttl_s: float) -> None:
        self.after = after
        self.hole_ttl_s = hole_ttl_s
        self.holes: dict[int, float] = {}

    @classmethod
    def at_end(cls, newest: list[int], now: float, hole_ttl_s: float) -> FeedCursor:
        """A cursor after the newest visible row (``newest_ids``). The ids within ``START_HOLES``
        below it that are not visible are holes: a change whose transaction took its id before a
        later one committed appears only now, and its topic may be missing from the directory
        loaded meanwhile (most of them are rolled back or pruned, and are forgotten after the TTL)."""
        cursor = cls(max(newest, default=0), hole_ttl_s)
        visible = set(newest)
        below = range(max(cursor.after - START_HOLES, 0) + 1, cursor.after)
        cursor.holes = {hole: now for hole in below if hole not in visible}
        return cursor

    def take(self, rows: list[Row], now: float) -> list[Row]:
        """The rows not seen before, in id order; advances the cursor."""
        new: list[Row] = []
        for row in sorted(rows, key=lambda r: r.id):
            if self.holes.pop(row.id, None) is not None:
                new.append(row)
            elif row.id > self.after:
                if row.id - self.after - 1 <= MAX_HOLES - len(self.holes):
                    self.holes.update(dict.fromkeys(range(self.after + 1, row.id), now))
                self.after = row.id
                new.append(row)
        self.holes = {hole: since for hole, since in self.holes.items() if now - since < self.hole_ttl_s}
        return new
