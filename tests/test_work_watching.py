"""Who watches which work requests on ``/ws/work-requests/``, its query parameters, and how the replay
meets the live changes (plain rules: app/work/watching.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from app.work.events import WorkRequestState
from app.work.models import Result, Status
from app.work.watching import OVERLAP_S, FeedParams, ReplayMerge, WatchScope, scope_for

pytestmark = pytest.mark.database_agnostic

JOINED = datetime(2026, 11, 30, 8, 0, tzinfo=UTC)


def state(pk: int, *, created_by: int | None = 1, task_name: str = "noop",
          completed_at: datetime | None = JOINED) -> WorkRequestState:
    return WorkRequestState(
        id=pk, task_name=task_name, status=Status.COMPLETED, result=Result.SUCCESS, priority_base=0,
        priority_adjustment=0, attempts=1, worker=None, created_by=created_by, created_at=JOINED,
        started_at=None, completed_at=completed_at, supersedes=None, cascaded_from=None,
    )


def params(query: str) -> FeedParams:
    return FeedParams.from_query(query.encode())


def test_completed_since_reads_iso_8601_with_its_offset() -> None:
    """completed_since keeps the offset it was given."""
    assert params("completed_since=2026-11-30T09:00:00%2B01:00").completed_since == JOINED


def test_completed_since_without_offset_is_utc() -> None:
    """A completed_since without an offset is taken as UTC."""
    assert params("completed_since=2026-11-30T08:00:00").completed_since == JOINED


def test_unescaped_plus_of_an_offset_is_read_as_plus() -> None:
    """An offset's "+" left unescaped in the query (read as a space) still means "+"."""
    assert params("completed_since=2026-11-30T09:00:00+01:00").completed_since == JOINED


@pytest.mark.parametrize("query", ["completed_since=yesterday", "mine=perhaps", "task_name=", "task_name=" + "x" * 101])
def test_bad_parameters_are_refused(query: str) -> None:
    """A value that cannot be read is refused (the handshake answers 400)."""
    with pytest.raises(ValidationError):
        params(query)


def test_viewer_sees_everyone_unless_mine() -> None:
    """With the view permission every creator's requests are shown; mine narrows to the caller's."""
    assert scope_for(7, True, params("")).creator_id is None
    assert scope_for(7, True, params("mine=true")).creator_id == 7


def test_others_see_only_their_own() -> None:
    """Without the view permission only the caller's requests are shown, mine or not."""
    assert scope_for(7, False, params("mine=false")).creator_id == 7


def test_scope_filters_creator_and_task() -> None:
    """A scope shows a request only when creator and task both match."""
    scope = WatchScope(1, "build")
    assert scope.shows(state(1, task_name="build"))
    assert not scope.shows(state(1, task_name="test"))
    assert not scope.shows(state(1, created_by=2, task_name="build"))
    assert scope.where() == {"created_by_id": 1, "task_name": "build"}


def test_release_drops_changes_of_replayed_requests() -> None:
    """Held changes of a request the replay sent are dropped (its final state went out already), the
    others come out in the order they arrived."""
    merge: ReplayMerge[str] = ReplayMerge(10, JOINED)
    for pk, change in ((1, "1 running"), (2, "2 running"), (1, "1 completed"), (3, "3 pending")):
        assert merge.hold(pk, change)
    merge.replayed(state(1))
    assert merge.release() == ["2 running", "3 pending"]
    assert not merge.holding


def test_requests_ended_long_before_joining_are_not_remembered() -> None:
    """A replayed request that ended more than OVERLAP_S before the watcher joined cannot come live
    again: it is not remembered (the set stays small however long the replay)."""
    merge: ReplayMerge[str] = ReplayMerge(10, JOINED)
    merge.replayed(state(1, completed_at=JOINED - timedelta(seconds=OVERLAP_S + 1)))
    merge.hold(1, "1 completed")
    assert merge.release() == ["1 completed"]


def test_holding_is_bounded() -> None:
    """Past its limit a merge refuses to hold more (the watcher is closed as too slow)."""
    merge: ReplayMerge[str] = ReplayMerge(2, JOINED)
    assert merge.hold(1, "a") and merge.hold(2, "b")
    assert not merge.hold(3, "c")
