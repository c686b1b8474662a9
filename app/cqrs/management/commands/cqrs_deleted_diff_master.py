"""``... | manage.py cqrs_deleted_diff_master | ...`` (on the master): passes the header on and prints
the replica pks the master has no row for (django-cqrs's protocol)."""

from __future__ import annotations

import sys
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from app.cqrs import diff, sync


class Command(BaseCommand):
    help = "Diff of deleted CQRS models pks from master diff stream."

    def handle(self, *args: Any, **options: Any) -> None:
        first_line = sys.stdin.readline()
        try:
            sync.master_model(first_line.strip().split(",")[0])
            self.stdout.write(first_line.strip())
            for line in sys.stdin:
                if not line.strip():
                    continue
                pks = diff.missing_on_master(first_line, line)
                if pks:
                    self.stdout.write(diff.json_line(pks))
                    self.stderr.write(f"PK to delete: {pks}")
        except sync.BadOption as exc:
            raise CommandError(str(exc)) from None
