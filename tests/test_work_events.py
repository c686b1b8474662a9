"""Every state change of a work request is an outbox event ``switchyard.work_request.<state>``,
written in the transaction of the change, keyed per request."""

from __future__ import annotations

import pytest
from django.db import transaction

from app import codec
from app.outbox.models import OutboxEvent
from app.work.events import Reason, WorkRequestEvent
from app.work.models import Result, WorkRequest
from app.work.transitions import abort, assign, complete, retry, return_to_pending
from tests.work import completed, pending, running, worker


class Boom(Exception):
    """Raised to roll a transaction back."""


def events_of(request: WorkRequest) -> list[tuple[str, WorkRequestEvent]]:
    """The request's events in the order they were emitted: type and data."""
    rows = OutboxEvent.objects.filter(key=f"work_request:{request.pk}").order_by("id")
    return [(row.type, WorkRequestEvent.model_validate(codec.loads(bytes(row.data)))) for row in rows]


def test_submission_emits_pending() -> None:
    """A new request emits switchyard.work_request.pending, reason created."""
    request = pending(task_data={"result": "success"}, priority_base=3)
    [(kind, data)] = events_of(request)
    assert kind == "switchyard.work_request.pending"
    assert (data.id, data.task_name, data.reason, data.priority_base, data.attempts) == (
        request.pk, "noop", Reason.CREATED, 3, 0)


def test_event_attributes() -> None:
    """Events come from /work-requests, name the request as subject, and are JSON."""
    request = pending()
    row = OutboxEvent.objects.get(key=f"work_request:{request.pk}")
    assert (row.source, row.subject, row.datacontenttype) == ("/work-requests", str(request.pk), "application/json")


def test_assignment_emits_running_with_the_worker() -> None:
    """assign emits running, naming the worker and the attempt."""
    request, on = pending(), worker()
    assign(request.pk, on.pk)
    kind, data = events_of(request)[-1]
    assert (kind, data.worker, data.attempts, data.reason) == ("switchyard.work_request.running", on.name, 1,
                                                               Reason.ASSIGNED)
    assert data.started_at is not None


def test_completion_emits_completed_with_the_result() -> None:
    """complete emits completed with its result."""
    request = running()
    complete(request.pk, Result.FAILURE)
    kind, data = events_of(request)[-1]
    assert (kind, data.result, data.reason) == ("switchyard.work_request.completed", Result.FAILURE, Reason.COMPLETED)


def test_abort_emits_aborted() -> None:
    """abort emits aborted."""
    request = pending()
    abort(request.pk)
    assert events_of(request)[-1][0] == "switchyard.work_request.aborted"


def test_worker_loss_emits_pending_with_its_reason() -> None:
    """A request returned to pending says its worker was lost."""
    request = running()
    return_to_pending(request.pk, max_attempts=5)
    kind, data = events_of(request)[-1]
    assert (kind, data.reason, data.worker) == ("switchyard.work_request.pending", Reason.WORKER_LOST, None)


def test_worker_loss_event_names_the_lost_worker() -> None:
    """A request returned to pending names the worker that was lost in lost_worker."""
    on = worker()
    request = running(on=on)
    return_to_pending(request.pk, max_attempts=5)
    assert events_of(request)[-1][1].lost_worker == on.name


def test_worker_loss_at_the_last_attempt_names_the_lost_worker() -> None:
    """A request completed as error because its worker was lost names that worker in lost_worker."""
    on = worker()
    request = running(on=on)
    return_to_pending(request.pk, max_attempts=1)
    kind, data = events_of(request)[-1]
    assert (kind, data.lost_worker) == ("switchyard.work_request.completed", on.name)


def test_full_life_in_order() -> None:
    """One request's events follow its states in order: pending, running, completed."""
    request = completed()
    assert [kind.rsplit(".", 1)[1] for kind, _ in events_of(request)] == ["pending", "running", "completed"]


def test_cascade_emits_for_each_dependent() -> None:
    """A dependent failed by its parent emits completed, reason dependency_failed, naming the parent."""
    parent = running()
    child = pending(dependencies=[parent.pk])
    complete(parent.pk, Result.ERROR)
    kind, data = events_of(child)[-1]
    assert (kind, data.result, data.reason, data.cascaded_from) == (
        "switchyard.work_request.completed", Result.FAILURE, Reason.DEPENDENCY_FAILED, parent.pk)


def test_retry_emits_pending_for_the_new_request() -> None:
    """A retry emits pending for the new request, reason retried, naming the one it supersedes."""
    old = completed(Result.FAILURE)
    new = retry(old.pk)
    assert new is not None
    [(kind, data)] = events_of(new)
    assert (kind, data.reason, data.supersedes) == ("switchyard.work_request.pending", Reason.RETRIED, old.pk)


def test_refused_transition_emits_nothing() -> None:
    """A transition that did not happen writes no event."""
    request = completed()
    before = len(events_of(request))
    assert not abort(request.pk)
    assert len(events_of(request)) == before


def test_rolled_back_transition_leaves_no_event() -> None:
    """A transition in a transaction that rolls back leaves neither the change nor its event."""
    request, on = pending(), worker()
    with pytest.raises(Boom), transaction.atomic():
        assert assign(request.pk, on.pk)
        raise Boom
    assert [kind for kind, _ in events_of(request)] == ["switchyard.work_request.pending"]
    assert WorkRequest.objects.get(pk=request.pk).status == "pending"
