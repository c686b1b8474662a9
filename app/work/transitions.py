"""Every change of a work request's status: one guarded, conditional UPDATE each
(``filter(pk=..., status=...).update(...)``) that says whether it happened. Never read, decide,
then write: two servers, two workers or an admin and a worker may act on one request at once, and
the database picks exactly one. Each runs in a transaction with its outbox event and its cascade;
one that may make work runnable, or aborts a running request, tells the worker sockets after the
commit (app/work/push.py).

    pending --assign--> running --complete--> completed (success | failure | error)
       |                   |  \\--return_to_pending--> pending (worker lost; at the last attempt:
       |                   |                                  completed error instead)
       +------abort--------+--> aborted

What the guards hold, and where:

- ``assign``: in the UPDATE's WHERE, the request is pending, every dependency completed with
  success, the worker's token is enabled and its running requests are fewer than its
  ``concurrency``. The row lock of the UPDATE settles a race on one request (PostgreSQL re-checks
  ``status`` on the row a concurrent writer committed; SQLite runs one writer at a time). The
  count of a worker's running requests is another row set, which a concurrent assignment to the
  same worker would not lock, so ``assign`` first locks the worker's row (FOR NO KEY UPDATE):
  assignments to one worker take turns, to different workers run side by side.
- Not guarded in SQL: capabilities and priority order. The scheduler (app/work/scheduling.py)
  decides them in Python from what it read; a worker whose metadata changed meanwhile gets at most
  one request chosen under its previous metadata.
- ``complete`` and ``return_to_pending`` may name the worker: a worker that lost its request
  (returned to pending and given to another) cannot complete the other's run.

Dependencies: a request whose dependency completed with failure or error is completed with
``failure`` without running, and one whose dependency was aborted is aborted, with
``cascaded_from`` naming that dependency, transitively, in the same transaction.

Retry (debusine's meaning): a completed request with failure or error, or an aborted one, is
superseded by a new pending request (``supersedes``; same task, data, priority and creator, its
dependencies copied, attempts from 0); its dependents now depend on the new request instead, and the
requests that ended only because of it (``cascaded_from``) are retried with it, so a retried
parent runs its subtree again. The old request stays as it ended. A request is retried once: the
unique ``supersedes`` refuses a second retry, also a concurrent one.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Count, Exists, F, OuterRef, Subquery
from django.db.models.functions import Coalesce
from django.utils import timezone

from app.work import push, quotas
from app.work.events import Reason, emit_state
from app.work.models import Result, Status, Worker, WorkRequest
from app.work.tasks import check_size, validate_task_data

Dependency = WorkRequest.dependencies.through

DONE_RESULTS = (Result.SUCCESS, Result.FAILURE, Result.ERROR)
RETRYABLE_RESULTS = (Result.FAILURE, Result.ERROR)


class Returned(StrEnum):
    """What ``return_to_pending`` did."""

    PENDING = "pending"  # it will run again
    ERROR = "error"  # it was at its last attempt: completed as error
    NOTHING = "nothing"  # it was not running (on that worker)


def unsatisfied_dependencies() -> Exists:
    """SQL: the outer request has a dependency that did not complete with success."""
    return Exists(
        WorkRequest.objects.filter(dependents=OuterRef("pk")).exclude(status=Status.COMPLETED, result=Result.SUCCESS)
    )


def running_count(worker_id: int) -> Coalesce:
    """SQL: how many requests ``worker_id`` runs."""
    running = (
        WorkRequest.objects.filter(worker_id=worker_id, status=Status.RUNNING)
        .order_by().values("worker_id").annotate(n=Count("id")).values("n")
    )
    return Coalesce(Subquery(running), 0)


def assign(request_id: int, worker_id: int, now: datetime | None = None) -> bool:
    """pending -> running on ``worker_id``, when its dependencies succeeded and the worker (enabled)
    has a free slot. True when this call made it."""
    now = now or timezone.now()
    may_take = Exists(
        Worker.objects.filter(pk=worker_id, token__enabled=True, concurrency__gt=running_count(worker_id))
    )
    with transaction.atomic():
        list(Worker.objects.select_for_update(no_key=True).filter(pk=worker_id).order_by().values_list("pk", flat=True))
        changed = (
            WorkRequest.objects.filter(pk=request_id, status=Status.PENDING)
            .filter(~unsatisfied_dependencies(), may_take)
            .update(status=Status.RUNNING, worker_id=worker_id, started_at=now, attempts=F("attempts") + 1)
        )
        if changed:
            emit_state(_load(request_id), Reason.ASSIGNED)
    return bool(changed)


def complete(
    request_id: int, result: Result | str, output_data: Any = None, *, worker_id: int | None = None,
    now: datetime | None = None,
) -> bool:
    """running -> completed with ``result`` (success, failure or error) and the worker's output;
    with ``worker_id``, only while that worker runs it. A failure or error fails its pending dependents."""
    result = Result(result)
    if result not in DONE_RESULTS:
        raise ValueError(f"a completed request's result is success, failure or error, not {result.value!r}")
    if output_data is not None:
        check_size("output_data", output_data)
    now = now or timezone.now()
    running = WorkRequest.objects.filter(pk=request_id, status=Status.RUNNING)
    if worker_id is not None:
        running = running.filter(worker_id=worker_id)
    with transaction.atomic():
        changed = running.update(status=Status.COMPLETED, result=result, output_data=output_data, completed_at=now)
        if changed:
            _ended(_load(request_id), Reason.COMPLETED, now)
            if result == Result.SUCCESS:
                push.runnable()  # its dependents may run now
    return bool(changed)


def abort(request_id: int, now: datetime | None = None) -> bool:
    """pending or running -> aborted (a running request keeps its worker, which is to be told).
    Its pending dependents are aborted too."""
    now = now or timezone.now()
    with transaction.atomic():
        changed = (
            WorkRequest.objects.filter(pk=request_id, status__in=(Status.PENDING, Status.RUNNING))
            .update(status=Status.ABORTED, completed_at=now)
        )
        if changed:
            request = _load(request_id)
            _ended(request, Reason.ABORTED, now)
            if request.worker_id is not None:  # it was running (a pending request has no worker)
                push.aborted(request.pk, request.worker_id)
    return bool(changed)


def return_to_pending(
    request_id: int, *, worker_id: int | None = None, max_attempts: int | None = None, now: datetime | None = None
) -> Returned:
    """Its worker was lost: running -> pending while it has had fewer than ``max_attempts``
    (WORK_REQUEST_MAX_ATTEMPTS) starts, else running -> completed as error."""
    limit = settings.WORK_REQUEST_MAX_ATTEMPTS if max_attempts is None else max_attempts
    now = now or timezone.now()
    running = WorkRequest.objects.filter(pk=request_id, status=Status.RUNNING)
    if worker_id is not None:
        running = running.filter(worker_id=worker_id)
    with transaction.atomic():
        if running.filter(attempts__lt=limit).update(status=Status.PENDING, worker=None, started_at=None):
            emit_state(_load(request_id), Reason.WORKER_LOST)
            push.runnable()
            return Returned.PENDING
        failed = running.filter(attempts__gte=limit).update(
            status=Status.COMPLETED, result=Result.ERROR, completed_at=now,
            output_data={"error": f"its worker was lost at each of its {limit} attempts"},
        )
        if failed:
            _ended(_load(request_id), Reason.WORKER_LOST, now)
            return Returned.ERROR
    return Returned.NOTHING


def retry(request_id: int, now: datetime | None = None) -> WorkRequest | None:
    """Supersede a request that completed with failure or error, or was aborted, by a new pending
    one (see the module's docstring); None when it may not be retried or was retried already.
    Raises UnknownTask / InvalidTaskData when its task data is no longer valid, and
    quotas.QuotaExceeded when its creator has too many pending requests (nothing is retried then)."""
    now = now or timezone.now()
    with transaction.atomic():
        new = _retry(request_id, now)
        if new is not None:
            push.runnable()
        return new


def cascade_from_dependencies(request: WorkRequest, now: datetime) -> None:
    """A new request with a dependency that already failed or was aborted ends at once, as if that
    dependency had ended after it was created."""
    ended = (
        WorkRequest.objects.filter(dependents=request.pk)
        .exclude(status__in=(Status.PENDING, Status.RUNNING))
        .exclude(status=Status.COMPLETED, result=Result.SUCCESS)
        .order_by("completed_at", "id").first()
    )
    if ended is not None and (dependent := _cascade_one(request.pk, ended, now)) is not None:
        _cascade_to_dependents(dependent, now)


def _retry(request_id: int, now: datetime) -> WorkRequest | None:
    old = WorkRequest.objects.filter(pk=request_id).first()
    # Completed and aborted are final: what was read here cannot change any more.
    if old is None or not retryable(old.status, old.result):
        return None
    validate_task_data(old.task_name, old.task_data)
    if old.created_by_id is not None:
        quotas.check_pending_quota(old.created_by_id)
    try:
        with transaction.atomic():
            new = WorkRequest.objects.create(
                task_name=old.task_name, task_data=old.task_data, priority_base=old.priority_base,
                priority_adjustment=old.priority_adjustment, created_by_id=old.created_by_id, created_at=now,
                supersedes=old,
            )
    except IntegrityError:
        return None  # retried already (supersedes is unique)
    new.dependencies.set(old.dependencies.all())
    Dependency.objects.filter(to_workrequest_id=old.pk).update(to_workrequest_id=new.pk)
    emit_state(_load(new.pk), Reason.RETRIED)
    cascade_from_dependencies(new, now)
    for follower in WorkRequest.objects.filter(cascaded_from=old.pk).values_list("pk", flat=True):
        _retry(follower, now)
    return _load(new.pk)


def retryable(status: str, result: str) -> bool:
    return status == Status.ABORTED or (status == Status.COMPLETED and result in RETRYABLE_RESULTS)


def _ended(request: WorkRequest, reason: Reason, now: datetime) -> None:
    emit_state(request, reason)
    _cascade_to_dependents(request, now)


def _cascade_to_dependents(request: WorkRequest, now: datetime) -> None:
    """End the pending dependents of ``request`` if it failed or was aborted, transitively."""
    frontier = [request]
    while frontier:
        parent = frontier.pop(0)
        if parent.status == Status.COMPLETED and parent.result == Result.SUCCESS:
            continue
        pending = WorkRequest.objects.filter(dependencies=parent.pk, status=Status.PENDING)
        for dependent_id in pending.values_list("pk", flat=True):
            dependent = _cascade_one(dependent_id, parent, now)
            if dependent is not None:
                frontier.append(dependent)


def _cascade_one(dependent_id: int, parent: WorkRequest, now: datetime) -> WorkRequest | None:
    """End pending ``dependent_id`` because ``parent`` failed or was aborted, with its own guarded
    UPDATE (one aborted or ended meanwhile stays as it is); the ended request, or None."""
    pending = WorkRequest.objects.filter(pk=dependent_id, status=Status.PENDING)
    if parent.status == Status.ABORTED:
        reason = Reason.DEPENDENCY_ABORTED
        changed = pending.update(status=Status.ABORTED, completed_at=now, cascaded_from=parent.pk)
    else:
        reason = Reason.DEPENDENCY_FAILED
        changed = pending.update(
            status=Status.COMPLETED, result=Result.FAILURE, completed_at=now, cascaded_from=parent.pk
        )
    if not changed:
        return None
    dependent = _load(dependent_id)
    emit_state(dependent, reason)
    return dependent


def _load(request_id: int) -> WorkRequest:
    return WorkRequest.objects.select_related("worker").get(pk=request_id)
