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
  success, the worker's token is enabled, its running requests are fewer than its ``concurrency``
  and (given a ``Session``) the session asking still holds the worker. The row lock of the UPDATE
  settles a race on one request (PostgreSQL re-checks ``status`` on the row a concurrent writer
  committed; SQLite runs one writer at a time). The count of a worker's running requests is another
  row set, which a concurrent assignment to the same worker would not lock, so ``assign`` first
  locks the worker's row (FOR NO KEY UPDATE), as opening and ending a session do: assignments to
  one worker take turns with each other and with its sessions, to different workers run side by side.
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

from collections.abc import Iterator
from datetime import datetime
from enum import StrEnum
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Count, Exists, F, OuterRef, Subquery
from django.db.models.functions import Coalesce
from django.utils import timezone

from app.outbox.cloudevents import EventIn
from app.outbox.emit import emit_many
from app.work import push, quotas
from app.work.deadlocks import retrying_deadlocks
from app.work.events import Reason, emit_state, emit_states, state_event
from app.work.models import Result, Session, Status, Worker, WorkRequest
from app.work.tasks import check_size, validate_task_data

Dependency = WorkRequest.dependencies.through
# Dependent ids per query: well under SQLite's limit of bound parameters.
DEPENDENTS_CHUNK = 500

DONE_RESULTS = (Result.SUCCESS, Result.FAILURE, Result.ERROR)
RETRYABLE_RESULTS = (Result.FAILURE, Result.ERROR)

# The state changes of one transition, emitted together at its end (events.emit_states).
Changes = list[tuple[WorkRequest, Reason]]



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


def assign(request_id: int, worker_id: int, now: datetime | None = None, *, session: Session | None = None) -> bool:
    """pending -> running on ``worker_id``, when its dependencies succeeded and the worker (enabled)
    has a free slot; with ``session``, only while that session holds the worker (a connection that
    was replaced, or HTTP polling once a socket took over, is given nothing). True when this call
    made it."""
    return claim(request_id, worker_id, now, session=session) is not None


def claim(
    request_id: int, worker_id: int, now: datetime | None = None, *, session: Session | None = None
) -> WorkRequest | None:
    """``assign``, returning the request as this assignment left it (read in its transaction, so
    its ``attempts`` are this run's), or None."""
    now = now or timezone.now()
    takers = Worker.objects.filter(pk=worker_id, token__enabled=True, concurrency__gt=running_count(worker_id))
    may_take = Exists(takers.filter(session.holds()) if session is not None else takers)

    def body() -> WorkRequest | None:
        with transaction.atomic():
            list(
                Worker.objects.select_for_update(no_key=True).filter(pk=worker_id).order_by()
                .values_list("pk", flat=True)
            )
            changed = (
                WorkRequest.objects.filter(pk=request_id, status=Status.PENDING)
                .filter(~unsatisfied_dependencies(), may_take)
                .update(status=Status.RUNNING, worker_id=worker_id, started_at=now, attempts=F("attempts") + 1,
                        acknowledged_at=None)
            )
            if not changed:
                return None
            row = _load(request_id)
            emit_state(row, Reason.ASSIGNED)
        return row

    return retrying_deadlocks(body)


def complete(
    request_id: int, result: Result | str, output_data: Any = None, *, worker_id: int | None = None,
    attempt: int | None = None, now: datetime | None = None,
) -> bool:
    """running -> completed with ``result`` (success, failure or error) and the worker's output;
    with ``worker_id``, only while that worker runs it; with ``attempt`` (its ``attempts`` when it
    was assigned), only that run: a late report of an earlier run on the same worker, returned to
    pending and assigned to it again meanwhile, completes nothing. A failure or error fails its
    pending dependents."""
    result = Result(result)
    if result not in DONE_RESULTS:
        raise ValueError(f"a completed request's result is success, failure or error, not {result.value!r}")
    if output_data is not None:
        check_size("output_data", output_data)
    now = now or timezone.now()
    running = WorkRequest.objects.filter(pk=request_id, status=Status.RUNNING)
    if worker_id is not None:
        running = running.filter(worker_id=worker_id)
    if attempt is not None:
        running = running.filter(attempts=attempt)

    def body() -> int:
        with transaction.atomic():
            changed = running.update(status=Status.COMPLETED, result=result, output_data=output_data, completed_at=now)
            if changed:
                changes: Changes = []
                _ended(_load(request_id), Reason.COMPLETED, now, changes)
                emit_states(changes)
                # Its dependents may run now. Without pending dependents nothing became runnable: the
                # worker that completed it looks for more on its own, and no fleet-wide round of
                # searches follows every completion.
                if result == Result.SUCCESS and any(
                    WorkRequest.objects.filter(pk__in=ids, status=Status.PENDING).exists()
                    for ids in dependents_of(request_id)
                ):
                    push.runnable()
        return changed

    return bool(retrying_deadlocks(body))


def abort(request_id: int, now: datetime | None = None) -> bool:
    """pending or running -> aborted (a running request keeps its worker, which is to be told).
    Its pending dependents are aborted too."""
    now = now or timezone.now()

    def body() -> int:
        with transaction.atomic():
            changed = (
                WorkRequest.objects.filter(pk=request_id, status__in=(Status.PENDING, Status.RUNNING))
                .update(status=Status.ABORTED, completed_at=now)
            )
            if changed:
                changes: Changes = []
                request = _load(request_id)
                _ended(request, Reason.ABORTED, now, changes)
                emit_states(changes)
                if request.worker_id is not None:  # it was running (a pending request has no worker)
                    push.aborted(request.pk, request.worker_id)
        return changed

    return bool(retrying_deadlocks(body))


def return_to_pending(
    request_id: int, *, worker_id: int | None = None, max_attempts: int | None = None, now: datetime | None = None
) -> Returned:
    """Its worker was lost: running -> pending while it has had fewer than ``max_attempts``
    (WORK_REQUEST_MAX_ATTEMPTS) starts, else running -> completed as error."""
    limit = settings.WORK_REQUEST_MAX_ATTEMPTS if max_attempts is None else max_attempts
    now = now or timezone.now()

    def body() -> Returned:
        with transaction.atomic():
            events: list[EventIn] = []
            returned = _return(request_id, worker_id, limit, now, events)
            emit_many(events)
        return returned

    return retrying_deadlocks(body)


def return_all(worker_id: int, now: datetime | None = None) -> dict[int, Returned]:
    """``return_to_pending`` for every request ``worker_id`` runs, in the caller's transaction (the
    worker's row locked by the caller), their events emitted together at the end: one ``emit_many``
    takes the outbox's key locks in sorted order, so two workers released at once cannot deadlock on
    them (emitting per request took them in request order)."""
    now = now or timezone.now()
    limit = settings.WORK_REQUEST_MAX_ATTEMPTS
    running = WorkRequest.objects.filter(worker_id=worker_id, status=Status.RUNNING).order_by("pk")
    events: list[EventIn] = []
    returned = {pk: _return(pk, worker_id, limit, now, events) for pk in running.values_list("pk", flat=True)}
    emit_many(events)
    return returned


def _return(
    request_id: int, worker_id: int | None, limit: int, now: datetime, events: list[EventIn]
) -> Returned:
    running = WorkRequest.objects.filter(pk=request_id, status=Status.RUNNING)
    if worker_id is not None:
        running = running.filter(worker_id=worker_id)
    # Locked and read first, to name the lost worker in the event.
    lost = running.select_for_update(no_key=True, of=("self",)).values_list("worker_id", "worker__name").first()
    if lost is None:
        return Returned.NOTHING
    mine = running.filter(worker_id=lost[0])
    returned = mine.filter(attempts__lt=limit).update(
        status=Status.PENDING, worker=None, started_at=None, acknowledged_at=None
    )
    if returned:
        events.append(state_event(_load(request_id), Reason.WORKER_LOST, lost_worker=lost[1]))
        push.runnable()
        return Returned.PENDING
    failed = mine.filter(attempts__gte=limit).update(
        status=Status.COMPLETED, result=Result.ERROR, completed_at=now,
        output_data={"error": f"its worker was lost at each of its {limit} attempts"},
    )
    if not failed:
        return Returned.NOTHING
    changes: Changes = []
    _ended(_load(request_id), Reason.WORKER_LOST, now, changes)
    events.extend(state_event(request, reason) for request, reason in changes)
    return Returned.ERROR


def retry(request_id: int, now: datetime | None = None) -> WorkRequest | None:
    """Supersede a request that completed with failure or error, or was aborted, by a new pending
    one (see the module's docstring); None when it may not be retried or was retried already.
    Raises UnknownTask / InvalidTaskData when its task data is no longer valid, and
    quotas.QuotaExceeded when its creator has too many pending requests (nothing is retried then)."""
    now = now or timezone.now()

    def body() -> WorkRequest | None:
        with transaction.atomic():
            changes: Changes = []
            new = _retry(request_id, now, changes)
            emit_states(changes)
            if new is not None:
                push.runnable()
        return new

    return retrying_deadlocks(body)


def lock_dependencies(dependency_ids: list[int]) -> None:
    """Lock the dependency rows (FOR NO KEY UPDATE, in id order) of a request being created, before
    reading their status: a dependency ending concurrently either commits first (its status is then
    read here) or waits for this request to commit (and its cascade then finds it). Without the lock
    the cascade could miss the new request and the request miss the end: pending for ever."""
    list(
        WorkRequest.objects.select_for_update(no_key=True).filter(pk__in=dependency_ids).order_by("pk")
        .values_list("pk", flat=True)
    )


def cascade_from_dependencies(request: WorkRequest, now: datetime, changes: Changes | None = None) -> None:
    """A new request with a dependency that already failed or was aborted ends at once, as if that
    dependency had ended after it was created (its dependencies locked first: ``lock_dependencies``).
    With ``changes``, its events are added there for the caller to emit; else emitted here."""
    if changes is None:
        collected: Changes = []
        cascade_from_dependencies(request, now, collected)
        emit_states(collected)
        return
    ended = (
        WorkRequest.objects.filter(dependents=request.pk)
        .exclude(status__in=(Status.PENDING, Status.RUNNING))
        .exclude(status=Status.COMPLETED, result=Result.SUCCESS)
        .order_by("completed_at", "id").first()
    )
    if ended is not None and (dependent := _cascade_one(request.pk, ended, now, changes)) is not None:
        _cascade_to_dependents(dependent, now, changes)


def _retry(request_id: int, now: datetime, changes: Changes) -> WorkRequest | None:
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
    copied = sorted(old.dependencies.values_list("pk", flat=True))
    lock_dependencies(copied)
    new.dependencies.set(copied)
    Dependency.objects.filter(to_workrequest_id=old.pk).update(to_workrequest_id=new.pk)
    changes.append((_load(new.pk), Reason.RETRIED))
    cascade_from_dependencies(new, now, changes)
    for follower in WorkRequest.objects.filter(cascaded_from=old.pk).order_by("pk").values_list("pk", flat=True):
        _retry(follower, now, changes)
    return _load(new.pk)


def retryable(status: str, result: str) -> bool:
    return status == Status.ABORTED or (status == Status.COMPLETED and result in RETRYABLE_RESULTS)


def _ended(request: WorkRequest, reason: Reason, now: datetime, changes: Changes) -> None:
    changes.append((request, reason))
    _cascade_to_dependents(request, now, changes)


def _cascade_to_dependents(request: WorkRequest, now: datetime, changes: Changes) -> None:
    """End the pending dependents of ``request`` if it failed or was aborted, transitively; each
    parent's dependents are locked in id order first, so two cascades over shared dependents take
    their row locks in one order."""
    frontier = [request]
    while frontier:
        parent = frontier.pop(0)
        if parent.status == Status.COMPLETED and parent.result == Result.SUCCESS:
            continue
        for ids in dependents_of(parent.pk):
            pending = (
                WorkRequest.objects.select_for_update(no_key=True, of=("self",))
                .filter(pk__in=ids, status=Status.PENDING).order_by("pk")
            )
            for dependent_id in list(pending.values_list("pk", flat=True)):
                dependent = _cascade_one(dependent_id, parent, now, changes)
                if dependent is not None:
                    frontier.append(dependent)


def dependents_of(request_id: int) -> Iterator[list[int]]:
    """The ids of the requests that depend on ``request_id``, ascending, in chunks of
    ``DEPENDENTS_CHUNK`` (bound parameters). Read from the dependency table alone: joined with a
    status filter, SQLite's planner (it has no statistics) starts from the status index and reads
    every request of that status, the whole pending backlog on each completion."""
    ids = sorted(Dependency.objects.filter(to_workrequest_id=request_id).values_list("from_workrequest_id", flat=True))
    for start in range(0, len(ids), DEPENDENTS_CHUNK):
        yield ids[start:start + DEPENDENTS_CHUNK]


def _cascade_one(dependent_id: int, parent: WorkRequest, now: datetime, changes: Changes) -> WorkRequest | None:
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
    changes.append((dependent, reason))
    return dependent


def _load(request_id: int) -> WorkRequest:
    return WorkRequest.objects.select_related("worker").get(pk=request_id)
