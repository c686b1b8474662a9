"""The master application of benchmarks/cqrs.py: writes the changes through the ORM, as a user's code does.

Run by the master's own Python in its own project (Switchyard's ``.venv`` with ``settings``, or
django-cqrs's ``.venv-djcqrs`` with ``djcqrs_settings``), so it imports Django only:

    python benchmarks/cqrs_writer.py APP_LABEL.MODEL ROWS BATCH RATE WARMUP_ROWS

Each row is created (revision 0) and then updated (revision 1): 2 x ROWS changes, BATCH changes per
transaction, as fast as it can (RATE 0) or at RATE changes per second. WARMUP_ROWS rows are written
first the same way (connections open, code paths warm); then it prints ``WARM <highest warm-up pk>``
and waits for a line on stdin before the measured writes, so that the replica can be seen to hold
the warm-up first. Finally one JSON line: ``started`` (wall clock before the first measured write),
``changes`` ([pk, revision, commit time] each, a change's commit time being the end of its
transaction and of its on-commit hooks, where django-cqrs publishes) and ``cpu_s`` (this process's
CPU over the measured writes).
"""

from __future__ import annotations

import json
import resource
import sys
import time
from typing import Any


def cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def write(model: Any, rows: int, batch: int, tag: str, per_s: float = 0.0) -> list[list[float]]:
    """Create ``rows`` rows, then update each once; ``batch`` changes per transaction, paced to
    ``per_s`` changes per second when it is not 0."""
    from django.db import transaction

    changes: list[list[float]] = []
    created: list[Any] = []
    began = time.monotonic()

    def committed(chunk: list[Any], revision: int) -> None:
        changes.extend([row.pk, revision, time.time()] for row in chunk)
        if per_s and (delay := began + len(changes) / per_s - time.monotonic()) > 0:
            time.sleep(delay)

    for start in range(0, rows, batch):
        with transaction.atomic():
            chunk = [model.objects.create(name=f"{tag}{n} v0") for n in range(start, min(rows, start + batch))]
        committed(chunk, 0)
        created.extend(chunk)
    for start in range(0, rows, batch):
        chunk = created[start:start + batch]
        with transaction.atomic():
            for row in chunk:
                row.name = row.name.replace(" v0", " v1")
                row.save()
        committed(chunk, 1)
    return changes


def main() -> None:
    import django

    label, per_s = sys.argv[1], float(sys.argv[4])
    rows, batch, warmup = int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[5])
    django.setup()
    from django.apps import apps

    model = apps.get_model(label)
    warm = write(model, warmup, 1, "warm")
    print("WARM", max((int(pk) for pk, _, _ in warm), default=0), flush=True)
    if not sys.stdin.readline():
        return  # the benchmark went away
    cpu, started = cpu_s(), time.time()
    changes = write(model, rows, batch, "row", per_s)
    print(json.dumps({"started": started, "changes": changes, "cpu_s": round(cpu_s() - cpu, 3)}), flush=True)


if __name__ == "__main__":
    main()
