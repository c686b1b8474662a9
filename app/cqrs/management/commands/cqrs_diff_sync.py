"""``... | manage.py cqrs_diff_sync [-b N] [-p]``: reads cqrs_diff_replica's lines on stdin and emits a
SYNC for each pk through the outbox, to the replica's queue alone when the header names one."""

from __future__ import annotations

import sys
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from app.cqrs import diff, sync
from app.cqrs.management.commands.cqrs_sync import Command as SyncCommand


class Command(BaseCommand):
    help = "Diff synchronizer from CQRS replica stream."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--batch", "-b", type=int, default=sync.DEFAULT_BATCH, help="Batch size")
        parser.add_argument("--progress", "-p", action="store_true", help="Display progress (on a terminal)")

    def handle(self, *args: Any, **options: Any) -> None:
        runner = SyncCommand()
        runner.stdout, runner.stderr = self.stdout, self.stderr
        try:
            batch = sync.check_batch(options["batch"])
            model, queue = diff.sync_target(sys.stdin.readline())
            for line in sys.stdin:
                if not line.strip():
                    continue
                queryset = model._default_manager.filter(pk__in=diff.pk_list(line))
                runner.run(queryset, queue, batch, options["progress"])
        except sync.BadOption as exc:
            raise CommandError(str(exc)) from None
