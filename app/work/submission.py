"""Creating work requests: validated against their task, bounded per creator, announced as events."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone

from app.work import push, quotas
from app.work.deadlocks import retrying_deadlocks
from app.work.events import Reason, emit_states
from app.work.models import MANAGE_PRIORITIES, PRIORITY_LIMIT, WorkRequest
from app.work.tasks import validate_task_data
from app.work.transitions import Changes, cascade_from_dependencies, lock_dependencies


class UnknownDependency(ValueError):
    """A dependency names no work request."""


class PriorityNotAllowed(ValueError):
    """A priority outside ±PRIORITY_LIMIT, or a positive one from a creator without the permission."""


def check_priority(priority_base: int, created_by: Any) -> None:
    """Bounded (models.PRIORITY_LIMIT); positive only for a creator with the permission
    ``work.manage_workrequest_priorities`` (as debusine: others may only lower their own requests').
    Without a creator (code of the deployment itself) any bounded priority."""
    if not -PRIORITY_LIMIT <= priority_base <= PRIORITY_LIMIT:
        raise PriorityNotAllowed(f"priority_base must be between -{PRIORITY_LIMIT} and {PRIORITY_LIMIT}")
    if priority_base > 0 and created_by is not None and not created_by.has_perm(MANAGE_PRIORITIES):
        raise PriorityNotAllowed(f"a positive priority_base needs the permission {MANAGE_PRIORITIES}")


def submit(
    task_name: str, task_data: Any = None, *, created_by: Any = None, priority_base: int = 0,
    dependencies: Iterable[int] = (), among: QuerySet[WorkRequest] | None = None, now: datetime | None = None,
) -> WorkRequest:
    """Create a pending work request and emit its event, in one transaction (joins the caller's).

    Raises UnknownTask / InvalidTaskData (app/work/tasks.py), UnknownDependency, ValueError for
    more than WORK_REQUEST_DEPENDENCIES_MAX dependencies, PriorityNotAllowed (``check_priority``)
    and quotas.QuotaExceeded. A dependency that already failed or was aborted ends the new request at
    once (app/work/transitions.py). ``among``: the requests a dependency may be (those the creator may
    see, app/work/access.py); one outside them is refused as unknown, exactly like a missing one.
    Default: every request."""
    data = {} if task_data is None else task_data
    validate_task_data(task_name, data)
    check_priority(priority_base, created_by)
    wanted = sorted(set(dependencies))
    limit = settings.WORK_REQUEST_DEPENDENCIES_MAX
    if len(wanted) > limit:
        raise ValueError(f"{len(wanted)} dependencies, more than WORK_REQUEST_DEPENDENCIES_MAX={limit}")
    now = now or timezone.now()

    def body() -> WorkRequest:
        with transaction.atomic():
            if created_by is not None:
                quotas.check_pending_quota(created_by.pk)
            lock_dependencies(wanted)
            candidates = WorkRequest.objects.all() if among is None else among
            found = set(candidates.filter(pk__in=wanted).values_list("pk", flat=True))
            if missing := [pk for pk in wanted if pk not in found]:
                raise UnknownDependency(f"no work request {', '.join(f'#{pk}' for pk in missing)}")
            request = WorkRequest.objects.create(
                task_name=task_name, task_data=data, priority_base=priority_base, created_by=created_by,
                created_at=now,
            )
            request.dependencies.set(wanted)
            changes: Changes = [(request, Reason.CREATED)]
            cascade_from_dependencies(request, now, changes)
            emit_states(changes)
            push.runnable()
        return request

    request = retrying_deadlocks(body)
    request.refresh_from_db()
    return request
