"""``manage.py cqrs_dead_letters retry|dump|purge``: this replica's dead letter queue
(``dead_letter_<CQRS_QUEUE>``, or ``CQRS_DEAD_LETTER_QUEUE``) by hand (django-cqrs's command): retry
republishes each to the replica's queue with ``retries`` at 0, dump prints each body (they stay
queued), purge empties it. Needs ``AMQP_URL`` and ``CQRS_QUEUE``."""

from __future__ import annotations

import asyncio
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from relays.cqrs_consumer import dead_letters


class Command(BaseCommand):
    help = "CQRS dead letters queue management commands"

    def add_arguments(self, parser: CommandParser) -> None:
        command = parser.add_subparsers(dest="command", required=True)
        command.add_parser("retry", help="Retry all dead letters.")
        command.add_parser("dump", help="Dumps all dead letter to stdout.")
        command.add_parser("purge", help="Removes all dead letters.")

    def handle(self, *args: Any, **options: Any) -> None:
        if not settings.AMQP_URL or not settings.CQRS_QUEUE:
            raise CommandError("Dead letters commands need AMQP_URL and CQRS_QUEUE (RabbitMQ).")
        asyncio.run(dead_letters(options["command"], self.stdout.write))
