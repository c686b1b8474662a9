"""``manage.py cqrs_bulk_load -i FILE|- [-c true] [-b N]``: load a ``cqrs_bulk_dump`` into this
service's replica model (app/cqrs/dump.py); messages go to stderr."""

from __future__ import annotations

import io
import os
import sys
from typing import IO, Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from app.cqrs import dump, sync

TRUE = {"1", "true", "yes", "on", "y", "t"}
FALSE = {"", "0", "false", "no", "off", "n", "f"}


def flag(text: str) -> bool:
    """``--clear``'s value. django-cqrs declares it ``type=bool``, so any text but "" clears; here
    the word is read, and a word that is neither is refused."""
    lowered = text.strip().lower()
    if lowered in TRUE | FALSE:
        return lowered in TRUE
    raise ValueError(text)


flag.__name__ = "boolean"  # argparse names the type in its error


class Command(BaseCommand):
    help = "Bulk load of a CQRS model to a replica service."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--input", "-i", type=str, required=True,
                            help="Input file for loading (- for reading from stdin)")
        parser.add_argument("--clear", "-c", type=flag, default=False, help="Delete existing models (true/false)")
        parser.add_argument("--batch", "-b", type=int, default=sync.DEFAULT_BATCH, help="Batch size")

    def handle(self, *args: Any, **options: Any) -> None:
        name = options["input"]
        if name != "-" and not os.path.exists(name):
            raise CommandError(f"File {name} doesn't exist!")
        try:
            batch = sync.check_batch(options["batch"])
        except sync.BadOption as exc:
            raise CommandError(str(exc)) from None
        # Bytes that are no UTF-8 make their line unparseable (app/cqrs/dump.py), not the load fail.
        if name == "-":
            if isinstance(sys.stdin, io.TextIOWrapper):
                sys.stdin.reconfigure(errors="surrogateescape")
            self._load(sys.stdin, name, batch, options["clear"])
        else:
            with open(name, encoding="utf-8", errors="surrogateescape") as source:
                self._load(source, name, batch, options["clear"])

    def _load(self, source: IO[str], name: str, batch: int, clear: bool) -> None:
        try:
            model = dump.replica_model_for(source.readline(), name)
            if clear:
                dump.clear(model)
        except sync.BadOption as exc:
            raise CommandError(str(exc)) from None
        report = dump.load(model, source, batch)
        for error in report.errors:
            self.stderr.write(error)
        self.stderr.write(f"Done!\n{report.loaded} instance(s) loaded.")
