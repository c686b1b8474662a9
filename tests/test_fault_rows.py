"""The fault matrix's arithmetic: what counts as delivered, duplicated and lost, and when a row passes."""

from __future__ import annotations

import pytest

from faults.row import Counts, Row, table

pytestmark = pytest.mark.database_agnostic


def test_an_acked_message_that_never_arrived_is_lost() -> None:
    """An id acked to its sender and in no arrival counts as lost."""
    assert Counts.of(["a", "b", "c"], ["a", "c"]) == Counts(accepted=3, arrived=2, duplicated=0, lost=1)


def test_a_repeated_arrival_is_a_duplicate_not_a_loss() -> None:
    """Each arrival past a message's first is one duplicate."""
    assert Counts.of(["a", "b"], ["a", "b", "a", "a"]) == Counts(accepted=2, arrived=2, duplicated=2, lost=0)


def test_an_arrival_never_acked_is_neither_lost_nor_duplicated() -> None:
    """A send whose ok the fault swallowed may still arrive: at-least-once allows it."""
    assert Counts.of(["a"], ["a", "x"]) == Counts(accepted=1, arrived=2, duplicated=0, lost=0)


def test_a_row_with_a_loss_fails() -> None:
    """One lost event fails the row even when messages and work lost nothing."""
    row = Row("s", "sqlite", messages=Counts.of(["a"], ["a"]), events=Counts.of(["e"], []))
    assert row.lost == 1 and not row.passed


def test_a_row_that_exercised_nothing_fails() -> None:
    """A scenario whose traffic never got an ack proves nothing, so it does not pass."""
    assert not Row("s", "sqlite", messages=Counts.of([], [])).passed


def test_an_unexpected_error_fails_the_row() -> None:
    """An ERROR the scenario did not declare fails a row that lost nothing."""
    row = Row("s", "sqlite", messages=Counts.of(["a"], ["a"]), unexpected_errors=["ERROR x: boom"])
    assert not row.passed and "1 ERROR" in table([row]) and "FAIL" in table([row])


def test_a_skipped_row_says_why() -> None:
    """A row whose service is absent is listed with the reason, not as a failure."""
    row = Row("s", "postgres+redis", skipped="PostgreSQL is not reachable")
    assert row.passed and "skipped: PostgreSQL is not reachable" in table([row])
