"""``manage.py cqrs_sync -cid ID -f '{"id__in": [1, 2]}' [-q QUEUE] [-b N] [-p]``: emit a SYNC for
each matching row of a master model through the outbox (django-cqrs's command; without ``--filter``
nothing matches, as there: ``-f '{}'`` syncs every row)."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from app.cqrs import sync
from app.cqrs.progress import Progress


class Command(BaseCommand):
    help = "Filter synchronization of certain CQRS model rows over transport to replicas."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--cqrs-id", "-cid", type=str, required=True, help="CQRS_ID of the master model")
        parser.add_argument("--filter", "-f", type=str, default=None, help="Filter kwargs (a JSON object)")
        parser.add_argument("--queue", "-q", type=str, default=None, help="Name of the specific replica queue")
        parser.add_argument("--batch", "-b", type=int, default=sync.DEFAULT_BATCH, help="Batch size")
        parser.add_argument("--progress", "-p", action="store_true", help="Display progress (on a terminal)")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            model = sync.master_model(options["cqrs_id"])
            batch = sync.check_batch(options["batch"])
            queryset = model._default_manager.none()
            if options["filter"] is not None:
                queryset = sync.filtered(model._default_manager.all(), options["filter"])
        except sync.BadOption as exc:
            raise CommandError(str(exc)) from None
        self.run(queryset, options["queue"], batch, options["progress"])

    def run(self, queryset: Any, queue: str | None, batch: int, progress: bool) -> None:
        """Sync ``queryset`` and print django-cqrs's summary (cqrs_diff_sync runs this too)."""
        total = queryset.count()
        if total == 0:
            self.stdout.write("No objects found for filter!")
            return
        bar = Progress(self.stdout, total, batch, wanted=progress)
        report = sync.sync_rows(queryset, queue=queue, batch_size=batch,
                                on_batch=lambda r: bar.advance(r.processed))
        bar.finish()
        for pk, error in report.failures:
            self.stdout.write(f"Sync record failed for pk={pk}: {error}")
        self.stdout.write(f"Done!\n{report.synced} instance(s) synced.\n{report.processed} instance(s) processed.")
