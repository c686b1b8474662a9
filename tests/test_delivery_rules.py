"""Sequence and replay-page decisions of consumer connections (no server)."""

import pytest

from app.broker.delivery import FIRST_REPLAY_PAGE, has_gap, is_duplicate, needs_resync, replay_page_size


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



@pytest.mark.parametrize(
    ("most", "budget", "average", "size"),
    [
        (500, 8_000_000, None, FIRST_REPLAY_PAGE),  # sizes unknown: a few
        (4, 8_000_000, None, 4),  # never more than the frame bound
        (500, 8_000_000, 1_000, 500),  # small frames: the frame bound
        (500, 8_000_000, 1_000_000, 8),  # large frames: the byte budget
        (500, 1_000, 5_000_000, 1),  # frames larger than the budget: one at a time
        (500, 8_000_000, 0, 500),
    ],
)
def test_replay_page_size(most, budget, average, size):
    """A replay page fits the frame bound and, at the average frame size seen, the byte budget; at least one."""
    assert replay_page_size(most, budget, average) == size
