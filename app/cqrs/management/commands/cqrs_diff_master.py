"""``manage.py cqrs_diff_master -cid ID [-f JSON] [-b N] | manage.py cqrs_diff_replica | manage.py
cqrs_diff_sync``, first step: the master's ``[pk, revision]`` pairs (django-cqrs's protocol,
app/cqrs/diff.py)."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from app.cqrs import diff, sync


class Command(BaseCommand):
    help = "Streaming diff of CQRS models from master service."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--cqrs-id", "-cid", type=str, required=True, help="CQRS_ID of the master model")
        parser.add_argument("--filter", "-f", type=str, default=None, help="Filter kwargs (a JSON object)")
        parser.add_argument("--batch", "-b", type=int, default=sync.DEFAULT_BATCH, help="Batch size")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            model = sync.master_model(options["cqrs_id"])
            batch = sync.check_batch(options["batch"])
            queryset = sync.filtered(model._default_manager.all(), options["filter"])
        except sync.BadOption as exc:
            raise CommandError(str(exc)) from None
        if not queryset.exists():
            self.stderr.write("No objects found for filter!")
            return
        assert model.CQRS_ID is not None
        self.stdout.write(diff.header(model.CQRS_ID, timezone.now()))
        for line in diff.master_packages(queryset, batch):
            self.stdout.write(line)
