"""Leases: one holder at a time, renewal, takeover after expiry, release on shutdown."""

from __future__ import annotations

from datetime import timedelta

from django.utils import timezone

from app.leases.services import acquire, holder_of, release
from tests.protocol import unique


def test_first_comer_holds():
    """The first process to ask gets the lease; a second one does not."""
    name = unique("lease")
    assert acquire(name, "a", 10)
    assert not acquire(name, "b", 10)
    assert holder_of(name) == "a"


def test_holder_renews():
    """The holder may renew before expiry."""
    name = unique("lease")
    assert acquire(name, "a", 10)
    assert acquire(name, "a", 10)


def test_takeover_after_expiry():
    """Once the lease has expired another process takes it."""
    name, now = unique("lease"), timezone.now()
    assert acquire(name, "a", 1, now=now)
    assert not acquire(name, "b", 1, now=now + timedelta(seconds=0.5))
    assert acquire(name, "b", 1, now=now + timedelta(seconds=1.5))
    assert holder_of(name, now=now + timedelta(seconds=1.6)) == "b"


def test_release_hands_over_at_once():
    """A released lease is free for the next process immediately."""
    name = unique("lease")
    assert acquire(name, "a", 60)
    release(name, "a")
    assert acquire(name, "b", 60)
