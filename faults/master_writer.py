"""A CQRS master application for faults/outbox_rows.py: changes to tests/apps/cqrs_master authors, one
per transaction, at a steady rate until SIGTERM, each printed once committed.

    python -m faults.master_writer RATE

Run with DJANGO_SETTINGS_MODULE=settings and SWITCHYARD_APPS naming tests.apps.cqrs_master (the
master's outbox rows are what the relay publishes). It prints ``MASTER_WRITER_READY`` and waits for
SIGUSR1 (the replica's queue is bound by then: nothing is published unroutable), then one
``CHANGE <op> <pk> <revision>`` line per committed change (op: create, update, delete; a delete's
revision is the last one the row had): the harness counts a change as committed only once it has
read its line, so a change SIGTERM interrupts before its line is not counted (nor lost).
"""

from __future__ import annotations

import signal
import sys
import threading
import time
from typing import Any

READY = "MASTER_WRITER_READY"
CHANGE = "CHANGE"
# Authors kept alive at once: updates go round them, and every DELETE_EVERY-th change deletes the
# oldest (a delete replicated through the outage too), a create replacing it.
LIVE = 8
DELETE_EVERY = 10


def change(model: Any, live: list[Any], n: int) -> tuple[str, int, int]:
    """The ``n``-th change, in a transaction of its own: (op, pk, revision)."""
    from django.db import transaction

    with transaction.atomic():
        if n % DELETE_EVERY == DELETE_EVERY - 1 and len(live) >= LIVE:
            gone = live.pop(0)
            pk, revision = gone.pk, gone.cqrs_revision
            gone.delete()
            return "delete", pk, revision
        if len(live) < LIVE:
            author = model.objects.create(name=f"fault-{n}")
            live.append(author)
            return "create", author.pk, author.cqrs_revision
        author = live[n % len(live)]
        author.name = f"fault-{n}"
        author.save()
        return "update", author.pk, author.cqrs_revision


def main() -> None:
    import django

    rate = float(sys.argv[1])
    # Blocked before anything starts a thread: until go, both wait in sigwait.
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1, signal.SIGTERM})
    django.setup()
    from tests.apps.cqrs_master.models import Author

    stop = threading.Event()
    print(READY, flush=True)
    if signal.sigwait({signal.SIGUSR1, signal.SIGTERM}) == signal.SIGTERM:
        return
    # The change in progress commits and is printed before the process ends: SIGTERM only stops the loop.
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})
    live: list[Any] = []
    began = time.monotonic()
    n = 0
    while not stop.is_set():
        op, pk, revision = change(Author, live, n)
        print(CHANGE, op, pk, revision, flush=True)
        n += 1
        stop.wait(max(0.0, began + n / rate - time.monotonic()))


if __name__ == "__main__":
    main()
