"""``manage.py cqrs_bulk_dump -c ID [-o FILE|-] [-b N] [-p] [-f]``: a master model's rows to a file
(default ``<ID>.dump``) or stdout in django-cqrs's dump format (app/cqrs/dump.py); messages and the
progress line (on a terminal only) go to stderr."""

from __future__ import annotations

import os
import sys
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from app.cqrs import dump, sync
from app.cqrs.progress import Progress


class Command(BaseCommand):
    help = "Bulk dump of a CQRS model from master service."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--cqrs-id", "-c", type=str, required=True, help="CQRS_ID of the master model")
        parser.add_argument("--output", "-o", type=str, default=None,
                            help="Output file for dumping (- for writing to stdout)")
        parser.add_argument("--batch", "-b", type=int, default=sync.DEFAULT_BATCH, help="Batch size")
        parser.add_argument("--progress", "-p", action="store_true", help="Display progress (on a terminal)")
        parser.add_argument("--force", "-f", action="store_true", help="Override output file")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            model = sync.master_model(options["cqrs_id"])
            batch = sync.check_batch(options["batch"])
        except sync.BadOption as exc:
            raise CommandError(str(exc)) from None
        name = options["output"] or f"{options['cqrs_id']}.dump"
        if name != "-" and os.path.exists(name) and not options["force"]:
            raise CommandError(f"File {name} exists!")
        bar = Progress(self.stderr, model._default_manager.count(), batch, wanted=options["progress"])
        if name == "-":
            report = dump.dump(model, lambda text: self.stdout.write(text, ending=""), batch,
                               on_batch=lambda r: bar.advance(r.processed))
            self.stdout.flush()
        else:
            with open(name, "w", encoding="utf-8") as out:
                report = dump.dump(model, out.write, batch, on_batch=lambda r: bar.advance(r.processed))
        bar.finish()
        for pk, error in report.failures:
            self.stderr.write(f"Dump record failed for pk={pk}: {error}")
        self.stderr.write(f"Done!\n{report.saved} instance(s) saved.\n{report.processed} instance(s) processed.")
        sys.stderr.flush()
