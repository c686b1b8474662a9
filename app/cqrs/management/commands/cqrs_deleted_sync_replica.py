"""``... | manage.py cqrs_deleted_sync_replica`` (on the replica): deletes the rows
cqrs_deleted_diff_master found gone from the master (django-cqrs's protocol)."""

from __future__ import annotations

import sys
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from app.cqrs import diff, sync


class Command(BaseCommand):
    help = "Diff for deleted objects synchronizer from CQRS master stream."

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            model = diff.replica_model(sys.stdin.readline())
            for line in sys.stdin:
                if not line.strip():
                    continue
                error = diff.delete_replica_rows(model, line)
                if error is not None:
                    self.stderr.write(error)
        except sync.BadOption as exc:
            raise CommandError(str(exc)) from None
