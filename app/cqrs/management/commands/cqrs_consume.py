"""``manage.py cqrs_consume [--cqrs-id ID ...]``: consume this replica's CQRS queue (django-cqrs's
command name and ``-cid`` filter) in the foreground until SIGTERM or SIGINT.

Needs ``AMQP_URL`` and ``CQRS_QUEUE``. Prints ``SWITCHYARD_CQRS_READY`` once the queues are declared,
bound and consumed. Run it beside servers that leave ``CQRS_QUEUE`` unset, or instead of them.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from app.cqrs.replica import ReplicaRegistry
from relays.cqrs_consumer import CqrsConsumer

READY = "SWITCHYARD_CQRS_READY"


async def _consume(queue: str, cqrs_ids: set[str]) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    consumer = CqrsConsumer(queue=queue, cqrs_ids=cqrs_ids, on_ready=lambda: print(READY, flush=True))
    running = asyncio.create_task(consumer.run(), name="cqrs-consumer")
    stopping = asyncio.create_task(stop.wait())
    await asyncio.wait([stopping, running], return_when=asyncio.FIRST_COMPLETED)
    running.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await running
    stopping.cancel()


class Command(BaseCommand):
    help = "Consume CQRS payloads from RabbitMQ into this service's replica models until stopped."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--cqrs-id", "-cid", nargs="*", type=str, default=None,
                            help="consume only these CQRS_IDs (default: every replica model)")
        parser.add_argument("--queue", default=None, help="the replica's queue (default: CQRS_QUEUE)")

    def handle(self, *args: Any, **options: Any) -> None:
        queue = options["queue"] or settings.CQRS_QUEUE
        if not queue:
            raise CommandError("set CQRS_QUEUE (or --queue): the replica's queue name")
        if not settings.AMQP_URL:
            raise CommandError("set AMQP_URL: the RabbitMQ the master publishes to")
        cqrs_ids = {cqrs_id for value in options["cqrs_id"] or () for cqrs_id in value.split(",") if cqrs_id}
        unknown = cqrs_ids - set(ReplicaRegistry.models)
        if unknown:
            raise CommandError(f"wrong CQRS ID: {', '.join(sorted(unknown))}")
        if not ReplicaRegistry.models:
            raise CommandError("no replica models (ReplicaMixin with a CQRS_ID) are installed")
        try:
            import uvloop

            runner: Any = uvloop.run
        except ImportError:  # pragma: no cover - uvicorn[standard] brings it
            runner = asyncio.run
        runner(_consume(queue, cqrs_ids))
        sys.stdout.flush()
