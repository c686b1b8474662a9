"""``manage.py cqrs_consume [--cqrs-id ID ...]``: consume this replica's CQRS queue (django-cqrs's
command name and ``-cid`` filter) in the foreground until SIGTERM or SIGINT.

Needs ``CQRS_QUEUE`` and either ``AMQP_URL`` (RabbitMQ) or ``CQRS_TOPIC`` and ``CQRS_TOPIC_URL`` (a
Switchyard topic; ``-cid`` is refused there: a subscription has no bindings to narrow). Prints
``SWITCHYARD_CQRS_READY`` once the queues are declared, bound and consumed (or the subscription is
open). Run it beside servers that leave ``CQRS_QUEUE`` unset (or set ``CQRS_CONSUME_IN_SERVER=false``),
or instead of them: one consumer per queue.

django-cqrs's other options are accepted so its command lines keep working: ``--workers/-w`` only as
1 (more consumers of one queue would apply an instance's changes out of order); ``--reload/-r`` and
the options of its reloading supervisor, ``--ignore-paths``, ``--sigint-timeout`` and
``--sigkill-timeout``, are ignored with a warning (no reloading here: restart the command).
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
from relays.cqrs_sources import replica_consumer
from settings.cqrs import topic_names_problem

READY = "SWITCHYARD_CQRS_READY"


async def _consume(queue: str, cqrs_ids: set[str]) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    consumer = replica_consumer(queue=queue, cqrs_ids=cqrs_ids, on_ready=lambda: print(READY, flush=True))
    running = asyncio.create_task(consumer.run(), name="cqrs-consumer")
    stopping = asyncio.create_task(stop.wait())
    await asyncio.wait([stopping, running], return_when=asyncio.FIRST_COMPLETED)
    running.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await running
    stopping.cancel()


class Command(BaseCommand):
    help = "Consume CQRS payloads from RabbitMQ or a Switchyard topic into this service's replica models until stopped."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--cqrs-id", "-cid", nargs="*", type=str, default=None,
                            help="consume only these CQRS_IDs (default: every replica model)")
        parser.add_argument("--queue", default=None,
                            help="the replica's queue, or topic subscription (default: CQRS_QUEUE)")
        parser.add_argument("--workers", "-w", type=int, default=1,
                            help="django-cqrs's worker count: only 1 (per-instance order needs one consumer)")
        parser.add_argument("--reload", "-r", action="store_true", default=False,
                            help="django-cqrs's autoreload: not supported, ignored")
        parser.add_argument("--ignore-paths", nargs="?", type=str, default=None,
                            help="django-cqrs's autoreload option: ignored")
        parser.add_argument("--sigint-timeout", nargs="?", type=int, default=5,
                            help="django-cqrs's autoreload option: ignored")
        parser.add_argument("--sigkill-timeout", nargs="?", type=int, default=1,
                            help="django-cqrs's autoreload option: ignored")

    def handle(self, *args: Any, **options: Any) -> None:
        if options["workers"] != 1:
            raise CommandError(
                "--workers must be 1: several consumers of one queue would apply an instance's changes out of order")
        ignored = [name for name, given in (("--reload", options["reload"]),
                                            ("--ignore-paths", options["ignore_paths"] is not None),
                                            ("--sigint-timeout", options["sigint_timeout"] != 5),
                                            ("--sigkill-timeout", options["sigkill_timeout"] != 1)) if given]
        if ignored:
            self.stderr.write(f"warning: {', '.join(ignored)} not supported (no autoreload), ignored")
        queue = options["queue"] or settings.CQRS_QUEUE
        if not queue:
            raise CommandError("set CQRS_QUEUE (or --queue): the replica's queue (or topic subscription) name")
        cqrs_ids = {cqrs_id for value in options["cqrs_id"] or () for cqrs_id in value.split(",") if cqrs_id}
        if settings.CQRS_SOURCE == "topic":
            if cqrs_ids:
                raise CommandError("--cqrs-id narrows RabbitMQ bindings; a topic subscription (CQRS_TOPIC) has "
                                   "none: leave it out")
            if options["queue"]:  # CQRS_QUEUE was checked at startup
                problem = topic_names_problem(settings.CQRS_TOPIC or "", queue, names=("CQRS_TOPIC", "--queue"))
                if problem is not None:
                    raise CommandError(problem)
        elif settings.CQRS_SOURCE is None:
            raise CommandError("set AMQP_URL (the RabbitMQ the master publishes to), or CQRS_TOPIC and "
                               "CQRS_TOPIC_URL (a Switchyard topic)")
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
