"""``manage.py cqrs_deleted_diff_replica -cid ID [-f JSON] [-b N] | manage.py cqrs_deleted_diff_master |
manage.py cqrs_deleted_sync_replica``, first step (on the replica): its pks (django-cqrs's protocol)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django.db.models import QuerySet

from app.cqrs import diff
from app.cqrs.management.diff_start import DiffStart


class Command(DiffStart):
    help = "Streaming diff of CQRS model pks from replica service to check for deleted objects."
    side = "replica"

    def model(self, cqrs_id: str) -> Any:
        return diff.replica_model(cqrs_id)

    def packages(self, rows: QuerySet[Any], batch: int) -> Iterable[str]:
        return (diff.json_line(pks) for pks in diff.pk_packages(rows, batch))
