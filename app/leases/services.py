"""Acquire, renew and release leases with one conditional UPDATE (atomic on SQLite and PostgreSQL)."""

from __future__ import annotations

from datetime import datetime, timedelta

from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from app.leases.models import Lease


def acquire(name: str, holder: str, ttl_s: float, now: datetime | None = None) -> bool:
    """Take or renew the lease; True when ``holder`` holds it for the next ``ttl_s`` seconds."""
    now = now or timezone.now()
    if not Lease.objects.filter(name=name).exists():
        try:
            with transaction.atomic():
                Lease.objects.create(name=name, holder="", expires_at=now)
        except IntegrityError:
            pass  # another process created it first; the UPDATE below decides
    taken = (
        Lease.objects.filter(name=name)
        .filter(Q(holder=holder) | Q(expires_at__lte=now))
        .update(holder=holder, expires_at=now + timedelta(seconds=ttl_s))
    )
    return taken == 1


def release(name: str, holder: str) -> None:
    """Give the lease up now (clean shutdown), so a peer takes over at its next attempt."""
    Lease.objects.filter(name=name, holder=holder).update(holder="", expires_at=timezone.now())


def holder_of(name: str, now: datetime | None = None) -> str | None:
    lease = Lease.objects.filter(name=name, expires_at__gte=now or timezone.now()).first()
    return lease.holder or None if lease else None
