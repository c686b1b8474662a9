"""``manage.py createworker <name> [--concurrency N] [--metadata JSON]``: register a worker and print
its token's key on stdout, alone (``KEY=$(manage.py createworker builder-1)``), what was done on
stderr. The key is shown only this once (only its sha256 is stored)."""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from app.work.workers import register_worker


class Command(BaseCommand):
    help = "Register a worker (with a token of its own) and print the token's key (shown only this once)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name")
        parser.add_argument("--concurrency", type=int, default=1, help="work requests it may run at once")
        parser.add_argument("--metadata", default="{}",
                            help='static metadata as a JSON object, e.g. \'{"arch": "amd64"}\' (wins over '
                                 "what the worker reports)")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            metadata = json.loads(options["metadata"])
        except ValueError as exc:
            raise CommandError(f"--metadata is not JSON: {exc}") from exc
        if not isinstance(metadata, dict):
            raise CommandError("--metadata must be a JSON object")
        try:
            worker, key = register_worker(options["name"], concurrency=options["concurrency"],
                                          static_metadata=metadata)
        except ValueError as exc:  # WorkerNameTaken, a bad name or concurrency
            raise CommandError(str(exc)) from exc
        self.stdout.write(key)
        self.stderr.write(f"registered worker {worker.name} (concurrency {worker.concurrency}); its token's key "
                          "is printed only this once (only its sha256 is stored)")
