"""``manage.py cqrs_deleted_diff_replica -cid ID [-f JSON] [-b N] | manage.py cqrs_deleted_diff_master |
manage.py cqrs_deleted_sync_replica``, first step (on the replica): its pks (django-cqrs's protocol)."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from app.cqrs import diff, sync


class Command(BaseCommand):
    help = "Streaming diff of CQRS model pks from replica service to check for deleted objects."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--cqrs-id", "-cid", type=str, required=True, help="CQRS_ID of the replica model")
        parser.add_argument("--filter", "-f", type=str, default=None, help="Filter kwargs (a JSON object)")
        parser.add_argument("--batch", "-b", type=int, default=sync.DEFAULT_BATCH, help="Batch size")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            model = diff.replica_model(options["cqrs_id"])
            batch = sync.check_batch(options["batch"])
            queryset = sync.filtered(model._default_manager.all(), options["filter"])
        except sync.BadOption as exc:
            raise CommandError(str(exc)) from None
        if not queryset.exists():
            self.stderr.write("No objects found for filter!")
            return
        self.stdout.write(diff.header(model.CQRS_ID, timezone.now()))
        for pks in diff.pk_packages(queryset, batch):
            self.stdout.write(diff.json_line(pks))
