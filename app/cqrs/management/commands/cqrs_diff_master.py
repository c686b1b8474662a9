"""``manage.py cqrs_diff_master -cid ID [-f JSON] [-b N] | manage.py cqrs_diff_replica | manage.py
cqrs_diff_sync``, first step: the master's ``[pk, revision]`` pairs (django-cqrs's protocol,
app/cqrs/diff.py)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django.db.models import QuerySet

from app.cqrs import diff, sync
from app.cqrs.management.diff_start import DiffStart


class Command(DiffStart):
    help = "Streaming diff of CQRS models from master service."
    side = "master"

    def model(self, cqrs_id: str) -> Any:
        return sync.master_model(cqrs_id)

    def packages(self, rows: QuerySet[Any], batch: int) -> Iterable[str]:
        return diff.master_packages(rows, batch)
