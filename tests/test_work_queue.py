"""Submission and the queue a worker is served from: validation and limits when a request is created,
then ``next_request_for`` picking by dependencies, priority, age and capabilities from the database."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest
from django.contrib.auth.models import Permission
from django.db import IntegrityError, transaction
from django.test import override_settings
from django.utils import timezone

from app.work.models import PRIORITY_LIMIT, Status, WorkRequest
from app.work.queue import candidates, next_request_for
from app.work.quotas import QuotaExceeded
from app.work.scheduling import signature_of
from app.work.submission import PriorityNotAllowed, UnknownDependency, submit
from app.work.tasks import InvalidTaskData, UnknownTask
from app.work.workers import report_metadata, set_enabled
from tests.protocol import make_user
from tests.work import ECHO, clear_work, completed, pending, running, worker


@pytest.fixture(autouse=True)
def _empty_queue() -> Iterator[None]:
    clear_work()
    yield


def test_submit_stores_a_pending_request() -> None:
    """submit: a pending request with its task, data, priority and creator."""
    user = make_user()
    request = submit(ECHO, {"text": "hi"}, created_by=user, priority_base=-2)
    assert (request.status, request.task_name, request.task_data, request.priority_base, request.created_by_id) == (
        Status.PENDING, ECHO, {"text": "hi"}, -2, user.pk)


def test_submit_unknown_task_refused() -> None:
    """A request for an unregistered task is not stored."""
    with pytest.raises(UnknownTask):
        submit("no.such.task", {})
    assert not WorkRequest.objects.exists()


def test_submit_invalid_data_refused() -> None:
    """A request whose data its task's schema refuses is not stored."""
    with pytest.raises(InvalidTaskData):
        submit(ECHO, {"text": 1})
    assert not WorkRequest.objects.exists()


def test_submit_unknown_dependency_refused() -> None:
    """Dependencies must name existing requests."""
    with pytest.raises(UnknownDependency, match="#999999999"):
        submit("noop", {}, dependencies=[999_999_999])


@override_settings(WORK_REQUEST_DEPENDENCIES_MAX=1)
def test_submit_too_many_dependencies_refused() -> None:
    """More than WORK_REQUEST_DEPENDENCIES_MAX dependencies are refused."""
    with pytest.raises(ValueError, match="WORK_REQUEST_DEPENDENCIES_MAX=1"):
        submit("noop", {}, dependencies=[pending().pk, pending().pk])


@override_settings(WORK_REQUESTS_PER_PRINCIPAL=2)
def test_pending_requests_per_principal_bounded() -> None:
    """A principal has at most WORK_REQUESTS_PER_PRINCIPAL pending requests; others are not held back."""
    user = make_user()
    submit("noop", {}, created_by=user), submit("noop", {}, created_by=user)
    with pytest.raises(QuotaExceeded):
        submit("noop", {}, created_by=user)
    submit("noop", {}, created_by=make_user())


@override_settings(WORK_REQUESTS_PER_PRINCIPAL=1)
def test_finished_requests_do_not_count_against_the_limit() -> None:
    """Only pending requests count: once one runs, its creator may submit the next."""
    user = make_user()
    running(created_by=user)
    submit("noop", {}, created_by=user)


def test_worker_gets_the_highest_priority_first() -> None:
    """Of two runnable requests, the one with the higher effective priority (base + adjustment) goes first."""
    low = pending(priority_base=5)
    high = pending(priority_base=1)
    WorkRequest.objects.filter(pk=high.pk).update(priority_adjustment=10)
    assert next_request_for(worker().pk).pk == high.pk
    assert next_request_for(worker().pk).pk == low.pk


def test_worker_gets_the_oldest_among_equals() -> None:
    """Same priority: the request created first."""
    now = timezone.now()
    newer = pending(now=now)
    older = pending(now=now - timedelta(seconds=5))
    assert next_request_for(worker().pk).pk == older.pk
    assert next_request_for(worker().pk).pk == newer.pk


def test_blocked_request_skipped() -> None:
    """A request waiting for its dependency is passed over for a runnable one."""
    parent = running()
    pending(priority_base=9, dependencies=[parent.pk])
    runnable = pending()
    assert next_request_for(worker().pk).pk == runnable.pk


def test_request_goes_only_to_a_capable_worker() -> None:
    """A request requiring a capability goes to the worker that has it, not to one without."""
    request = pending(task_data={"requires": {"arch": "arm64"}})
    assert next_request_for(worker(arch="amd64").pk) is None
    assert next_request_for(worker(arch="arm64").pk).pk == request.pk


def test_worker_reported_metadata_matched() -> None:
    """Capabilities a worker reports itself (dynamic metadata) are matched."""
    request = pending(task_data={"requires": {"gpu": True}})
    reporting = worker()
    report_metadata(reporting.pk, {"gpu": True})
    assert next_request_for(reporting.pk).pk == request.pk


def test_static_metadata_wins_over_the_report() -> None:
    """An admin's static metadata overrides what the worker reports on the same key."""
    pending(task_data={"requires": {"gpu": True}})
    pinned = worker(gpu=False)
    report_metadata(pinned.pk, {"gpu": True})
    assert next_request_for(pinned.pk) is None


def test_nothing_for_a_busy_worker() -> None:
    """A worker at its concurrency gets nothing, though requests wait."""
    on = worker()
    running(on=on)
    pending()
    assert next_request_for(on.pk) is None


def test_nothing_for_a_disabled_worker() -> None:
    """A disabled worker gets nothing."""
    on = worker()
    set_enabled(on, False)
    pending()
    assert next_request_for(on.pk) is None


def test_nothing_when_the_queue_is_empty() -> None:
    """No pending request: None."""
    assert next_request_for(worker().pk) is None


def test_capable_request_found_past_the_first_page() -> None:
    """A worker finds the one request it can run behind a page of requests it cannot."""
    for _ in range(5):
        pending(task_data={"requires": {"arch": "arm64"}}, priority_base=1)
    mine = pending()
    with override_settings(WORK_SCHEDULER_SCAN_ROWS=10), pytest.MonkeyPatch.context() as patch:
        patch.setattr("app.work.queue.PAGE_ROWS", 2)
        assert next_request_for(worker(arch="amd64").pk).pk == mine.pk


def test_worker_skips_whole_signatures_it_lacks() -> None:
    """Behind more requests it cannot run than WORK_SCHEDULER_SCAN_ROWS, all of one kind, a worker finds its own."""
    for _ in range(30):
        pending(task_data={"requires": {"arch": "arm64"}}, priority_base=1)
    mine = pending(task_data={"requires": {"arch": "amd64"}})
    with override_settings(WORK_SCHEDULER_SCAN_ROWS=10), pytest.MonkeyPatch.context() as patch:
        patch.setattr("app.work.queue.PAGE_ROWS", 5)
        given = next_request_for(worker(arch="amd64").pk)
    assert given is not None and given.pk == mine.pk


def test_stale_signature_is_not_skipped_by() -> None:
    """A row whose requires was rewritten around the model does not make the queue skip requests it differs from."""
    odd = pending(priority_base=1)
    WorkRequest.objects.filter(pk=odd.pk).update(task_data={"requires": {"arch": "arm64"}})
    mine = pending()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("app.work.queue.PAGE_ROWS", 1)
        given = next_request_for(worker(arch="amd64").pk)
    assert given is not None and given.pk == mine.pk


def test_scan_stops_at_its_bound() -> None:
    """Past WORK_SCHEDULER_SCAN_ROWS rows read the worker looks no deeper: the request there waits."""
    for _ in range(3):
        pending(task_data={"requires": {"arch": "arm64"}}, priority_base=1)
    pending()
    with override_settings(WORK_SCHEDULER_SCAN_ROWS=3):
        assert next_request_for(worker(arch="amd64").pk) is None


def test_candidates_page_in_scheduler_order() -> None:
    """Candidate pages continue where the last ended, in priority-then-age order, without repeats."""
    made = [pending(priority_base=priority) for priority in (0, 3, 3, 1, 2)]
    first = candidates(limit=2)
    rest = candidates(after=first[-1], limit=10)
    expected = [made[1].pk, made[2].pk, made[4].pk, made[3].pk, made[0].pk]
    assert [c.id for c in first + rest] == expected


def test_candidates_carry_their_requirements() -> None:
    """A candidate holds the requirements from its task data, and their signature."""
    pending(task_data={"requires": {"arch": "amd64", "tools": ["docker"], "gpu": True}})
    [candidate] = candidates()
    assert candidate.requires == {"arch": "amd64", "tools": ["docker"], "gpu": True}
    assert candidate.signature == signature_of(candidate.requires) != ""


def test_assigned_request_is_running_on_the_worker() -> None:
    """The request next_request_for returns was assigned to that worker."""
    request, on = pending(), worker()
    given = next_request_for(on.pk)
    assert given is not None and given.pk == request.pk
    assert (given.status, given.worker_id) == (Status.RUNNING, on.pk)


def test_finished_requests_never_given() -> None:
    """Completed requests are not candidates."""
    completed()
    assert next_request_for(worker().pk) is None


def test_submit_priority_beyond_the_bound_refused() -> None:
    """A priority_base beyond ±PRIORITY_LIMIT is refused before anything is stored."""
    with pytest.raises(PriorityNotAllowed, match="between"):
        submit(ECHO, {"text": "hi"}, priority_base=PRIORITY_LIMIT + 1)
    assert not WorkRequest.objects.exists()


def test_positive_priority_needs_the_permission() -> None:
    """A creator without manage_workrequest_priorities may not submit with a positive priority."""
    with pytest.raises(PriorityNotAllowed, match="manage_workrequest_priorities"):
        submit(ECHO, {"text": "hi"}, created_by=make_user(), priority_base=1)


def test_positive_priority_with_the_permission() -> None:
    """A creator with manage_workrequest_priorities submits with a positive priority."""
    user = make_user()
    user.user_permissions.add(Permission.objects.get(codename="manage_workrequest_priorities"))
    assert submit(ECHO, {"text": "hi"}, created_by=user, priority_base=5).priority_base == 5


def test_unbounded_priority_adjustment_refused_by_the_database() -> None:
    """An adjustment beyond ±PRIORITY_LIMIT written around the checks is refused by a constraint."""
    request = pending()
    with pytest.raises(IntegrityError), transaction.atomic():
        WorkRequest.objects.filter(pk=request.pk).update(priority_adjustment=PRIORITY_LIMIT + 1)


def test_request_with_a_requires_that_is_no_object_goes_to_no_worker() -> None:
    """A request whose requires was stored as a list (around the registry) is given to no worker."""
    request = pending()
    WorkRequest.objects.filter(pk=request.pk).update(task_data={"requires": ["gpu"]})
    assert next_request_for(worker(gpu=True).pk) is None
