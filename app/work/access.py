"""Who may see and change which work requests and workers: plain rules over Django's model
permissions on the ``work`` app (superusers hold them all).

- ``work.add_workrequest`` creates requests. A positive ``priority_base`` puts a request ahead of
  everyone who kept the default 0, so it also needs ``work.manage_workrequest_priorities`` (checked by
  ``submission.check_priority``, as debusine lets only privileged users raise priorities); zero and
  below need nothing more.
- A caller sees the requests it created; ``work.view_workrequest`` sees every request.
- A caller aborts the requests it created; ``work.change_workrequest`` aborts any it sees.
- A caller retries the requests it created while it may still create requests (a retry creates one,
  in its name); ``work.change_workrequest`` retries any it sees.
- Workers: ``work.add_worker`` registers one (and so mints its token), ``work.view_worker`` lists
  them, ``work.change_worker`` disables or enables them.

Anonymous callers hold none of these and created nothing: they see no request.
"""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet

from app.work.models import WorkRequest

ADD_REQUEST = "work.add_workrequest"
VIEW_REQUEST = "work.view_workrequest"
CHANGE_REQUEST = "work.change_workrequest"
ADD_WORKER = "work.add_worker"
VIEW_WORKER = "work.view_worker"
CHANGE_WORKER = "work.change_worker"


def holds(user: Any, permission: str) -> bool:
    return bool(user.is_authenticated and user.is_active and user.has_perm(permission))


def visible_requests(user: Any) -> QuerySet[WorkRequest]:
    """The requests ``user`` may see."""
    rows = WorkRequest.objects.all()
    if not user.is_authenticated:
        return rows.none()
    if holds(user, VIEW_REQUEST):
        return rows
    return rows.filter(created_by=user.pk)


def is_creator(user: Any, request: WorkRequest) -> bool:
    return bool(user.is_authenticated and request.created_by_id is not None and request.created_by_id == user.pk)


def may_abort(user: Any, request: WorkRequest) -> bool:
    return is_creator(user, request) or holds(user, CHANGE_REQUEST)


def may_retry(user: Any, request: WorkRequest) -> bool:
    return (is_creator(user, request) and holds(user, ADD_REQUEST)) or holds(user, CHANGE_REQUEST)

