"""``manage.py outbox_relay [--tasks N]``: relay outbox events in a process of its own.

Run as many as you like beside the servers (set ``OUTBOX_RELAY_TASKS=0`` on the servers to leave
relaying to these). On PostgreSQL they share the work; on SQLite they take turns. SIGTERM or
SIGINT stops them after settling the batch in flight. Prints ``SWITCHYARD_RELAY_READY`` once
running.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser

from app.broker.runtime import stop_runtime
from relays.outbox import OutboxRelay

READY = "SWITCHYARD_RELAY_READY"


async def _relay(tasks: int, batch_size: int) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    relays = [OutboxRelay(batch_size=batch_size, name=str(index)) for index in range(tasks)]
    running = [asyncio.create_task(relay.run(), name=relay.holder) for relay in relays]
    print(READY, flush=True)
    stopping = asyncio.create_task(stop.wait())
    await asyncio.wait([stopping, *running], return_when=asyncio.FIRST_COMPLETED)
    for task in running:
        task.cancel()
    for task in running:
        with contextlib.suppress(asyncio.CancelledError):
            await task
    stopping.cancel()
    await stop_runtime()


class Command(BaseCommand):
    help = "Publish outbox events (CloudEvents) to their targets until stopped."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--tasks", type=int, default=1, help="relay tasks in this process")
        parser.add_argument("--batch-size", type=int, default=settings.OUTBOX_BATCH_SIZE)

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            import uvloop

            runner: Any = uvloop.run
        except ImportError:  # pragma: no cover - uvicorn[standard] brings it
            runner = asyncio.run
        runner(_relay(options["tasks"], options["batch_size"]))
        sys.stdout.flush()
