"""Sequence decisions of consumer connections (no server)."""

import pytest

from app.broker.delivery import has_gap, is_duplicate, needs_resync


@pytest.mark.parametrize(("last", "seq", "dup"), [(5, 5, True), (5, 4, True), (5, 6, False), (5, None, False)])
def test_is_duplicate(last, seq, dup):
    """Stored messages at or below the last one sent are duplicates; unstored ones never are."""
    assert is_duplicate(last, seq) is dup


@pytest.mark.parametrize(("last", "seq", "gap"), [(5, 6, False), (5, 8, True), (0, 8, False), (5, None, False)])
def test_has_gap(last, seq, gap):
    """A jump past last+1 is a gap; before anything was sent there is nothing to compare with."""
    assert has_gap(last, seq) is gap


@pytest.mark.parametrize(
    ("last", "db", "before", "resync"),
    [
        (5, 7, None, False),  # first sighting: maybe in flight
        (5, 7, 7, True),  # still behind what the database had last time
        (7, 9, 7, False),  # caught up with last time's; the rest may be in flight
        (5, 5, None, False),
    ],
)
def test_needs_resync(last, db, before, resync):
    """Only a lag that outlives one check interval triggers a repair from the database."""
    assert needs_resync(last, db, before) is resync

