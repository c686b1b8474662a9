"""Leases: one holder at a time, renewal, takeover after expiry, release on shutdown, no row left
behind; how long a holder may act on its lease by its own clock."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from app.leases.models import Lease
from app.leases.services import EXPIRED_KEPT, acquire, collect_expired, holder_of, release
from app.leases.terms import lease_deadline, may_act
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


def test_release_deletes_the_row():
    """A released lease leaves no row behind."""
    name = unique("lease")
    assert acquire(name, "a", 60)
    release(name, "a")
    assert not Lease.objects.filter(name=name).exists()


def test_release_by_another_keeps_the_row():
    """Only the holder's release deletes: a lease taken over meanwhile stays with its new holder."""
    name, now = unique("lease"), timezone.now()
    assert acquire(name, "a", 1, now=now - timedelta(seconds=2))
    assert acquire(name, "b", 60)
    release(name, "a")
    assert holder_of(name) == "b"


def test_collects_only_leases_expired_long_ago():
    """The collection deletes leases expired more than EXPIRED_KEPT ago, not recent or live ones."""
    long_ago, recent, live = unique("lease"), unique("lease"), unique("lease")
    now = timezone.now()
    assert acquire(long_ago, "a", 1, now=now - EXPIRED_KEPT - timedelta(seconds=5))
    assert acquire(recent, "a", 1, now=now - timedelta(seconds=5))
    assert acquire(live, "a", 60)
    assert collect_expired(now) >= 1
    assert set(Lease.objects.filter(name__in=[long_ago, recent, live]).values_list("name", flat=True)) == {
        recent, live}


def test_collected_lease_taken_again():
    """A lease whose row was collected is free: the next process takes it."""
    name, now = unique("lease"), timezone.now()
    assert acquire(name, "a", 1, now=now - EXPIRED_KEPT - timedelta(seconds=5))
    collect_expired(now)
    assert acquire(name, "b", 60)
    assert not acquire(name, "a", 60)


@pytest.mark.parametrize(("started", "now", "term", "acts"), [
    (100.0, 100.0, 10.0, True),   # just renewed
    (100.0, 107.9, 10.0, True),   # inside the term less its safety margin
    (100.0, 108.0, 10.0, False),  # the margin: the row still says held, the holder stops
    (100.0, 110.0, 10.0, False),  # the term is over: another process may hold it
    (100.0, 109.0, 3.0, False),   # a pause longer than the lease (SIGSTOP)
    (100.0, 101.5, 3.0, True),
])
def test_holder_acts_until_term_less_margin(started: float, now: float, term: float, acts: bool):
    """A holder acts until its last successful renewal's start plus the term less a fifth of it."""
    assert may_act(now, lease_deadline(started, term)) is acts
