"""``manage.py cqrs_dead_letters retry|dump|purge``: this replica's dead letter queue
(``dead_letter_<CQRS_QUEUE>``, or ``CQRS_DEAD_LETTER_QUEUE``) by hand (django-cqrs's command): retry
republishes each to the replica's queue with ``retries`` at 0, dump prints each body (they stay
queued), purge empties it. Needs ``AMQP_URL`` and ``CQRS_QUEUE``. A replica reading a topic
(``CQRS_TOPIC``) has its dead letters on the server's dead letter topic instead."""

from __future__ import annotations

import asyncio
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from app.cqrs.topic import dead_letter_topic
from relays.cqrs_consumer import dead_letters


class Command(BaseCommand):
    help = "CQRS dead letters queue management commands"

    def add_arguments(self, parser: CommandParser) -> None:
        command = parser.add_subparsers(dest="command", required=True)
        command.add_parser("retry", help="Retry all dead letters.")
        command.add_parser("dump", help="Dumps all dead letter to stdout.")
        command.add_parser("purge", help="Removes all dead letters.")

    def handle(self, *args: Any, **options: Any) -> None:
        if settings.CQRS_SOURCE == "topic":
            topic, queue = settings.CQRS_TOPIC, settings.CQRS_QUEUE
            assert topic and queue  # a topic source has both (settings/cqrs.py)
            raise CommandError(
                f"This replica reads topic {topic}: its dead letters are on the topic "
                f"{dead_letter_topic(topic, queue)} of that server (read them with a "
                "Pulsar consumer there; cqrs_sync on the master sends the instances' current state again).")
        if not settings.AMQP_URL or not settings.CQRS_QUEUE:
            raise CommandError("Dead letters commands need AMQP_URL and CQRS_QUEUE (RabbitMQ).")
        asyncio.run(dead_letters(options["command"], self.stdout.write))
