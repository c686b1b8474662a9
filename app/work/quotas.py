"""How many pending work requests one principal may have: counted in the database inside the
creating transaction, so the limit holds across server processes."""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth import get_user_model

from app.work.models import Status, WorkRequest


class QuotaExceeded(ValueError):
    """The creator has WORK_REQUESTS_PER_PRINCIPAL pending requests already."""


def check_pending_quota(user_id: int) -> None:
    """Call inside the transaction that creates a request for ``user_id``. PostgreSQL locks the
    user's row until the commit, so two processes cannot both pass the count (FOR NO KEY UPDATE: the
    rows referencing the user are not held up); SQLite runs one write transaction at a time already."""
    list(get_user_model().objects.select_for_update(no_key=True).filter(pk=user_id).values_list("pk", flat=True))
    limit = settings.WORK_REQUESTS_PER_PRINCIPAL
    if WorkRequest.objects.filter(created_by_id=user_id, status=Status.PENDING).count() >= limit:
        raise QuotaExceeded(
            f"work request limit reached: user:{user_id} has {limit} pending requests, the most allowed"
        )
