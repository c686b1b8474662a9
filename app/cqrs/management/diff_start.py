"""The first step of django-cqrs's diff pipes (``cqrs_diff_master``, ``cqrs_deleted_diff_replica``):
one side's rows of a model, as the header line and then packages of rows (app/cqrs/diff.py)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db.models import QuerySet
from django.utils import timezone

from app.cqrs import diff, sync


class DiffStart(BaseCommand):
    side = ""  # "master" or "replica": whose model ``--cqrs-id`` names

    def model(self, cqrs_id: str) -> Any:
        raise NotImplementedError

    def packages(self, rows: QuerySet[Any], batch: int) -> Iterable[str]:
        raise NotImplementedError

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--cqrs-id", "-cid", type=str, required=True, help=f"CQRS_ID of the {self.side} model")
        parser.add_argument("--filter", "-f", type=str, default=None, help="Filter kwargs (a JSON object)")
        parser.add_argument("--batch", "-b", type=int, default=sync.DEFAULT_BATCH, help="Batch size")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            model = self.model(options["cqrs_id"])
            batch = sync.check_batch(options["batch"])
            rows = sync.filtered(model._default_manager.all(), options["filter"])
        except sync.BadOption as exc:
            raise CommandError(str(exc)) from None
        if not rows.exists():
            self.stderr.write("No objects found for filter!")
            return
        self.stdout.write(diff.header(model.CQRS_ID, timezone.now()))
        for line in self.packages(rows, batch):
            self.stdout.write(line)

