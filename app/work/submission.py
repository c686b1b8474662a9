"""Creating work requests: validated against their task, bounded per creator, announced as events."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from app.work import push, quotas
from app.work.events import Reason, emit_state
from app.work.models import WorkRequest
from app.work.tasks import validate_task_data
from app.work.transitions import cascade_from_dependencies


class UnknownDependency(ValueError):
    """A dependency names no work request."""


def submit(
    task_name: str, task_data: Any = None, *, created_by: Any = None, priority_base: int = 0,
    dependencies: Iterable[int] = (), now: datetime | None = None,
) -> WorkRequest:
    """Create a pending work request and emit its event, in one transaction (joins the caller's).

    Raises UnknownTask / InvalidTaskData (app/work/tasks.py), UnknownDependency, ValueError for
    more than WORK_REQUEST_DEPENDENCIES_MAX dependencies, and quotas.QuotaExceeded. A dependency
    that already failed or was aborted ends the new request at once (app/work/transitions.py)."""
    data = {} if task_data is None else task_data
    validate_task_data(task_name, data)
    wanted = sorted(set(dependencies))
    limit = settings.WORK_REQUEST_DEPENDENCIES_MAX
    if len(wanted) > limit:
        raise ValueError(f"{len(wanted)} dependencies, more than WORK_REQUEST_DEPENDENCIES_MAX={limit}")
    now = now or timezone.now()
    with transaction.atomic():
        if created_by is not None:
            quotas.check_pending_quota(created_by.pk)
        found = set(WorkRequest.objects.filter(pk__in=wanted).values_list("pk", flat=True))
        if missing := [pk for pk in wanted if pk not in found]:
            raise UnknownDependency(f"no work request {', '.join(f'#{pk}' for pk in missing)}")
        request = WorkRequest.objects.create(
            task_name=task_name, task_data=data, priority_base=priority_base, created_by=created_by, created_at=now,
        )
        request.dependencies.set(wanted)
        emit_state(request, Reason.CREATED)
        cascade_from_dependencies(request, now)
        push.runnable()
    request.refresh_from_db()
    return request
