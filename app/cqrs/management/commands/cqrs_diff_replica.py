"""``... | manage.py cqrs_diff_replica | ...``: reads cqrs_diff_master's lines on stdin, prints the
header with this replica's ``CQRS_QUEUE`` and the pks that differ here (django-cqrs's protocol)."""

from __future__ import annotations

import sys
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from app.cqrs import diff, sync


class Command(BaseCommand):
    help = "Diff of CQRS replica models from master diff stream."

    def handle(self, *args: Any, **options: Any) -> None:
        first_line = sys.stdin.readline()
        try:
            model = diff.replica_model(first_line)
            self.stdout.write(diff.replica_header(first_line, settings.CQRS_QUEUE))
            for line in sys.stdin:
                if not line.strip():
                    continue
                pks = diff.differing(model, line)
                if pks:
                    self.stdout.write(diff.json_line(pks))
                    self.stderr.write(f"PK to resync: {set(pks)}")
        except sync.BadOption as exc:
            raise CommandError(str(exc)) from None
