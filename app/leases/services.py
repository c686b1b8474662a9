"""Acquire, renew and release leases with one conditional statement each (atomic on SQLite and
PostgreSQL). A lease's row exists while it is held: release deletes it, and the garbage-collection
relay deletes rows that expired long ago (their holder died). No row and an expired row mean the same:
free."""

from __future__ import annotations

from datetime import datetime, timedelta

from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from app.leases.models import Lease

# An expired row is kept this long (the admin shows who held it last), then collected.
EXPIRED_KEPT = timedelta(minutes=10)


def acquire(name: str, holder: str, ttl_s: float, now: datetime | None = None) -> bool:
    """Take or renew the lease; True when ``holder`` holds it for the next ``ttl_s`` seconds."""
    now = now or timezone.now()
    expires_at = now + timedelta(seconds=ttl_s)
    taken = (
        Lease.objects.filter(name=name)
        .filter(Q(holder=holder) | Q(expires_at__lte=now))
        .update(holder=holder, expires_at=expires_at)
    )
    if taken:
        return True
    if Lease.objects.filter(name=name).exists():
        return False  # held by another
    try:
        with transaction.atomic():
            Lease.objects.create(name=name, holder=holder, expires_at=expires_at)
    except IntegrityError:
        return False  # another process created it first: it holds the lease
    return True


def release(name: str, holder: str) -> None:
    """Give the lease up now (last consumer gone, clean shutdown): its row goes, so a peer takes
    over at its next attempt. Only the holder's own row: one taken over meanwhile stays."""
    rows = Lease.objects.filter(name=name, holder=holder)
    rows._raw_delete(rows.db)  # one DELETE with its condition (a collecting delete selects first)


def collect_expired(now: datetime | None = None) -> int:
    """Delete leases that expired more than ``EXPIRED_KEPT`` ago (a holder that died, or one
    renewed after its owner was deleted); returns how many. Conditional: one renewed or taken
    meanwhile is no longer expired, and stays."""
    rows = Lease.objects.filter(expires_at__lt=(now or timezone.now()) - EXPIRED_KEPT)
    deleted: int = rows._raw_delete(rows.db)
    return deleted


def holder_of(name: str, now: datetime | None = None) -> str | None:
    lease = Lease.objects.filter(name=name, expires_at__gte=now or timezone.now()).first()
    return lease.holder or None if lease else None
