"""Work request transitions: each a guarded UPDATE that happens once or not at all, on SQLite and
PostgreSQL (races between connections: tests/test_work_races.py)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from django.db import OperationalError, transaction
from django.test import override_settings

from app.work.deadlocks import retrying_deadlocks
from app.work.models import Result, Status
from app.work.transitions import Returned, abort, assign, complete, return_to_pending
from app.work.workers import set_enabled
from tests.work import aborted, completed, pending, reload, running, worker


def test_assign_starts_a_pending_request() -> None:
    """assign: pending -> running on the worker, started now, first attempt."""
    request, on = pending(), worker()
    assert assign(request.pk, on.pk)
    request = reload(request)
    assert (request.status, request.worker_id, request.attempts) == (Status.RUNNING, on.pk, 1)
    assert request.started_at is not None


def test_assign_twice_refused() -> None:
    """A running request is not assigned again, to the same worker or another."""
    request = running()
    assert not assign(request.pk, worker().pk)


def test_assign_waits_for_a_pending_dependency() -> None:
    """A request whose dependency has not completed stays pending."""
    parent = pending()
    child = pending(dependencies=[parent.pk])
    assert not assign(child.pk, worker().pk)
    assert reload(child).status == Status.PENDING


def test_assign_waits_for_a_running_dependency() -> None:
    """A dependency that runs still holds its dependent back."""
    parent = running()
    child = pending(dependencies=[parent.pk])
    assert not assign(child.pk, worker().pk)


def test_assign_after_every_dependency_succeeded() -> None:
    """Once all its dependencies completed with success, a request may run."""
    first, second = completed(), completed()
    child = pending(dependencies=[first.pk, second.pk])
    assert assign(child.pk, worker().pk)


def test_assign_refused_beyond_concurrency() -> None:
    """A worker runs at most ``concurrency`` requests at once."""
    on = worker(concurrency=2)
    running(on=on), running(on=on)
    assert not assign(pending().pk, on.pk)


def test_assign_to_a_disabled_worker_refused() -> None:
    """A worker whose token is disabled gets nothing."""
    on = worker()
    set_enabled(on, False)
    assert not assign(pending().pk, on.pk)


def test_finished_request_frees_its_slot() -> None:
    """Completing a request lets its worker take the next one."""
    on = worker()
    first = running(on=on)
    assert complete(first.pk, Result.SUCCESS)
    assert assign(pending().pk, on.pk)


def test_complete_records_result_and_output() -> None:
    """complete: running -> completed with the result, the output and the time."""
    request = running()
    assert complete(request.pk, Result.FAILURE, {"log": "tests failed"})
    request = reload(request)
    assert (request.status, request.result, request.output_data) == (
        Status.COMPLETED, Result.FAILURE, {"log": "tests failed"})
    assert request.completed_at is not None


def test_complete_a_pending_request_refused() -> None:
    """A request that was never started cannot complete."""
    assert not complete(pending().pk, Result.SUCCESS)


def test_complete_twice_refused() -> None:
    """The second completion of a request changes nothing."""
    request = running()
    assert complete(request.pk, Result.SUCCESS)
    assert not complete(request.pk, Result.FAILURE)
    assert reload(request).result == Result.SUCCESS


def test_complete_by_another_worker_refused() -> None:
    """Only the worker running a request may complete it (one that lost it may not)."""
    request = running()
    assert not complete(request.pk, Result.SUCCESS, worker_id=worker().pk)
    assert complete(request.pk, Result.SUCCESS, worker_id=request.worker_id)


def test_complete_without_a_result_refused() -> None:
    """A completed request has success, failure or error."""
    with pytest.raises(ValueError, match="success, failure or error"):
        complete(running().pk, Result.NONE)


@override_settings(WORK_REQUEST_DATA_MAX_BYTES=32)
def test_oversized_output_refused() -> None:
    """Output larger than WORK_REQUEST_DATA_MAX_BYTES is refused and the request keeps running."""
    request = running()
    with pytest.raises(ValueError, match="output_data is"):
        complete(request.pk, Result.SUCCESS, {"log": "x" * 64})
    assert reload(request).status == Status.RUNNING


def test_abort_a_pending_request() -> None:
    """abort: pending -> aborted, with no result."""
    request = pending()
    assert abort(request.pk)
    request = reload(request)
    assert (request.status, request.result) == (Status.ABORTED, Result.NONE)
    assert request.completed_at is not None


def test_abort_a_running_request_keeps_its_worker() -> None:
    """A running request is aborted too, and still names the worker that is to be told."""
    request = running()
    assert abort(request.pk)
    assert reload(request).status == Status.ABORTED and reload(request).worker_id == request.worker_id


def test_abort_a_completed_request_refused() -> None:
    """Completed is final: abort changes nothing."""
    request = completed()
    assert not abort(request.pk)
    assert reload(request).status == Status.COMPLETED


def test_worker_lost_returns_the_request_to_pending() -> None:
    """return_to_pending below the attempt limit: pending again, without a worker."""
    request = running()
    assert return_to_pending(request.pk, max_attempts=3) is Returned.PENDING
    request = reload(request)
    assert (request.status, request.worker_id, request.started_at, request.attempts) == (Status.PENDING, None, None, 1)


def test_returned_request_runs_again_as_a_new_attempt() -> None:
    """A returned request is assigned again and counts its second start."""
    request = running()
    return_to_pending(request.pk, max_attempts=3)
    assert assign(request.pk, worker().pk)
    assert reload(request).attempts == 2


def test_worker_lost_at_the_last_attempt_completes_as_error() -> None:
    """At WORK_REQUEST_MAX_ATTEMPTS starts, a lost worker's request completes as error."""
    request = running()
    with override_settings(WORK_REQUEST_MAX_ATTEMPTS=1):
        assert return_to_pending(request.pk) is Returned.ERROR
    request = reload(request)
    assert (request.status, request.result) == (Status.COMPLETED, Result.ERROR)


def test_return_of_a_request_another_worker_runs_refused() -> None:
    """Only the lost worker's own run goes back."""
    request = running()
    assert return_to_pending(request.pk, worker_id=worker().pk) is Returned.NOTHING
    assert reload(request).status == Status.RUNNING


def test_return_of_a_finished_request_does_nothing() -> None:
    """A request that is not running is not returned."""
    assert return_to_pending(aborted().pk) is Returned.NOTHING


def test_stale_completion_of_an_earlier_attempt_refused() -> None:
    """A completion naming attempt 1 does not complete attempt 2 of the same request on the same worker."""
    on = worker()
    request = running(on=on)
    assert return_to_pending(request.pk, max_attempts=5) == Returned.PENDING
    assert assign(request.pk, on.pk)
    assert not complete(request.pk, Result.SUCCESS, worker_id=on.pk, attempt=1)
    assert (reload(request).status, reload(request).attempts) == (Status.RUNNING, 2)
    assert complete(request.pk, Result.SUCCESS, worker_id=on.pk, attempt=2)


class DeadlockCause(Exception):
    """Stands for the driver's error under Django's OperationalError: PostgreSQL's deadlock SQLSTATE."""

    sqlstate = "40P01"


def deadlocking(times: int) -> tuple[list[int], Callable[[], str]]:
    """A body that fails as a deadlock ``times`` times, then succeeds; the list counts its runs."""
    runs: list[int] = []

    def body() -> str:
        runs.append(1)
        if len(runs) <= times:
            raise OperationalError("deadlock detected") from DeadlockCause()
        return "done"

    return runs, body


def test_deadlocked_transition_runs_again() -> None:
    """A transition rolled back as a deadlock runs again and succeeds."""
    runs, body = deadlocking(2)
    assert (retrying_deadlocks(body), len(runs)) == ("done", 3)


def test_deadlock_inside_a_callers_transaction_not_retried() -> None:
    """Inside a caller's transaction a deadlock is the caller's: raised at once."""
    runs, body = deadlocking(1)
    with pytest.raises(OperationalError), transaction.atomic():
        retrying_deadlocks(body)
    assert len(runs) == 1


def test_completion_of_a_request_deleted_right_after_is_no_failure(monkeypatch: pytest.MonkeyPatch) -> None:
    """A request deleted between its recorded completion and the read back: complete_own answers None, not an error."""
    from app.work import reports, transitions

    on = worker()
    request = running(on=on)
    recorded = transitions.complete

    def complete_then_deleted(*args: object, **kwargs: object) -> bool:
        done = recorded(*args, **kwargs)  # type: ignore[arg-type]
        type(request).objects.filter(pk=request.pk).delete()  # an admin, right after
        return done

    monkeypatch.setattr(transitions, "complete", complete_then_deleted)
    assert reports.complete_own(on.pk, request.pk, Result.SUCCESS, attempt=reload(request).attempts) is None
